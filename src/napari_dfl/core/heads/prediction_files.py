"""Writing predictions: arrays with their placement, QuPath GeoJSON, an overlay thumbnail.

All files are written atomically (temporary name, then rename).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from shapely.geometry import box

from napari_dfl.core.annotations.annotation import Annotation, write_geojson
from napari_dfl.core.errors import DFLError
from napari_dfl.core.heads.tile_prediction import TilePrediction
from napari_dfl.core.slides.tissue import TileGrid
from napari_dfl.core.util.atomic import atomic_path
from napari_dfl.core.util.files import npz_members
from napari_dfl.core.util.palette import class_colors, to_rgb


def save_arrays(prediction: TilePrediction, path: str | os.PathLike) -> Path:
    """Save the per-tile arrays as ``.npz`` (no pickled objects; load with allow_pickle=False).

    Keys: ``coords`` (N, 2) level-0 anchors, ``grid_index`` (N, 2), ``proba`` (N, C),
    ``class_map`` (rows, cols) int16 (-1 = no tile), ``probability_maps`` (C, rows, cols),
    ``tile_size`` (level-0 px per grid cell), ``classes`` (unicode array), and what
    :func:`load_arrays` needs to rebuild the grid: ``grid_shape``, ``patch_size``, ``mpp``
    (NaN when unknown) and ``tissue_fraction``.
    """
    path = Path(path)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(
            handle,
            coords=prediction.grid.coords,
            grid_index=prediction.grid.grid_index,
            proba=prediction.proba,
            class_map=prediction.class_map(),
            probability_maps=np.stack([prediction.probability_map(i)
                                       for i in range(len(prediction.classes))]),
            tile_size=np.float64(prediction.grid.tile_size),
            classes=np.array(prediction.classes, dtype=str),
            grid_shape=np.asarray(prediction.grid.grid_shape, dtype=np.int64),
            patch_size=np.int64(prediction.grid.patch_size),
            mpp=np.float64(np.nan if prediction.grid.mpp is None else prediction.grid.mpp),
            tissue_fraction=np.asarray(prediction.grid.tissue_fraction, dtype=np.float32),
        )
    return path


#: The most array bytes a prediction archive may hold (10 million tiles of 20 classes take
#: about 1.2 GB).
MAX_PREDICTION_BYTES = 2 * 2**30
#: The most grid cells a prediction may claim (a 200,000 px square slide in 28 px tiles).
MAX_GRID_CELLS = 50_000_000


def load_arrays(path: str | os.PathLike) -> TilePrediction:
    """Read a prediction written by :func:`save_arrays` (validated; no pickles).

    Raises:
        DFLError: the file is absent, not such an archive, or inconsistent.

    """
    path = Path(path)
    needed = ("coords", "grid_index", "proba", "tile_size", "classes", "grid_shape",
              "patch_size", "mpp", "tissue_fraction")
    # Sizes from the archive's headers first: nothing is allocated for a file that lies.
    members = npz_members(path, MAX_PREDICTION_BYTES, "the prediction")
    grid_shape = members.get("grid_shape")
    if grid_shape is not None and grid_shape.shape == (2,):
        try:
            with np.load(path, allow_pickle=False) as data:
                rows, cols = (int(v) for v in data["grid_shape"])
        except (OSError, ValueError, OverflowError) as exc:
            raise DFLError(f"{path.name} could not be read ({exc}); predict again.") from None
        if rows < 0 or cols < 0 or rows * cols > MAX_GRID_CELLS:
            raise DFLError(f"{path.name} claims a grid of {rows} x {cols} tiles, more than "
                           f"any slide has ({MAX_GRID_CELLS:,} at most): refused; predict "
                           "again.")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in needed if k not in data.files]
            if missing:
                raise DFLError(f"{path.name} lacks {', '.join(missing)}: it is not a "
                               "napari-dfl prediction; predict again.")
            arrays = {k: data[k] for k in needed}
    except (OSError, ValueError) as exc:
        raise DFLError(f"{path.name} could not be read ({exc}); predict again.") from None
    coords, proba = arrays["coords"].astype(np.int64), arrays["proba"].astype(np.float32)
    index, shape = arrays["grid_index"].astype(np.int64), tuple(arrays["grid_shape"].tolist())
    classes = [str(c) for c in arrays["classes"].tolist()]
    if (coords.ndim != 2 or coords.shape[1:] != (2,) or index.shape != coords.shape
            or proba.shape != (len(coords), len(classes)) or len(shape) != 2
            or arrays["tissue_fraction"].shape != (len(coords),)
            or (len(index) and (index.min() < 0 or (index.max(axis=0) >= shape).any()))):
        raise DFLError(f"{path.name} is inconsistent (shapes do not match); predict again.")
    mpp = float(arrays["mpp"])
    grid = TileGrid(coords=coords, grid_index=index, grid_shape=(int(shape[0]), int(shape[1])),
                    tile_size=float(arrays["tile_size"]), patch_size=int(arrays["patch_size"]),
                    mpp=None if np.isnan(mpp) else mpp,
                    tissue_fraction=arrays["tissue_fraction"].astype(np.float64))
    return TilePrediction(grid, classes, proba)


def save_geojson(prediction: TilePrediction, path: str | os.PathLike,
                 colors: dict[str, list[int]] | None = None) -> Path:
    """Tiles as QuPath detections with their class and class probabilities as measurements."""
    size = prediction.grid.tile_size
    labels = prediction.labels
    tiles = []
    for i in np.flatnonzero(labels >= 0):
        x, y = prediction.grid.coords[i]
        measurements = {f"p({name})": round(float(p), 5)
                        for name, p in zip(prediction.classes, prediction.proba[i], strict=True)}
        tiles.append(Annotation(box(x, y, x + size, y + size), prediction.classes[labels[i]],
                                id=f"tile-{x}-{y}", properties={"measurements": measurements}))
    return write_geojson(tiles, path, colors=class_colors(prediction.classes, colors),
                         object_type="detection")


def overlay_image(prediction: TilePrediction, slide, colors: dict[str, list[int]] | None = None,
                  max_size: int = 1024, alpha: float = 0.45) -> np.ndarray:
    """A thumbnail of the slide with each predicted tile tinted by its class colour."""
    colors = class_colors(prediction.classes, colors)
    thumb = slide.thumbnail(max_size).astype(np.float32)
    height, width = thumb.shape[:2]
    class_map = prediction.class_map()
    palette = np.array([to_rgb(colors[name], name) for name in prediction.classes],
                       dtype=np.float32)
    # Map every thumbnail pixel to its grid cell.
    scale = slide.dimensions[0] / width
    cols = (np.arange(width) * scale // prediction.grid.tile_size).astype(int)
    rows = (np.arange(height) * scale // prediction.grid.tile_size).astype(int)
    inside_r, inside_c = rows < class_map.shape[0], cols < class_map.shape[1]
    cells = np.full((height, width), -1, dtype=np.int16)
    cells[np.ix_(inside_r, inside_c)] = class_map[np.ix_(rows[inside_r], cols[inside_c])]
    tinted = cells >= 0
    thumb[tinted] = (1 - alpha) * thumb[tinted] + alpha * palette[cells[tinted]]
    return np.clip(thumb + 0.5, 0, 255).astype(np.uint8)


def save_overlay_png(prediction: TilePrediction, slide, path: str | os.PathLike,
                     colors: dict[str, list[int]] | None = None, max_size: int = 1024) -> Path:
    """Write :func:`overlay_image` as a PNG."""
    path = Path(path)
    with atomic_path(path) as temporary:
        Image.fromarray(overlay_image(prediction, slide, colors, max_size)).save(
            temporary, format="PNG")
    return path


def _own_name(path: Path) -> tuple[str, Path]:
    """A slide's own output name and the folder it lies in.

    A DICOM slide (a folder of ``.dcm`` files, or one of them) is named after its folder:
    its files are often named by UIDs or numbers that say nothing and repeat across slides.
    """
    if path.is_dir():
        return path.name, path.parent
    if path.suffix.lower() == ".dcm":
        return path.parent.name, path.parent.parent
    return path.stem, path.parent


def output_stems(paths: Sequence[str | os.PathLike]) -> list[str]:
    """File-name stems for the outputs of several slides, one per path, unique among them.

    Each is the slide's own name (its file name without the extension; a DICOM slide's
    folder name). Slides that would share one (``a/slide.svs`` and ``b/slide.svs``) are told
    apart by the folders they lie in, from their first differing folder down
    (``a_slide``, ``b_slide``), so that no slide's outputs overwrite another's. The same
    path given twice keeps one stem.
    """
    named = [(*_own_name(Path(p).absolute()), Path(p).absolute()) for p in paths]
    stems = [name for name, _, _ in named]
    for name in set(stems):
        group = [i for i, stem in enumerate(stems) if stem == name]
        folders = {named[i][1] for i in group}
        if len(folders) < 2:
            continue
        common = Path(os.path.commonpath([str(f) for f in folders]))
        for i in group:
            parts = named[i][1].relative_to(common).parts
            stems[i] = "_".join((*parts, name))
    return stems


def save_prediction(prediction: TilePrediction, slide, out_dir: str | os.PathLike,
                    stem: str | None = None,
                    colors: dict[str, list[int]] | None = None) -> dict[str, str]:
    """Write arrays, GeoJSON, overlay PNG and a JSON summary; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or Path(slide.path).stem
    paths = {
        "arrays": save_arrays(prediction, out / f"{stem}.prediction.npz"),
        "geojson": save_geojson(prediction, out / f"{stem}.tiles.geojson", colors),
        "overlay": save_overlay_png(prediction, slide, out / f"{stem}.overlay.png", colors),
    }
    summary = {"slide": str(slide.path), "tiles": len(prediction.grid),
               "predicted": int(prediction.predicted.sum()), "counts": prediction.counts(),
               "classes": prediction.classes, "tile_size_level0": prediction.grid.tile_size,
               "files": {k: str(v) for k, v in paths.items()}}
    summary_path = out / f"{stem}.prediction.json"
    with atomic_path(summary_path) as temporary:
        temporary.write_text(json.dumps(summary, indent=2))
    return {**summary["files"], "summary": str(summary_path)}
