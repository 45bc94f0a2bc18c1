"""Annotations: labelled regions and points, read from and written to QuPath's GeoJSON.

Coordinates are level-0 pixels of the slide, x to the right and y down, as QuPath exports
them. A *region* is a Polygon or MultiPolygon, a *point* annotation a Point or MultiPoint;
the samples they yield are made in :mod:`napari_dfl.core.annotations.samples`. See
``docs/annotations.md`` for the dialect and every rule in detail.

Reading validates everything before trusting it (JSON syntax, structure, finite coordinates,
polygon validity, classes); nothing is evaluated or unpickled. Writing is atomic.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
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
    collection_text,
    describe,
    feature_collection,
    parse_features,
)
from napari_dfl.core.util.atomic import write_text

__all__ = [
    "POINT",
    "REGION",
    "Annotation",
    "AnnotationError",
    "AnnotationWarning",
    "annotations_from_geojson",
    "check_within",
    "read_geojson",
    "write_geojson",
]

REGION, POINT = "region", "point"



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
            without ``classification`` (the ``label``). ``objectType`` is there only for
            QuPath objects other than annotations (``"cell"``, ``"detection"``, ``"tile"``),
            and wins over the writer's ``object_type``; a cell or detection read as a point
            keeps its outlines there too (see :mod:`napari_dfl.core.annotations.geojson`).

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
    :class:`AnnotationWarning`). QuPath cells and detections become points at their centroid
    (a cell's nucleus centroid when it has a ``nucleusGeometry``); annotations and tiles
    keep their outlines. The class is ``properties.classification.name`` (QuPath
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
        colors: class colour as ``"#rrggbb"`` or ``(r, g, b)``; others get the palette's
            (:func:`napari_dfl.core.util.palette.class_colors`).
        object_type: QuPath object type, ``"annotation"`` (default), ``"detection"`` or
            ``"tile"``.

    Returns:
        The path written.

    """
    annotations = list(annotations)
    collection = feature_collection(
        [(a.geometry, a.label, a.id, a.properties) for a in annotations],
        colors=colors, object_type=object_type)
    return write_text(path, collection_text(collection))


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
