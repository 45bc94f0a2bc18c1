"""Sample composition: which patches make up one sample, and cutting them from a slide.

A sample is anchored on a level-0 point. Each part shows a field of view of ``patch_size``
pixels at its zoom (um/px), centred on that point (the later zooms' parts: see
:data:`CONTEXTS`), so the x5 part (2.0 um/px) shows four times the field of the x20 part
(0.5 um/px). The field of view is apart from the network's
input: every part is read at ``input_size`` pixels, i.e. at ``field / input_size`` um/px, with
antialiasing, on the reading threads. A 64 px x20 part (32 um, a nucleus) read at 224 px is
upsampled 3.5 times; a 64 px x5 part (128 um of context) read at 224 px is taken from the x20
level, with the detail the network can use, instead of being upsampled from 64 x5 pixels.
``input_size`` None means the backbone's own input size: :class:`Extractor` resolves it when
the backbone is known. Each zoom is taken in every colour variant (``rgb``; ``gray``: luma
replicated to three channels; ``stain``, optional: the slide's stain mapped onto a reference
H&E stain by Macenko's method, estimated once per slide, :mod:`.stain`). The embedding of a
sample is the concatenation of the backbone's embedding of every part, in the order of
:meth:`Composition.parts`: zoom-major, then variant (default: x20 rgb, x20 gray, x5 rgb,
x5 gray).

Stores, heads and projects written before the input size existed read it back as
``patch_size`` (the part read at its own pixels, resized inside the backbone): their old
meaning, and the identities (and store names) of compositions whose input equals their patch
size are unchanged.

Stores and annotations identify a sample by the level-0 top-left corner of its *first* zoom's
patch (the CLAM/TRIDENT ``coords`` convention); :meth:`Composition.anchor_extent` gives that
patch's level-0 side so that centres and corners convert exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from napari_dfl.core.errors import DFLError
from napari_dfl.core.slides.stain import StainEstimate, normalise_stain, slide_stain
from napari_dfl.core.slides.tiff import Slide

#: Colour variants: ``stain`` is optional (never in a default composition).
VARIANTS = ("rgb", "gray", "stain")
#: Where a context part (every zoom after the first) is centred: on its own sample
#: (``"centred"``); on the cell of its own field-of-view grid that the sample's centre lies
#: in (``"shared"``: the 16 x20 tiles of one x5 cell share one x5 patch, computed once); or
#: on the middle of the sample's block of 3 x 3 first-zoom fields (``"nearest"``: the 9 x20
#: tiles of a block share one x5 patch centred on the middle one, none more than a tile off).
CONTEXTS = ("centred", "shared", "nearest")
#: Side, in first-zoom fields, of the blocks whose tiles share a ``"nearest"`` context.
NEAREST_BLOCK = 3
#: How :meth:`Composition.describe` names a context that is not centred.
_CONTEXT_TEXT = {"shared": "context shared per tile of its own grid",
                 "nearest": f"nearest context window (one per {NEAREST_BLOCK} x "
                            f"{NEAREST_BLOCK} tiles)"}
#: Range of a patch's side in pixels (at its zoom).
MIN_PATCH, MAX_PATCH = 16, 4096
# ITU-R BT.601 luma weights.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class CompositionError(DFLError):
    """A composition is invalid, or does not match what a store or head expects."""


def _magnification_name(mpp: float) -> str:
    power = 10.0 / mpp
    return f"x{power:g}" if abs(power - round(power)) < 1e-6 else f"{mpp:g}um/px"


@dataclass(frozen=True)
class Composition:
    """What one sample is made of.

    Attributes:
        patch_size: side of every part's field of view, in pixels at its zoom (a part shows
            ``patch_size * zoom`` um).
        zooms: pixel sizes in um/px; the first is the working magnification.
        variants: colour variants, among ``"rgb"``, ``"gray"`` and ``"stain"``.
        input_size: side in pixels at which every part is read and enters the network;
            None: the backbone's own input size, resolved by :meth:`for_input` once the
            backbone is known (an unresolved composition is read at ``patch_size``).
        context: where the parts of the later zooms are centred, one of :data:`CONTEXTS`
            (a single zoom has none: its context is always ``"centred"``).

    """

    patch_size: int = 224
    zooms: tuple[float, ...] = (0.5, 2.0)
    variants: tuple[str, ...] = ("rgb", "gray")
    input_size: int | None = None
    context: str = "centred"

    def __post_init__(self) -> None:
        object.__setattr__(self, "zooms", tuple(float(z) for z in self.zooms))
        object.__setattr__(self, "variants", tuple(str(v) for v in self.variants))
        if not MIN_PATCH <= self.patch_size <= MAX_PATCH:
            raise CompositionError(f"patch size must be {MIN_PATCH} to {MAX_PATCH} px, got "
                                   f"{self.patch_size}.")
        if not self.zooms or any(not (z > 0 and math.isfinite(z)) for z in self.zooms):
            raise CompositionError(
                f"zooms must be positive um/px values such as 0.5,2.0; got {self.zooms}."
            )
        unknown = [v for v in self.variants if v not in VARIANTS]
        if not self.variants or unknown:
            raise CompositionError(
                f"unknown colour variant(s) {unknown or '(none given)'}; choose among "
                f"{', '.join(VARIANTS)}."
            )
        if self.input_size is not None and not (
                isinstance(self.input_size, int) and not isinstance(self.input_size, bool)
                and MIN_PATCH <= self.input_size <= MAX_PATCH):
            raise CompositionError(f"the network input size must be {MIN_PATCH} to {MAX_PATCH} "
                                   f"px (or left to the backbone), got {self.input_size!r}.")
        if self.context not in CONTEXTS:
            raise CompositionError(f"context must be one of {', '.join(CONTEXTS)}, got "
                                   f"{self.context!r}.")
        if len(self.zooms) == 1:  # no context part: one meaning, one identity
            object.__setattr__(self, "context", "centred")
        if len(set(self.zooms)) != len(self.zooms) or len(set(self.variants)) != len(
            self.variants
        ):
            raise CompositionError("zooms and variants must not repeat.")

    @property
    def n_parts(self) -> int:
        """Number of patches per sample."""
        return len(self.zooms) * len(self.variants)

    def parts(self) -> list[tuple[float, str]]:
        """``(zoom, variant)`` of each part, in embedding order."""
        return [(zoom, variant) for zoom in self.zooms for variant in self.variants]

    @property
    def read_size(self) -> int:
        """Pixels per side at which every part is read (the input size, else the patch size)."""
        return self.patch_size if self.input_size is None else self.input_size

    @property
    def reads_apart(self) -> bool:
        """Whether parts are read at a size of their own (not at their patch size)."""
        return self.input_size is not None and self.input_size != self.patch_size

    def read_mpp(self, zoom: float) -> float:
        """µm/px at which the part at ``zoom`` is read: its field over :attr:`read_size`."""
        return zoom * self.patch_size / self.read_size

    def for_input(self, size: int | None) -> Composition:
        """This composition with an unresolved input size set to ``size`` (the backbone's).

        A composition whose input size is already set is returned as it is.
        """
        if self.input_size is not None or size is None:
            return self
        return replace(self, input_size=int(size))

    def describe(self) -> str:
        """A short description, e.g. ``224 px: x20 rgb | x20 gray | x5 rgb`` (+ the input)."""
        names = [f"{_magnification_name(z)} {v}" for z, v in self.parts()]
        text = f"{self.patch_size} px: " + " | ".join(names)
        if self.reads_apart:
            text += f", read at {self.input_size} px"
        if self.shares_context:
            text += f", {_CONTEXT_TEXT[self.context]}"
        return text

    @property
    def shares_context(self) -> bool:
        """Whether context parts are shared by neighbouring samples (not centred on each)."""
        return self.context != "centred" and len(self.zooms) > 1

    def part_centres(self, centres: np.ndarray, zoom_index: int, slide_mpp: float) -> np.ndarray:
        """Level-0 centres at which the parts of ``zooms[zoom_index]`` are read.

        The first zoom, and every zoom of a centred composition, is read on the samples'
        own centres. A shared context is read on the centre of the cell of a grid of its own
        field (from the slide's origin) that holds the sample's centre, so every sample of a
        cell gets the same patch; a nearest context on the centre of the sample's block of
        3 x 3 first-zoom fields (from the slide's origin, as the tile grid), so every tile of
        a block gets the patch centred on its middle tile.
        """
        centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
        if zoom_index == 0 or not self.shares_context:
            return centres
        if self.context == "nearest":  # blocks of first-zoom fields
            step = NEAREST_BLOCK * self.patch_size * self.zooms[0] / slide_mpp
        else:  # cells of the context's own field
            step = self.patch_size * self.zooms[zoom_index] / slide_mpp
        return (np.floor(centres / step) + 0.5) * step

    def fields_um(self) -> tuple[float, ...]:
        """Side of each zoom's field of view in µm (``patch_size * zoom``)."""
        return tuple(self.patch_size * z for z in self.zooms)

    def anchor_extent(self, slide_mpp: float) -> float:
        """Level-0 side of the first zoom's patch."""
        return self.patch_size * self.zooms[0] / slide_mpp

    def to_dict(self) -> dict:
        """JSON-serialisable form (used in store and head identities).

        ``input_size`` is left out when it equals ``patch_size``, the meaning of files that
        predate it, so such identities (and the store names hashed from them) do not change;
        an unresolved input size is written as null.
        """
        data = asdict(self)
        data["zooms"], data["variants"] = list(self.zooms), list(self.variants)
        if self.input_size == self.patch_size:
            del data["input_size"]
        if self.context == "centred":  # the meaning of every file written before it existed
            del data["context"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Composition:
        """Inverse of :meth:`to_dict`; without ``input_size``, parts are read at patch size."""
        patch = int(data["patch_size"])
        size = data.get("input_size", patch)
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, float))
                                 or size != int(size)):
            raise CompositionError(f"the input size must be a whole number of pixels, got "
                                   f"{size!r}.")
        return cls(patch, tuple(data["zooms"]), tuple(data["variants"]),
                   None if size is None else int(size), str(data.get("context", "centred")))


#: Field of view of the default composition for point annotations (cells): 32 px at x20 is
#: 16 µm, the nucleus itself, with 64 µm of x5 context (its neighbourhood). The best of the
#: fields measured on CRC nuclei by benchmarks/fields_of_view.py (docs/embedding.md).
POINT_PATCH = 32
#: The default composition for cells: a :data:`POINT_PATCH` field, its context centred on the
#: cell (sharing it per x5 cell cost -0.007 ± 0.004 of balanced accuracy on 3,200 CRC nuclei).
POINT_COMPOSITION = Composition(POINT_PATCH)
#: The default composition for tissue (regions, tiles, whole slides): 224 px at x20 and x5,
#: RGB and gray, the x5 context of each 3 x 3 block of x20 tiles centred on its middle tile
#: and embedded once: a whole slide in 2.0x the time of x20 RGB alone against 3.3x for a
#: context centred on every tile, its accuracy cost within the noise of the data at hand
#: (docs/embedding.md, "Context: centred, nearest, shared").
TISSUE_COMPOSITION = Composition(context="nearest")


def default_composition(kinds: set[str] | frozenset[str]) -> Composition:
    """The default composition for annotations of these kinds (``"point"``, ``"region"``...).

    Points alone (cells) get :data:`POINT_COMPOSITION`; folders of tile images alone
    (``"tile"``) the tissue default with a centred context (each image is a sample of its
    own: nothing to share, and a block's middle would put the image off-centre in its
    padding); anything else (regions on slides, a mix) :data:`TISSUE_COMPOSITION`.
    """
    kinds = set(kinds)
    if kinds == {"point"}:
        return POINT_COMPOSITION
    if kinds == {"tile"}:
        return replace(TISSUE_COMPOSITION, context="centred")
    return TISSUE_COMPOSITION


def parse_zooms(text: str) -> tuple[float, ...]:
    """Zooms written by a user, ``"0.5, 2"`` (commas or semicolons), as µm/px values.

    Raises:
        CompositionError: a part is not a positive number, or nothing is given.

    """
    parts = [part.strip() for part in str(text).replace(";", ",").split(",") if part.strip()]
    try:
        zooms = tuple(float(part) for part in parts)
    except ValueError:
        zooms = ()
    if not zooms or any(not (z > 0 and math.isfinite(z)) for z in zooms):
        raise CompositionError(f"zooms must be positive numbers of µm/px separated by commas, "
                               f"such as 0.5, 2.0 (x20 and x5); got {text!r}.")
    return zooms


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """Luma of RGB patches, replicated to three channels (same shape and dtype)."""
    luma = rgb.astype(np.float32) @ _LUMA
    return np.repeat(np.clip(luma + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def colour_variant(rgb: np.ndarray, variant: str,
                   stain: StainEstimate | None = None) -> np.ndarray:
    """One colour variant of RGB patches (same shape, uint8).

    ``stain`` is the slide's stain (:func:`~napari_dfl.core.slides.stain.slide_stain`),
    needed by the ``stain`` variant only.
    """
    if variant == "rgb":
        return rgb
    if variant == "gray":
        return to_gray(rgb)
    if variant == "stain":
        if stain is None:
            raise CompositionError("the stain variant needs the slide's stain estimate.")
        return normalise_stain(rgb, stain)
    raise CompositionError(f"unknown colour variant {variant!r}; choose among "
                           f"{', '.join(VARIANTS)}.")


def sample_patches(slide: Slide, coords: np.ndarray, composition: Composition) -> np.ndarray:
    """Cut every part of the samples anchored at ``coords``.

    Args:
        slide: the slide (must have an mpp).
        coords: ``(N, 2)`` level-0 ``(x, y)`` top-left corners of the first zoom's patches.
        composition: what each sample is made of.

    Returns:
        ``(N, n_parts, S, S, 3)`` uint8 with ``S = composition.read_size``, parts in
        embedding order, each read at its field of view over ``S`` µm/px (antialiased).
        Patches crossing the slide border are padded with white.

    """
    centres = sample_centres(slide, coords, composition)
    return np.concatenate([cut_zoom(slide, composition.part_centres(centres, k,
                                                                    slide.require_mpp()),
                                    composition, k)
                           for k in range(len(composition.zooms))], axis=1)


def sample_centres(slide: Slide, coords: np.ndarray, composition: Composition) -> np.ndarray:
    """Level-0 centres of the samples anchored at ``coords`` (float64, ``(N, 2)``)."""
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    return coords + composition.anchor_extent(slide.require_mpp()) / 2.0


def cut_zoom(slide: Slide, centres: np.ndarray, composition: Composition,
             zoom_index: int) -> np.ndarray:
    """The parts of one zoom, every variant, centred on ``centres``: ``(N, V, S, S, 3)``."""
    mpp = slide.require_mpp()
    size, zoom = composition.read_size, composition.zooms[zoom_index]
    half = composition.patch_size * zoom / mpp / 2.0
    variants = composition.variants
    stain = slide_stain(slide) if "stain" in variants else None
    out = np.empty((len(centres), len(variants), size, size, 3), dtype=np.uint8)
    for i, centre in enumerate(np.asarray(centres, dtype=np.float64).reshape(-1, 2)):
        rgb = slide.read_region((centre[0] - half, centre[1] - half), (size, size),
                                mpp=composition.read_mpp(zoom))
        for v, variant in enumerate(variants):
            out[i, v] = colour_variant(rgb, variant, stain)
    return out


def anchors_from_centres(centres: np.ndarray, composition: Composition,
                         slide_mpp: float) -> np.ndarray:
    """Level-0 anchor corners (int64) of samples centred on the given points."""
    half = composition.anchor_extent(slide_mpp) / 2.0
    return np.round(np.asarray(centres, dtype=np.float64) - half).astype(np.int64)
