"""A colouring of the explorer's tiles and its legend: categories with counts, or a colour bar.

A :class:`Colouring` holds one RGB colour per tile and what the legend shows for it:

* categorical (prediction, class, slide, cluster): one :class:`LegendEntry` per category
  present (its colour, name and number of tiles) and the category of every tile, so that a
  legend row can select its tiles (:meth:`Colouring.members`);
* continuous (confidence): the colour map, the domain it spans and the range of the values;
* false colours (the first principal components as RGB): a note only.

Nothing here imports Qt or napari.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from napari_dfl.core.errors import DFLError
from napari_dfl.core.explorer.colours import GREY, value_colors

__all__ = ["Colouring", "LegendEntry", "categorical", "continuous", "false_colours",
           "from_labels"]


@dataclass(frozen=True)
class LegendEntry:
    """One category of a categorical colouring.

    Attributes:
        name: what the legend calls it ("dermis", "cluster 3", "no class").
        rgb: its colour, RGB in [0, 1].
        count: how many tiles it holds.
        code: its value in :attr:`Colouring.codes`.

    """

    name: str
    rgb: tuple[float, float, float]
    count: int
    code: int


@dataclass(frozen=True)
class Colouring:
    """Colours of the tiles and how to read them (see the module docstring).

    Attributes:
        title: what is coloured ("prediction", "confidence", "cluster (k-means, k = 8)").
        colors: ``(N, 3)`` RGB in [0, 1], one per tile.
        entries: the categories present, in legend order (empty unless categorical).
        codes: ``(N,)`` int category of each tile (None unless categorical).
        colormap: the matplotlib colour map of a continuous colouring.
        domain: the values the colour map spans (its two ends).
        value_range: the lowest and highest value of the tiles (continuous only).
        note: a sentence for the legend.

    """

    title: str
    colors: np.ndarray
    entries: tuple[LegendEntry, ...] = ()
    codes: np.ndarray | None = None
    colormap: str | None = None
    domain: tuple[float, float] = (0.0, 1.0)
    value_range: tuple[float, float] | None = None
    note: str = ""

    def __len__(self) -> int:
        return len(self.colors)

    @property
    def categorical(self) -> bool:
        """Whether the legend lists categories."""
        return self.codes is not None

    def members(self, code: int) -> np.ndarray:
        """``(N,)`` bool: the tiles of category ``code`` (none when not categorical)."""
        if self.codes is None:
            return np.zeros(len(self), dtype=bool)
        return self.codes == int(code)

    def entry(self, name: str) -> LegendEntry | None:
        """The entry called ``name``, or None."""
        return next((e for e in self.entries if e.name == name), None)


def categorical(title: str, codes: np.ndarray, names: Sequence[str],
                rgb: np.ndarray | Sequence[Sequence[float]], note: str = "") -> Colouring:
    """A categorical colouring from the category of each tile.

    Args:
        title: what is coloured.
        codes: ``(N,)`` int in ``[0, len(names))``: the category of each tile.
        names: the categories, in legend order.
        rgb: ``(len(names), 3)`` colour of each category.
        note: a sentence for the legend.

    Categories without tiles are left out of the legend.
    """
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    table = np.asarray(rgb, dtype=np.float64).reshape(len(names), 3)
    if len(codes) and (codes.min() < 0 or codes.max() >= len(names)):
        raise DFLError(f"category codes must lie in [0, {len(names)}), got "
                       f"[{codes.min()}, {codes.max()}].")
    counts = np.bincount(codes, minlength=len(names))
    entries = tuple(LegendEntry(str(name), (float(r), float(g), float(b)), int(count), code)
                    for code, (name, (r, g, b), count) in enumerate(zip(names, table, counts,
                                                                        strict=True))
                    if count)
    return Colouring(title, table[codes] if len(codes) else np.zeros((0, 3)), entries, codes,
                     note=note)


def from_labels(title: str, labels: Sequence[str | None],
                palette: Mapping[str, Sequence[float]], missing: str = "none",
                note: str = "") -> Colouring:
    """A categorical colouring from a label per tile (``""`` or None: ``missing``, grey).

    The legend lists the palette's names in its order, then labels outside the palette
    (grey, by name), then the tiles without a label.
    """
    labels = np.asarray(["" if label is None else str(label) for label in labels], dtype=object)
    present = set(np.unique(labels).tolist()) if len(labels) else set()
    names = [name for name in palette if name in present]
    names += sorted(present - set(names) - {""})
    if "" in present:
        names.append("")
    index = {name: i for i, name in enumerate(names)}
    codes = np.fromiter((index[label] for label in labels.tolist()), dtype=np.int64,
                        count=len(labels))
    rgb = [np.asarray(palette[name], dtype=np.float64)[:3] if name in palette else GREY
           for name in names]
    shown = [name or missing for name in names]
    return categorical(title, codes, shown, np.reshape(rgb, (len(names), 3)), note)


def continuous(title: str, values: np.ndarray, colormap: str = "viridis",
               domain: tuple[float, float] = (0.0, 1.0), note: str = "") -> Colouring:
    """A continuous colouring: ``values`` in ``domain`` through ``colormap`` (NaN: grey)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    lo, hi = float(domain[0]), float(domain[1])
    scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    finite = values[np.isfinite(values)]
    value_range = (float(finite.min()), float(finite.max())) if len(finite) else None
    return Colouring(title, value_colors(scaled, colormap), colormap=colormap,
                     domain=(lo, hi), value_range=value_range, note=note)


def false_colours(title: str, rgb: np.ndarray, note: str = "") -> Colouring:
    """A colouring given directly as ``(N, 3)`` RGB (uint8 0-255 or floats in [0, 1])."""
    rgb = np.asarray(rgb)
    colors = rgb / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float64)
    return Colouring(title, colors.reshape(-1, 3), note=note)
