"""Class colours: one palette for the panel, head cards, GeoJSON files and overlay images.

Colours are ``"#rrggbb"`` strings. The palette avoids the hues of H&E itself (haematoxylin's
blue-purple, eosin's pink), so that a class colour painted over tissue is never mistaken for
the stain; QuPath's standard classes keep QuPath's own colours, so files exchanged with
QuPath look the same in both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from napari_dfl.core.errors import DFLError

#: Colours given to classes in turn: saturated, distinguishable, none purple or pink.
PALETTE = ("#ffd92f", "#1b9e77", "#ff7f00", "#17becf", "#4daf4a", "#8c510a", "#2166ac",
           "#e41a1c", "#66c2a5", "#a6761d", "#b2df8a", "#000000")
#: QuPath's default colours of its standard classes (lower-case names).
QUPATH_COLORS = {
    "tumor": "#c80000", "stroma": "#96c896", "immune cells": "#a05aa0", "necrosis": "#323232",
    "other": "#ffc800", "region*": "#0000b4", "ignore*": "#b4b4b4", "positive": "#c83232",
    "negative": "#7070e1",
}
#: Grey for a class that has no colour (an unknown class in a file, say).
UNKNOWN = "#999999"


class ColorError(DFLError):
    """A colour is not ``#rrggbb``, ``#rgb`` or three integers 0-255."""


def to_rgb(value: Any, label: str = "") -> tuple[int, int, int]:
    """``(r, g, b)`` 0-255 of ``'#rrggbb'``, ``'#rgb'`` or a sequence of three integers.

    Raises:
        ColorError: naming the class ``label`` when given.

    """
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) == 3:
            text = "".join(c * 2 for c in text)
        if len(text) == 6:
            try:
                return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
            except ValueError:
                pass
    elif isinstance(value, Sequence) and len(value) in (3, 4) and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255
            for v in value[:3]):
        return int(value[0]), int(value[1]), int(value[2])
    elif hasattr(value, "tolist"):  # numpy integer arrays
        return to_rgb(value.tolist(), label)
    owner = f" of class '{label}'" if label else ""
    raise ColorError(f"colour {value!r}{owner} is not '#rrggbb' or three integers 0-255.")


def to_hex(value: Any, label: str = "") -> str:
    """``'#rrggbb'`` of any colour :func:`to_rgb` accepts."""
    return "#{:02x}{:02x}{:02x}".format(*to_rgb(value, label))


def default_color(name: str, index: int) -> str:
    """QuPath's colour for a standard class name, else the palette's ``index``-th colour."""
    return QUPATH_COLORS.get(name.lower(), PALETTE[index % len(PALETTE)])


def class_colors(names: Iterable[str], given: Mapping[str, Any] | None = None) -> dict[str, str]:
    """``{name: '#rrggbb'}`` for ``names`` in their order: the given colour, else a default.

    Defaults skip colours already taken by given ones where the palette allows, so two
    classes never share a colour by accident.
    """
    names = list(dict.fromkeys(names))
    given = {k: to_hex(v, k) for k, v in (given or {}).items() if k in names}
    taken = set(given.values())
    out, k = {}, 0
    for name in names:
        if name in given:
            out[name] = given[name]
            continue
        color = QUPATH_COLORS.get(name.lower())
        while color is None or (color in taken and k < 2 * len(PALETTE)):
            color = PALETTE[k % len(PALETTE)]
            k += 1
        taken.add(color)
        out[name] = color
    return out
