"""The settings every tile job shares: which extractor, where stores go, how to run it.

One frozen value, :class:`Settings`, is what the CLI builds from its options, what the
panel builds from its fields, what a project file saves and what the extraction child
receives, so that the same choices always mean the same embeddings in the same folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from napari_dfl.core.backbones.registry import DEFAULT_BACKBONE
from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.extractor import Extractor
from napari_dfl.core.slides.sampling import TISSUE_COMPOSITION, Composition
from napari_dfl.core.util.paths import default_store_dir

__all__ = ["PRECISIONS", "Settings", "SettingsError"]

#: Precisions a backbone may run in; ``auto`` picks per device.
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


class SettingsError(DFLError):
    """A setting is out of its valid range; the message names the range."""


@dataclass(frozen=True)
class Settings:
    """Everything a tile job needs besides the slide and the labels.

    Attributes:
        backbone: a preset, a timm name, a fine-tuned folder or ``finetuned:<name>``.
        weights: a weights file or source for the backbone (None: the preset's own).
        composition: patch size, zooms, colour variants and context of a sample (default:
            the tissue default, :data:`~napari_dfl.core.slides.sampling.TISSUE_COMPOSITION`).
        store_dir: folder of the embedding stores; None is the default folder (the user
            cache, :func:`napari_dfl.core.util.paths.default_store_dir`), never the slide's.
        min_tissue: tissue share a tile needs to be predicted or embedded whole-slide.
        batch_size: samples per forward batch.
        readers: threads cutting patches ahead of the model (None: as many as the
            machine's cores suit, :func:`napari_dfl.core.features.engine.default_readers`).
        device: ``cpu``, ``cuda``, ``mps`` or None for the best available.
        precision: one of :data:`PRECISIONS`.
        torch_threads: cap on torch's threads (None: torch's default).
        mpp: level-0 µm/px for slides whose file records none.

    """

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    composition: Composition = TISSUE_COMPOSITION
    store_dir: str | None = None
    min_tissue: float = 0.5
    batch_size: int = 8
    readers: int | None = None
    device: str | None = None
    precision: str = "auto"
    torch_threads: int | None = None
    mpp: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if not self.backbone:
            problems.append("a backbone name is needed")
        if not (isinstance(self.min_tissue, (int, float)) and 0.0 <= self.min_tissue <= 1.0):
            problems.append(f"min tissue must be a share between 0 and 1, got {self.min_tissue}")
        if not (isinstance(self.batch_size, int) and 1 <= self.batch_size <= 4096):
            problems.append(f"batch size must be an integer from 1 to 4096, got "
                            f"{self.batch_size}")
        if self.readers is not None and not (isinstance(self.readers, int)
                                             and 1 <= self.readers <= 64):
            problems.append(f"readers must be an integer from 1 to 64, got {self.readers}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}, got "
                            f"{self.precision!r}")
        if self.torch_threads is not None and not (isinstance(self.torch_threads, int)
                                                   and self.torch_threads >= 1):
            problems.append(f"torch threads must be a positive integer, got "
                            f"{self.torch_threads}")
        if self.mpp is not None and not (isinstance(self.mpp, (int, float))
                                         and math.isfinite(self.mpp) and 0 < self.mpp <= 100):
            problems.append(f"µm/px must be a positive number (0.25 at x40, 0.5 at x20), got "
                            f"{self.mpp}")
        if self.store_dir is not None and not str(self.store_dir).strip():
            problems.append("the store folder is empty: give a folder, or leave it out for "
                            "the default")
        if problems:
            raise SettingsError("; ".join(problems) + ".")

    @property
    def stores(self) -> Path:
        """The folder of the embedding stores (the chosen one, else the default)."""
        return Path(self.store_dir).expanduser() if self.store_dir else default_store_dir()

    def chosen_extractor(self) -> Extractor:
        """The extractor these settings choose, known by its backbone's name."""
        return Extractor.chosen(self.backbone, self.composition)

    def with_(self, **changes) -> Settings:
        """A copy with some settings changed (validated again)."""
        return replace(self, **changes)

    def store_key(self) -> tuple:
        """What decides the store (extractor choice and folder), for caches keyed on it."""
        return (self.backbone, self.weights, self.composition, str(self.stores.resolve()))

    def to_dict(self) -> dict[str, Any]:
        """JSON values (a project file's ``settings``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["composition"] = self.composition.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Any) -> tuple[Settings, list[str]]:
        """Settings from JSON values, and one sentence per value that could not be used.

        Unknown keys and bad values are skipped (the default is kept) and reported, so that
        a hand-edited or older file still opens.
        """
        problems: list[str] = []
        if not isinstance(data, dict):
            return cls(), ["the settings are not a JSON object: defaults are used"]
        values: dict[str, Any] = {}
        defaults = cls()
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name == "composition":
                try:
                    value = Composition.from_dict(value)
                except (DFLError, KeyError, TypeError, ValueError) as exc:
                    problems.append(f"the composition {value!r} is invalid ({exc}): the "
                                    "default is used")
                    continue
            try:
                replace(defaults, **{f.name: value})
            except (DFLError, TypeError) as exc:
                problems.append(f"{f.name} {value!r} is invalid ({exc}): the default is used")
                continue
            values[f.name] = value
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            problems.append(f"unknown settings {', '.join(unknown)} were ignored")
        return cls(**values), problems
