"""Colours of tiles in the explorer: by label, by slide, by value (RGB floats in [0, 1])."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["GREY", "label_colors", "qualitative", "slide_colors", "value_colors"]

#: Colour of tiles without a class, prediction or confidence.
GREY = (0.55, 0.55, 0.55)


def label_colors(labels: Sequence[str], palette: Mapping[str, Sequence[float]]) -> np.ndarray:
    """``(N, 3)`` RGB in [0, 1] per label from ``palette`` (grey for unknown or empty)."""
    labels = np.asarray(labels, dtype=object)
    out = np.tile(np.asarray(GREY), (len(labels), 1))
    for name, rgb in palette.items():
        out[labels == name] = np.asarray(rgb, dtype=np.float64)[:3]
    return out


def qualitative(n: int) -> np.ndarray:
    """``(n, 3)`` RGB in [0, 1]: distinct colours for ``n`` categories.

    tab10 up to 10, tab20 up to 20, then evenly spaced hues of ``turbo`` (never repeated).
    """
    from matplotlib import colormaps

    n = int(n)
    if n <= 20:
        table = colormaps["tab10" if n <= 10 else "tab20"]
        return np.asarray(table(np.arange(n) % table.N))[:, :3]
    return np.asarray(colormaps["turbo"](np.linspace(0.05, 0.95, n)))[:, :3]


def slide_colors(slide_ids: np.ndarray) -> np.ndarray:
    """``(N, 3)`` RGB in [0, 1]: one qualitative colour per slide (tab10, then tab20)."""
    from matplotlib import colormaps

    ids = np.asarray(slide_ids, dtype=np.int64)
    table = colormaps["tab10" if ids.max(initial=0) < 10 else "tab20"]
    return np.asarray(table(ids % table.N))[:, :3]


def value_colors(values: np.ndarray, colormap: str = "viridis") -> np.ndarray:
    """``(N, 3)`` RGB in [0, 1] of values in [0, 1] through a matplotlib colour map."""
    from matplotlib import colormaps

    values = np.asarray(values, dtype=np.float64)
    out = colormaps[colormap](np.clip(np.nan_to_num(values, nan=0.0), 0, 1))[:, :3]
    out[np.isnan(values)] = GREY
    return out
