"""Annotations in QuPath's GeoJSON dialect, and the training samples they yield.

Coordinates are level-0 pixels of the slide, x to the right and y down, as QuPath exports
them. A *region* (Polygon, MultiPolygon) yields the tiles of the slide's regular tile grid
that lie mostly inside it; a *point* (Point, MultiPoint) yields one sample centred on each
point. See ``docs/annotations.md`` for the dialect and every rule in detail.

Reading validates everything before trusting it (JSON syntax, structure, finite coordinates,
polygon validity, classes); nothing is evaluated or unpickled. Writing is atomic.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPoint, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from napari_dfl.core.annotations.geojson import (
    AnnotationError,
    AnnotationWarning,
    default_colors,
    describe,
    feature_collection,
    parse_features,
    write_json_atomic,
)
from napari_dfl.core.errors import DFLError
from napari_dfl.core.slides.sampling import Composition, anchors_from_centres

__all__ = [
    "POINT",
    "REGION",
    "Annotation",
    "AnnotationError",
    "AnnotationWarning",
    "SampleSet",
    "annotations_from_geojson",
    "check_within",
    "default_colors",
    "read_geojson",
    "samples_from_annotations",
    "write_geojson",
]

REGION, POINT = "region", "point"
#: Share of a smaller region that must lie inside a larger one for it to count as nested.
NESTED_SHARE = 0.9



@dataclass(frozen=True, eq=True)
class Annotation:
    """One labelled region or set of points.

    Attributes:
        geometry: a shapely Polygon or MultiPolygon (region) or Point or MultiPoint
            (points), in level-0 pixels (x right, y down).
        label: the class name.
        kind: ``"region"`` or ``"point"``; derived from the geometry when left empty.
        id: a stable identifier (QuPath's UUID when the file has one); a new UUID when empty.
        properties: the feature's other GeoJSON properties (``name``, ``measurements``...),
            without ``classification`` and ``objectType``, which map onto ``label`` and the
            writer's ``object_type``.

    """

    geometry: BaseGeometry
    label: str
    kind: str = ""
    id: str = ""
    properties: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        geometry = self.geometry
        if isinstance(geometry, (Polygon, MultiPolygon)):
            kind = REGION
        elif isinstance(geometry, (Point, MultiPoint)):
            kind = POINT
        else:
            raise AnnotationError(
                f"an annotation must be a Polygon, MultiPolygon, Point or MultiPoint, not "
                f"{getattr(geometry, 'geom_type', type(geometry).__name__)}."
            )
        if geometry.is_empty:
            raise AnnotationError(f"annotation '{self.label}' has an empty geometry.")
        if self.kind and self.kind != kind:
            raise AnnotationError(f"a {geometry.geom_type} is a {kind}, not a {self.kind}.")
        if not isinstance(self.label, str) or not self.label.strip():
            raise AnnotationError(f"an annotation's label must be a non-empty text, got "
                                  f"{self.label!r}.")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "id", str(self.id) if self.id else str(uuid.uuid4()))
        object.__setattr__(self, "properties", dict(self.properties or {}))

    def __hash__(self) -> int:
        return hash(self.id)

    def points(self) -> np.ndarray:
        """``(N, 2)`` float64 coordinates of a point annotation's points."""
        return np.asarray(shapely.get_coordinates(self.geometry), dtype=np.float64)


# -- reading and writing ----------------------------------------------------------------
def read_geojson(path: str | os.PathLike,
                 known_classes: Sequence[str] | None = None) -> list[Annotation]:
    """Read annotations from a GeoJSON file exported by QuPath (or written by napari-dfl).

    Accepts a FeatureCollection, a single Feature, or a bare list of Features; geometries
    Polygon, MultiPolygon, Point and MultiPoint (GeometryCollections are reduced to their
    polygons, else their points; lines and features without geometry are skipped with an
    :class:`AnnotationWarning`). The class is ``properties.classification.name`` (QuPath
    0.2+), or ``properties.classification`` when it is a plain string; a feature's ``name``
    is never taken as its class. Invalid polygons (self-intersections) are repaired with
    ``shapely.make_valid`` and reported in one warning.

    Features without an ``id`` get a UUID derived from the file's content and their index,
    so reading the same file twice gives the same ids.

    Args:
        path: the GeoJSON file.
        known_classes: when given, a class outside it is refused.

    Returns:
        The annotations, in file order.

    Raises:
        AnnotationError: the file is missing, not UTF-8 JSON, not GeoJSON, or holds a bad
            geometry, a feature without class or an unknown class. The message names the
            feature (1-based ``#n`` in the file) and says how to fix it.

    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise AnnotationError(f"annotation file {path} {what}; give a .geojson file "
                              "exported from QuPath (File > Export objects as GeoJSON).")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(
            f"{path.name} is not a GeoJSON text file (byte {exc.start} is not UTF-8 text); "
            "export the annotations from QuPath with File > Export objects as GeoJSON."
        ) from exc
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{path.name} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}). Export it again from QuPath (File > Export objects as GeoJSON)."
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise AnnotationError(f"{path.name} cannot be parsed as JSON ({exc}).") from exc
    return annotations_from_geojson(obj, source=path.name, known_classes=known_classes,
                                    id_seed=hashlib.sha256(data).hexdigest())


def annotations_from_geojson(obj: Any, *, source: str = "the GeoJSON",
                             known_classes: Sequence[str] | None = None,
                             id_seed: str = "") -> list[Annotation]:
    """Validate already-decoded GeoJSON (e.g. from a GUI layer) into annotations.

    Same rules as :func:`read_geojson`, which reads and decodes the file first.

    Args:
        obj: a FeatureCollection, Feature or list of Features as Python values.
        source: a name for messages.
        known_classes: when given, a class outside it is refused.
        id_seed: seed of the deterministic ids given to features without one.

    Returns:
        The annotations, in order.

    """
    parsed = parse_features(obj, source=source, known_classes=known_classes, id_seed=id_seed)
    return [Annotation(p.geometry, p.label, "", p.id, p.properties) for p in parsed]


def write_geojson(annotations: Iterable[Annotation], path: str | os.PathLike, *,
                  colors: dict[str, str | tuple] | None = None,
                  object_type: str = "annotation") -> Path:
    """Write annotations as a GeoJSON FeatureCollection that QuPath imports.

    Each feature carries ``id`` (a UUID; an id that is not a UUID is kept in
    ``properties.napari_dfl_id`` instead, where :func:`read_geojson` finds it again) and
    ``properties`` with ``objectType`` and ``classification: {"name", "color": [r, g, b]}``
    plus the annotation's own properties. The file is written to a temporary name and
    renamed, so a crash never leaves half a file.

    Args:
        annotations: what to write.
        path: the destination (parent folders are created).
        colors: class colour as ``"#rrggbb"`` or ``(r, g, b)``; others get
            :func:`default_colors`.
        object_type: QuPath object type, ``"annotation"`` (default), ``"detection"`` or
            ``"tile"``.

    Returns:
        The path written.

    """
    annotations = list(annotations)
    collection = feature_collection(
        [(a.geometry, a.label, a.id, a.properties) for a in annotations],
        colors=colors, object_type=object_type)
    path = Path(path)
    write_json_atomic(collection, path)
    return path


def check_within(annotations: Sequence[Annotation], slide_dimensions: tuple[int, int],
                 source: str = "the annotations") -> None:
    """Refuse annotations that lie entirely outside the slide.

    Annotations that cross the border are accepted (their outside part yields nothing).

    Args:
        annotations: the annotations.
        slide_dimensions: level-0 ``(width, height)`` of the slide.
        source: a name for messages (e.g. the GeoJSON file's name).

    Raises:
        AnnotationError: naming the annotations outside, their bounds and the slide's size.

    """
    width, height = slide_dimensions
    frame = shapely.box(0, 0, width, height)
    outside = [(i, a) for i, a in enumerate(annotations) if not a.geometry.intersects(frame)]
    if not outside:
        return
    examples = []
    for i, ann in outside[:3]:
        x0, y0, x1, y1 = ann.geometry.bounds
        examples.append(f"{describe(i, ann.label, ann.properties)} at x {x0:.0f}-{x1:.0f}, "
                        f"y {y0:.0f}-{y1:.0f}")
    raise AnnotationError(
        f"{len(outside)} of {len(annotations)} annotations in {source} lie entirely outside "
        f"the slide ({width} x {height} px): {'; '.join(examples)}. The file is probably for "
        "another slide, or in another unit (napari-dfl expects level-0 pixels, as QuPath "
        "exports them, not microns or a downsampled image)."
    )


# -- samples ----------------------------------------------------------------------------
@dataclass
class SampleSet:
    """Labelled samples of one source (a slide or an image).

    Attributes:
        coords: ``(N, 2)`` int64 level-0 anchors (top-left of the first zoom's patch), the
            key embeddings are stored under.
        labels: ``(N,)`` class names.
        groups: ``(N,)`` group of each sample (annotation id, or source image): validation
            splits keep a group on one side.
        source: the slide or image path the coordinates refer to.

    """

    coords: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        self.coords = np.asarray(self.coords, dtype=np.int64).reshape(-1, 2)
        self.labels = np.asarray(self.labels, dtype=str).reshape(-1)
        self.groups = np.asarray(self.groups, dtype=str).reshape(-1)
        if not len(self.coords) == len(self.labels) == len(self.groups):
            raise ValueError(f"SampleSet needs as many coords ({len(self.coords)}), labels "
                             f"({len(self.labels)}) and groups ({len(self.groups)}).")

    def __len__(self) -> int:
        return len(self.coords)

    def counts(self) -> dict[str, int]:
        """Number of samples per class, in sorted class order."""
        names, counts = np.unique(self.labels, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}

    def subset(self, index: np.ndarray) -> SampleSet:
        """The samples at ``index`` (a boolean mask or integer indices)."""
        return SampleSet(self.coords[index], self.labels[index], self.groups[index],
                         self.source)

    @classmethod
    def empty(cls, source: str = "") -> SampleSet:
        """A set without samples."""
        return cls(np.zeros((0, 2), np.int64), np.zeros(0, str), np.zeros(0, str), source)

    @classmethod
    def concat(cls, sets: Sequence[SampleSet]) -> SampleSet:
        """Concatenate sets; the source is kept when they share it, else they are joined."""
        sets = list(sets)
        if not sets:
            return cls.empty()
        sources = list(dict.fromkeys(s.source for s in sets))
        return cls(np.concatenate([s.coords for s in sets]),
                   np.concatenate([s.labels for s in sets]),
                   np.concatenate([s.groups for s in sets]),
                   sources[0] if len(sources) == 1 else os.pathsep.join(sources))


def _tile_geometry(tiles: Any, composition: Composition, slide_mpp: float):
    extent = composition.anchor_extent(slide_mpp)
    if hasattr(tiles, "coords") and hasattr(tiles, "tile_size"):
        coords, size = np.asarray(tiles.coords), float(tiles.tile_size)
        if abs(size - extent) > 0.5:
            raise DFLError(
                f"the tile grid has {size:g} px tiles but the composition's first zoom "
                f"({composition.zooms[0]:g} um/px, {composition.patch_size} px) needs "
                f"{extent:g} px at level 0; lay the grid with tile_grid(slide, "
                f"{composition.patch_size}, {composition.zooms[0]:g})."
            )
    else:
        coords, size = np.asarray(tiles), extent
    coords = coords.reshape(-1, 2).astype(np.int64)
    return coords, size


def _resolve_tiles(hits: dict[int, list[tuple[int, float]]], regions: list[Annotation]):
    """Pick one region per tile; return ``{tile: region}`` and the ambiguous tile count."""
    areas = [r.geometry.area for r in regions]
    nested_cache: dict[tuple[int, int], bool] = {}

    def nested(inner: int, outer: int) -> bool:
        key = (inner, outer)
        if key not in nested_cache:
            a, b = regions[inner].geometry, regions[outer].geometry
            nested_cache[key] = a.intersection(b).area >= NESTED_SHARE * areas[inner]
        return nested_cache[key]

    chosen, ambiguous = {}, 0
    for tile, candidates in hits.items():
        order = sorted(candidates, key=lambda c: (areas[c[0]], c[0]))
        smallest = order[0][0]
        label = regions[smallest].label
        if all(regions[r].label == label or nested(smallest, r) for r, _ in order[1:]):
            chosen[tile] = smallest
        else:
            ambiguous += 1
    return chosen, ambiguous


def samples_from_annotations(
    annotations: Sequence[Annotation],
    tiles: Any,
    composition: Composition,
    slide_mpp: float,
    *,
    min_overlap: float = 0.5,
    source: str = "",
) -> SampleSet:
    """Turn annotations into labelled samples on one slide.

    Regions: the tiles of ``tiles`` (a :class:`~napari_dfl.core.slides.tissue.TileGrid`, already
    filtered for tissue, or an ``(N, 2)`` array of tile corners on the composition's grid)
    whose area lies at least ``min_overlap`` inside the region. Candidates come from a
    shapely ``STRtree`` over the tile boxes; the overlap is the exact intersection area.
    A tile that qualifies for regions of different classes takes the class of the smallest
    one when that one is nested in the others (at least 90% of it inside each: a
    "Necrosis" drawn inside a "Tumor"); otherwise the tile is ambiguous and dropped, with
    an :class:`AnnotationWarning`. Each tile sample's group is its region's id.

    Points: one sample centred on each point (any position, tissue or not), group = the
    annotation's id (all points of a MultiPoint share it).

    Args:
        annotations: regions and points, in level-0 pixels.
        tiles: the candidate tiles.
        composition: the sample composition (its first zoom's patch is the tile).
        slide_mpp: the slide's level-0 microns per pixel.
        min_overlap: share of a tile's area that must lie inside a region, in (0, 1].
        source: recorded as the set's ``source``.

    Returns:
        Region samples in tile order, then point samples in annotation order.

    """
    if not 0 < min_overlap <= 1:
        raise DFLError(f"min_overlap must be in (0, 1], got {min_overlap}.")
    regions = [a for a in annotations if a.kind == REGION]
    coords, labels, groups = [], [], []
    if regions:
        tile_coords, size = _tile_geometry(tiles, composition, slide_mpp)
        x, y = tile_coords[:, 0].astype(float), tile_coords[:, 1].astype(float)
        boxes = shapely.box(x, y, x + size, y + size)
        tree = shapely.STRtree(boxes)
        hits: dict[int, list[tuple[int, float]]] = {}
        empty = []
        for r, region in enumerate(regions):
            geom = region.geometry
            shapely.prepare(geom)
            candidates = tree.query(geom, predicate="intersects")
            inside = shapely.covers(geom, boxes[candidates])
            share = np.ones(len(candidates))
            edge = ~inside
            share[edge] = shapely.area(shapely.intersection(boxes[candidates[edge]], geom))
            share[edge] /= size * size
            kept = candidates[share >= min_overlap - 1e-9]
            if not len(kept):
                empty.append(region)
            for tile, value in zip(kept.tolist(), share[share >= min_overlap - 1e-9],
                                   strict=True):
                hits.setdefault(tile, []).append((r, float(value)))
        chosen, ambiguous = _resolve_tiles(hits, regions)
        for tile in sorted(chosen):
            region = regions[chosen[tile]]
            coords.append(tile_coords[tile])
            labels.append(region.label)
            groups.append(region.id)
        _warn_regions(empty, ambiguous, min_overlap)
    for ann in annotations:
        if ann.kind != POINT:
            continue
        anchors = anchors_from_centres(ann.points(), composition, slide_mpp)
        coords.extend(anchors)
        labels.extend([ann.label] * len(anchors))
        groups.extend([ann.id] * len(anchors))
    if not coords:
        return SampleSet.empty(source)
    return SampleSet(np.asarray(coords), labels, groups, source)


def _warn_regions(empty: list[Annotation], ambiguous: int, min_overlap: float) -> None:
    if empty:
        names = ", ".join(f"'{a.label}'" + (f" ({a.properties['name']})"
                                             if isinstance(a.properties.get("name"), str)
                                             else "") for a in empty[:5])
        warnings.warn(
            f"{len(empty)} region(s) cover no candidate tile by at least {min_overlap:.0%} "
            f"and yield no sample: {names}. They may be smaller than a tile, or on glass "
            "the tissue filter removed (lower min_tissue to keep glass tiles).",
            AnnotationWarning, stacklevel=3,
        )
    if ambiguous:
        warnings.warn(
            f"{ambiguous} tile(s) lie in overlapping regions of different classes, neither "
            "nested in the other, and were left out. Fix the overlaps in QuPath to use them.",
            AnnotationWarning, stacklevel=3,
        )
