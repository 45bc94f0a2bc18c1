"""The extractor: what turns a slide's patches into embeddings, as one comparable value.

An :class:`Extractor` is a backbone's identity (name, weights hash, preprocessing, embedding
size: :meth:`~napari_dfl.core.backbones.backbone.Backbone.identity`) plus a sample
:class:`~napari_dfl.core.slides.sampling.Composition`. It decides whether embeddings can be
reused: a store records the extractor that wrote it (with the slide), a head or a slide
model the extractor it was trained on, and the panel's or a project's settings name one by
its backbone and composition. :meth:`Extractor.differences` is the one comparison between
any two of them; it compares what both sides say (a backbone chosen by name only has no
weights hash yet) and names each difference in words a user can act on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from napari_dfl.core.errors import DFLError
from napari_dfl.core.slides.sampling import Composition, CompositionError

__all__ = ["KIND", "Extractor", "ExtractorError", "ExtractorMismatchError"]

#: The ``kind`` recorded with every extractor (stores, head cards, slide model cards).
KIND = "napari-dfl tile embeddings"
#: Preprocessing fields of a backbone identity, compared where both sides give them.
_PREPROCESSING = ("input_size", "mean", "std", "interpolation")


class ExtractorError(DFLError):
    """A recorded extractor (in a store, a card or settings) is missing or malformed."""


class ExtractorMismatchError(DFLError):
    """Embeddings, a head or a slide model come from different extractors.

    Attributes:
        differences: one phrase per difference, e.g. ``"backbone resnet50 (now: ...)"``.

    """

    def __init__(self, message: str, differences: list[str]) -> None:
        super().__init__(message)
        self.differences = differences


def _same(a: Any, b: Any) -> bool:
    """Equal JSON values, with numbers compared as numbers and tuples as lists."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef"
                                                           for c in value):
        return value[:12]  # a sha256
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v)
                               for v in value) + "]"
    return str(value)


@dataclass(frozen=True)
class Extractor:
    """A backbone identity and a composition (see the module docstring).

    Attributes:
        backbone: the backbone's identity as JSON values; at least ``name``. An extractor
            chosen by name only (:meth:`chosen`) has nothing else yet.
        composition: patch size, zooms and colour variants of a sample.

    """

    backbone: Mapping[str, Any]
    composition: Composition = field(default_factory=Composition)

    def __post_init__(self) -> None:
        name = self.backbone.get("name") if isinstance(self.backbone, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ExtractorError(f"an extractor's backbone needs a name, got {self.backbone!r}.")
        object.__setattr__(self, "backbone", dict(self.backbone))
        native = self.backbone.get("input_size")
        if isinstance(native, int) and not isinstance(native, bool):
            # "the backbone's own input size" becomes that size once the backbone is known
            object.__setattr__(self, "composition", self.composition.for_input(native))

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def of(cls, backbone: Any, composition: Composition) -> Extractor:
        """The extractor of a loaded backbone (anything with ``identity()``)."""
        return cls(backbone.identity(), composition)

    @classmethod
    def chosen(cls, backbone: str, composition: Composition) -> Extractor:
        """An extractor known by its backbone's name only (the panel's or CLI's choice)."""
        return cls({"name": str(backbone)}, composition)

    @classmethod
    def from_dict(cls, data: Any, what: str = "the extractor") -> Extractor:
        """Read the dict a store identity or a card records (``slide`` and ``dim`` ignored).

        The backbone may be a dict or, in older files, its name alone.

        Raises:
            ExtractorError: ``what`` names the file in the message.

        """
        if not isinstance(data, Mapping):
            raise ExtractorError(f"{what} must be a JSON object, got {type(data).__name__}.")
        backbone = data.get("backbone")
        if isinstance(backbone, str):
            backbone = {"name": backbone}
        if not isinstance(backbone, Mapping) or not isinstance(backbone.get("name"), str):
            raise ExtractorError(f"{what} does not name its backbone.")
        try:
            composition = Composition.from_dict(data.get("composition") or {})
        except (CompositionError, KeyError, TypeError, ValueError) as exc:
            raise ExtractorError(f"{what} has no valid composition ({exc}).") from None
        return cls(backbone, composition)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form recorded in stores and cards: ``kind``, ``backbone``, ``composition``."""
        return {"kind": KIND, "backbone": dict(self.backbone),
                "composition": self.composition.to_dict()}

    # -- what it is ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The backbone's name (a preset, a timm name or ``finetuned:<name>``)."""
        return str(self.backbone["name"])

    @property
    def dim(self) -> int | None:
        """Length of one sample's embedding (backbone size x parts), when the size is known."""
        size = self.backbone.get("embed_dim")
        if not isinstance(size, int) or isinstance(size, bool):
            return None
        return size * self.composition.n_parts

    def describe(self) -> str:
        """One line: ``backbone X, patch 224 px, zooms 0.5, 2 µm/px, rgb+gray``."""
        comp = self.composition
        zooms = ", ".join(f"{z:g}" for z in comp.zooms)
        read = f" read at {comp.input_size} px" if comp.reads_apart else ""
        return (f"backbone {self.name}, patch {comp.patch_size} px{read}, zooms {zooms} µm/px, "
                f"{'+'.join(comp.variants)}")

    # -- comparing -------------------------------------------------------------------------
    def differences(self, now: Extractor) -> list[str]:
        """Where ``now`` differs from this extractor, as ``"<what> <mine> (now: <now's>)"``.

        Backbone fields are compared where both sides give them; the composition always.
        """
        out = []
        mine, theirs = self.backbone, now.backbone
        for key in ("name", "weights_sha256", *_PREPROCESSING, "embed_dim"):
            if key in mine and key in theirs and not _same(mine[key], theirs[key]):
                label = {"name": "backbone", "weights_sha256": "backbone weights",
                         "embed_dim": "embedding size"}.get(key, f"preprocessing {key}")
                out.append(f"{label} {_short(mine[key])} (now: {_short(theirs[key])})")
        a, b = self.composition.to_dict(), now.composition.to_dict()
        if "input_size" in a or "input_size" in b:  # else it follows the patch size
            a.setdefault("input_size", self.composition.patch_size)
            b.setdefault("input_size", now.composition.patch_size)
        a.setdefault("context", "centred")  # left out of the files when centred
        b.setdefault("context", "centred")
        for key in dict.fromkeys([*a, *b]):
            if key == "input_size" and (a[key] is None or b[key] is None):
                continue  # the backbone's own size, not known on one side yet
            if not _same(a.get(key), b.get(key)):
                out.append(f"{key} {_short(a.get(key))} (now: {_short(b.get(key))})")
        return out

    def require_same(self, now: Extractor, subject: str, advice: str) -> None:
        """Raise :class:`ExtractorMismatchError` when ``now`` differs from this extractor.

        Args:
            now: the extractor of the embeddings (or settings) at hand.
            subject: what was made with this extractor, e.g. ``"the head"``.
            advice: what the user can do, appended to the message.

        """
        differences = self.differences(now)
        if differences:
            raise ExtractorMismatchError(
                f"{subject} was made with {', '.join(differences)}: {advice}", differences)
