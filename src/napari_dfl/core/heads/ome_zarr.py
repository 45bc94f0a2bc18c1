"""A tile prediction as an OME-Zarr (NGFF 0.4) image, for viewers without napari-dfl.

napari-ome-zarr, QuPath's OME-Zarr support and vizarr read NGFF images; this writes one per
prediction, placed over the slide in micrometres::

    <name>.ome.zarr/            zarr v2 group; .zattrs: multiscales (axes c, y, x), omero
        0/                      (C, rows, cols) float32 class probabilities, NaN off tissue
        labels/                 .zattrs: {"labels": ["class_map"]}
            class_map/          .zattrs: multiscales (axes c, y, x), image-label
                0/              (1, rows, cols) uint16: class index + 1, 0 where no tile

One pixel is one tile of the prediction grid. The ``scale`` transformation is the tile's
side in µm (``patch_size x working µm/px``, which is also the level-0 tile size x the
slide's µm/px); the ``translation`` puts each pixel's centre at its tile's centre, the
convention napari uses for the slide itself (level-0 pixel ``j`` centred at ``j x µm/px``).
A prediction of a slide without µm/px is written in level-0 pixels (no unit).

NGFF 0.4 is zarr v2 with ``/`` as the chunk key separator; the metadata is written here
from the specification (no ome-zarr dependency).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_dfl.core.errors import DFLError
from napari_dfl.core.heads.tile_prediction import TilePrediction
from napari_dfl.core.util.atomic import atomic_folder
from napari_dfl.core.util.palette import class_colors, to_rgb

__all__ = ["NGFF_VERSION", "OmeZarrError", "ome_zarr_placement", "write_ome_zarr"]

NGFF_VERSION = "0.4"
#: The label image's name under ``labels/``.
CLASS_MAP = "class_map"
_CHUNK = 1024


class OmeZarrError(DFLError):
    """The OME-Zarr output cannot be written where asked."""


def ome_zarr_placement(prediction: TilePrediction) -> dict[str, Any]:
    """``{"scale": s, "translation": t, "unit": u}`` of one grid cell, per spatial axis.

    ``s`` is the tile side and ``t`` the offset of the first tile's centre, in micrometres
    (``u == "micrometer"``) or, for a slide without µm/px, level-0 pixels (``u is None``).
    """
    grid = prediction.grid
    tile = float(grid.tile_size)
    offset_px = tile / 2.0 - 0.5
    if grid.mpp is None:
        return {"scale": tile, "translation": offset_px, "unit": None}
    slide_mpp = float(grid.mpp) * grid.patch_size / tile
    return {"scale": float(grid.patch_size) * float(grid.mpp),
            "translation": offset_px * slide_mpp, "unit": "micrometer"}


def _multiscales(name: str, placement: dict[str, Any]) -> list[dict[str, Any]]:
    space = {"type": "space"}
    if placement["unit"] is not None:
        space["unit"] = placement["unit"]
    s, t = placement["scale"], placement["translation"]
    return [{
        "version": NGFF_VERSION,
        "name": name,
        "axes": [{"name": "c", "type": "channel"}, {"name": "y", **space},
                 {"name": "x", **space}],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, s, s]},
            {"type": "translation", "translation": [0.0, t, t]},
        ]}],
        "metadata": {"description": "one pixel per tile of a napari-dfl prediction"},
    }]


def _array(group: Any, data: np.ndarray, fill: Any) -> None:
    chunks = (1, min(_CHUNK, max(1, data.shape[1])), min(_CHUNK, max(1, data.shape[2])))
    array = group.create_array("0", shape=data.shape, dtype=data.dtype, chunks=chunks,
                               fill_value=fill,
                               chunk_key_encoding={"name": "v2", "separator": "/"})
    array[...] = data


def _check_target(path: Path) -> None:
    if not path.exists():
        return
    ours = path.is_dir() and (path / ".zattrs").is_file() and (path / "labels").is_dir()
    if ours:
        try:
            attrs = json.loads((path / ".zattrs").read_text(encoding="utf-8"))
            ours = isinstance(attrs, dict) and "napari_dfl" in attrs
        except (OSError, ValueError):
            ours = False
    if not ours:
        raise OmeZarrError(f"{path} exists and is not an OME-Zarr prediction written by "
                           "napari-dfl: choose another path or delete it.")


def write_ome_zarr(prediction: TilePrediction, path: str | os.PathLike, *,
                   colors: dict[str, Any] | None = None, name: str | None = None) -> Path:
    """Write a prediction as an NGFF 0.4 image with a class-map label image (atomically).

    Args:
        prediction: the tile prediction.
        path: the ``.ome.zarr`` folder to write; an earlier napari-dfl prediction there is
            replaced, anything else is refused.
        colors: class colours (``'#rrggbb'``), default the palette's.
        name: the image's name (default: the folder name without ``.ome.zarr``).

    Returns:
        The path written.

    Raises:
        OmeZarrError: ``path`` holds something else.

    """
    import zarr  # a core dependency, but not needed before an OME-Zarr is asked for

    path = Path(path)
    _check_target(path)
    name = name or path.name.removesuffix(".zarr").removesuffix(".ome")
    classes = list(prediction.classes)
    palette = class_colors(classes, colors)
    placement = ome_zarr_placement(prediction)
    proba = np.stack([prediction.probability_map(i) for i in range(len(classes))])
    class_map = prediction.class_map().astype(np.int32) + 1
    labels = class_map.astype(np.uint16)[None]
    channels = [{"label": c, "color": palette[c].lstrip("#").upper(), "active": True,
                 "coefficient": 1.0, "family": "linear", "inverted": False,
                 "window": {"start": 0.0, "end": 1.0, "min": 0.0, "max": 1.0}}
                for c in classes]
    label_values = [{"label-value": i + 1, "rgba": [*to_rgb(palette[c], c), 255]}
                    for i, c in enumerate(classes)]
    with atomic_folder(path) as tmp:
        root = zarr.open_group(tmp, mode="w", zarr_format=2)
        root.attrs.update({
            "multiscales": _multiscales(f"{name} class probabilities", placement),
            "omero": {"name": name, "version": NGFF_VERSION, "channels": channels,
                      "rdefs": {"model": "color", "defaultZ": 0, "defaultT": 0}},
            "napari_dfl": {"classes": classes, "tile_size_level0": prediction.grid.tile_size,
                           "patch_size": prediction.grid.patch_size,
                           "working_mpp": prediction.grid.mpp,
                           "class_map": "labels/class_map: class index + 1, 0 = no tile"},
        })
        _array(root, proba.astype(np.float32), np.nan)
        label_group = root.create_group("labels")
        label_group.attrs.update({"labels": [CLASS_MAP]})
        class_group = label_group.create_group(CLASS_MAP)
        class_group.attrs.update({
            "multiscales": _multiscales(f"{name} class map", placement),
            "image-label": {"version": NGFF_VERSION, "colors": label_values,
                            "properties": [{"label-value": i + 1, "class": c}
                                           for i, c in enumerate(classes)],
                            "source": {"image": "../../"}},
        })
        _array(class_group, labels, 0)
    return path
