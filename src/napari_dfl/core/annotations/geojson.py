"""QuPath's GeoJSON dialect: validating decoded JSON, and building what QuPath imports.

Reading checks untrusted JSON values piece by piece (structure, finite coordinates, rings,
classes) and builds shapely geometries only from values that passed. It raises
:class:`AnnotationError` with a message naming the feature (``#n``, 1-based, in file order)
and what to do; nothing else escapes it. Writing builds a FeatureCollection with QuPath's
``objectType`` and ``classification``; :func:`collection_text` lays it out one feature per line.
:mod:`napari_dfl.core.annotations.annotation` wraps both around its
:class:`~napari_dfl.core.annotations.annotation.Annotation` objects.

QuPath's object types (``properties.objectType``, as QuPath 0.3+ writes it; the older
``object_type``, the alias ``type`` and v0.2's ``id: "PathCellObject"`` are read too):
``annotation`` objects are regions (or points, for point annotations); ``detection`` and
``cell`` objects, small outlines of one nucleus or cell each, become points at their centroid
(a cell's at the centroid of its ``nucleusGeometry``, the feature member beside
``geometry``, when it has one), since an outline a few microns across yields no training
tile as a region. Their type and outlines are kept in the properties (``objectType``,
:data:`OUTLINE_KEY`), so writing them gives QuPath back its cells and detections, with
their outlines as long as the point was not moved. ``tile`` objects stay regions.
"""

from __future__ import annotations

import difflib
import json
import math
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import shapely
from shapely.geometry import MultiPoint, MultiPolygon, Point, Polygon, mapping
from shapely.geometry.base import BaseGeometry

from napari_dfl.core.errors import DFLError
from napari_dfl.core.util.atomic import to_json
from napari_dfl.core.util.palette import ColorError, class_colors, to_rgb

#: Coordinates beyond this magnitude (level-0 pixels) are refused: no slide is that large.
MAX_COORDINATE = 1e8
_EXPORT_HINT = "Export it again from QuPath (File > Export objects as GeoJSON)."
_LINES = ("LineString", "MultiLineString")
#: QuPath's object types napari-dfl tells apart; another type (``tmaCore``...) reads as an
#: annotation, as QuPath itself does with types it does not know.
OBJECT_TYPES = ("annotation", "detection", "cell", "tile")
#: Types read as points at their centroid.
POINT_TYPES = ("detection", "cell")
#: The property that keeps a cell's or detection's QuPath outlines (GeoJSON geometries:
#: ``geometry`` and, for cells, ``nucleusGeometry``) while napari-dfl shows it as a point.
OUTLINE_KEY = "napari_dfl_outline"
_LEGACY_TYPES = {"PathAnnotationObject": "annotation", "PathDetectionObject": "detection",
                 "PathCellObject": "cell", "PathTileObject": "tile"}
_GEOMETRIES = ("Point", "MultiPoint", "Polygon", "MultiPolygon", "GeometryCollection", *_LINES)


class AnnotationError(DFLError):
    """An annotation file or annotation is invalid; the message says which and how to fix."""


class AnnotationWarning(UserWarning):
    """Something in the annotations was skipped or repaired."""


class _Bad(Exception):
    """A geometry problem, turned into an AnnotationError naming the feature."""


@dataclass(frozen=True)
class ParsedFeature:
    """A validated feature: geometry in level-0 pixels, class, id, other properties.

    ``object_type`` is QuPath's (one of :data:`OBJECT_TYPES`); for a cell or a detection
    the geometry is already its centroid and ``properties`` hold ``objectType`` and its
    outlines (:data:`OUTLINE_KEY`).
    """

    geometry: BaseGeometry
    label: str
    id: str
    properties: dict
    object_type: str = "annotation"


def describe(index: int, label: str | None, properties: Any) -> str:
    """``#n 'label' ("name")`` for messages; ``index`` is 0-based, the text 1-based."""
    text = f"#{index + 1}"
    if label:
        text += f" '{label}'"
    name = properties.get("name") if isinstance(properties, dict) else None
    if isinstance(name, str) and name:
        text += f" (named {name!r})"
    return text


# -- coordinates and geometries ---------------------------------------------------------
def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"coordinate {value!r} is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _Bad(f"coordinate {value!r} is not a finite number")
    if abs(number) > MAX_COORDINATE:
        raise _Bad(f"coordinate {value!r} is far outside any slide")
    return number


def _position(value: Any) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) < 2:
        raise _Bad(f"a position must be a list [x, y], got {_short(value)}")
    return _number(value[0]), _number(value[1])


def _list(value: Any, what: str) -> list:
    if not isinstance(value, list) or not value:
        raise _Bad(f"{what} must be a non-empty list, got {_short(value)}")
    return value


def _ring(value: Any) -> list[tuple[float, float]]:
    points = [_position(p) for p in _list(value, "a polygon ring")]
    if len(points) > 1 and points[0] == points[-1]:
        points = points[:-1]
    if len(set(points)) < 3:
        raise _Bad("a polygon ring needs at least 3 distinct corners")
    return [*points, points[0]]


def _polygon(value: Any) -> Polygon:
    rings = [_ring(r) for r in _list(value, "polygon coordinates")]
    return Polygon(rings[0], rings[1:])


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _geometry(geom: Any, nested: bool = False) -> BaseGeometry | None:
    """Build a geometry; None for lines (skipped)."""
    if not isinstance(geom, dict):
        raise _Bad(f"its geometry must be a JSON object, got {_short(geom)}")
    kind = geom.get("type")
    if kind not in _GEOMETRIES:
        raise _Bad(f"geometry type {_short(kind)} is not a GeoJSON geometry "
                   f"({', '.join(_GEOMETRIES)})")
    if kind == "GeometryCollection":
        if nested:
            raise _Bad("GeometryCollections inside GeometryCollections are not supported")
        members = [_geometry(g, True) for g in _list(geom.get("geometries"), "geometries")]
        polygons = [_repair(g) for g in members if isinstance(g, (Polygon, MultiPolygon))]
        polygons = [g for g in polygons if g is not None]
        points = [g for g in members if isinstance(g, (Point, MultiPoint))]
        if polygons:
            return shapely.union_all(polygons)
        return MultiPoint(shapely.get_coordinates(points)) if points else None
    coords = geom.get("coordinates")
    if kind == "Point":
        return Point(_position(coords))
    if kind == "MultiPoint":
        return MultiPoint([_position(p) for p in _list(coords, "MultiPoint coordinates")])
    if kind == "Polygon":
        return _polygon(coords)
    if kind == "MultiPolygon":
        return MultiPolygon([_polygon(p) for p in _list(coords, "MultiPolygon coordinates")])
    for line in _list(coords, "line coordinates") if kind == "MultiLineString" else [coords]:
        for p in _list(line, "line coordinates"):
            _position(p)
    return None


def _repair(geom: BaseGeometry) -> BaseGeometry | None:
    """Make a polygonal geometry valid; None when nothing with an area is left."""
    if not isinstance(geom, (Polygon, MultiPolygon)) or geom.is_valid:
        return geom
    try:
        fixed = shapely.make_valid(geom)
        parts = [g for g in shapely.get_parts(fixed) if isinstance(g, (Polygon, MultiPolygon))]
        merged = shapely.union_all(parts) if parts else None
    except (shapely.errors.GEOSException, ValueError) as exc:
        raise _Bad(f"its polygon cannot be repaired ({exc}); redraw it") from None
    return merged if merged is not None and merged.area > 0 else None


# -- properties -------------------------------------------------------------------------
def _class_name(properties: dict) -> str | None:
    """``classification.name`` (or ``.names`` joined), or ``classification`` as a string."""
    value = properties.get("classification")
    if isinstance(value, dict):
        name = value.get("name")
        if name is None and isinstance(value.get("names"), list):
            names = value["names"]
            name = ": ".join(names) if all(isinstance(n, str) for n in names) else None
        value = name
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Bad(f"its class must be text, got {_short(value)}")
    return value.strip() or None


def _feature_id(feature: dict, properties: dict, seed: str, index: int) -> str:
    for value in (feature.get("id"), properties.get("napari_dfl_id")):
        if value in _LEGACY_TYPES:  # QuPath 0.2 wrote the object's type as its id
            continue
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{seed}:{index}"))


def _features(obj: Any, source: str) -> list:
    if isinstance(obj, list):
        return obj
    if not isinstance(obj, dict):
        raise AnnotationError(f"{source} is not GeoJSON: it holds a JSON {type(obj).__name__}, "
                              f"not a FeatureCollection. {_EXPORT_HINT}")
    kind = obj.get("type")
    if kind == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list):
            raise AnnotationError(f"{source}: the FeatureCollection has no 'features' list. "
                                  f"{_EXPORT_HINT}")
        return features
    if kind == "Feature":
        return [obj]
    if kind in _GEOMETRIES:
        raise AnnotationError(f"{source} holds a bare {kind} without a class; export "
                              "classified objects from QuPath (File > Export objects as "
                              "GeoJSON), which wraps each in a Feature with its class.")
    raise AnnotationError(f"{source} is not GeoJSON: its top-level type is {_short(kind)}, "
                          f"not a FeatureCollection, Feature or list of Features. {_EXPORT_HINT}")


def object_type(feature: dict, properties: dict) -> str:
    """QuPath's object type of a feature (one of :data:`OBJECT_TYPES`).

    ``properties.objectType`` (QuPath 0.3+), else ``object_type`` (older files), else
    ``type`` (an alias QuPath accepts), else a v0.2 class name in ``id``; ``annotation``
    when none says otherwise.
    """
    for key in ("objectType", "object_type", "type"):
        value = properties.get(key)
        if isinstance(value, str) and value.strip():
            text = value.strip()
            break
    else:
        text = _LEGACY_TYPES.get(feature.get("id"), "annotation") \
            if isinstance(feature.get("id"), str) else "annotation"
    text = _LEGACY_TYPES.get(text, text)
    return text if text in OBJECT_TYPES else "annotation"


def _plain(geometry: dict) -> dict:
    """A GeoJSON geometry as JSON values (lists, not shapely's tuples), as a file holds it."""
    return json.loads(json.dumps(geometry))


def _as_point(kind: str, geometry: BaseGeometry, feature: dict) -> tuple[BaseGeometry, dict]:
    """A cell's or detection's centroid, and its outlines to keep (none for a point)."""
    if isinstance(geometry, (Point, MultiPoint)):
        return geometry, {}
    outline = {"geometry": _plain(mapping(geometry))}
    centre = geometry
    nucleus_json = feature.get("nucleusGeometry") if kind == "cell" else None
    if nucleus_json is not None:
        nucleus = _repair(_geometry(nucleus_json, nested=True) or Point())
        if isinstance(nucleus, (Polygon, MultiPolygon)) and not nucleus.is_empty:
            outline["nucleusGeometry"] = _plain(mapping(nucleus))
            centre = nucleus
    point = centre.centroid
    return Point(round(point.x, 3), round(point.y, 3)), outline


# -- entry point ------------------------------------------------------------------------
def parse_features(obj: Any, *, source: str = "the GeoJSON",
                   known_classes: Sequence[str] | None = None,
                   id_seed: str = "") -> list[ParsedFeature]:
    """Validate decoded GeoJSON and return its classified features.

    Args:
        obj: the value ``json.loads`` returned.
        source: a name for messages (the file's name).
        known_classes: when given, classes outside it are refused.
        id_seed: seed of the deterministic ids of features without one.

    Returns:
        One :class:`ParsedFeature` per feature kept, in file order.

    Raises:
        AnnotationError: on the first structural problem, or listing every unclassified
            feature or unknown class.

    """
    features = _features(obj, source)
    parsed: list[ParsedFeature] = []
    unclassified: list[str] = []
    unknown: dict[str, list[str]] = {}
    skipped: list[str] = []
    repaired: list[str] = []
    known = None if known_classes is None else [str(c) for c in known_classes]
    for i, feature in enumerate(features):
        label: str | None = None
        properties: Any = None
        try:
            if not isinstance(feature, dict):
                raise _Bad(f"it is a JSON {type(feature).__name__}, not a Feature object")
            if feature.get("type", "Feature") != "Feature":
                raise _Bad(f"its type is {_short(feature.get('type'))}, not 'Feature'")
            properties = feature.get("properties") or {}
            if not isinstance(properties, dict):
                raise _Bad(f"its properties must be a JSON object, got {_short(properties)}")
            label = _class_name(properties)
            if feature.get("geometry") is None:
                skipped.append(describe(i, label, properties))
                continue
            geometry = _geometry(feature["geometry"])
            if geometry is None:
                skipped.append(describe(i, label, properties))
                continue
            fixed = _repair(geometry)
            if fixed is None:
                raise _Bad("its polygon has no area (all corners on one line); redraw it")
            if fixed is not geometry:
                repaired.append(describe(i, label, properties))
            kind = object_type(feature, properties)
            outline: dict = {}
            if kind in POINT_TYPES:
                fixed, outline = _as_point(kind, fixed, feature)
        except _Bad as exc:
            raise AnnotationError(
                f"{source}: feature {describe(i, label, properties)} is invalid: {exc}. "
                f"{_EXPORT_HINT}"
            ) from None
        where = describe(i, label, properties)
        if label is None:
            unclassified.append(where)
            continue
        if known is not None and label not in known:
            unknown.setdefault(label, []).append(where)
        others = {k: v for k, v in properties.items()
                  if k not in ("classification", "objectType", "object_type", "napari_dfl_id",
                               OUTLINE_KEY)}
        if kind != "annotation":
            others["objectType"] = kind
        if outline:
            others[OUTLINE_KEY] = outline
        parsed.append(ParsedFeature(fixed, label, _feature_id(feature, properties, id_seed, i),
                                    others, kind))
    _raise_class_problems(source, unclassified, unknown, known)
    _warn(source, skipped, repaired)
    return parsed


def _raise_class_problems(source: str, unclassified: list[str],
                          unknown: dict[str, list[str]], known: list[str] | None) -> None:
    if unclassified:
        raise AnnotationError(
            f"{source}: {len(unclassified)} feature(s) have no class "
            f"({', '.join(unclassified[:5])}{', ...' if len(unclassified) > 5 else ''}). "
            "Classify them in QuPath (select, then right-click > Set classification) or "
            "delete them, and export again."
        )
    if unknown and known is not None:
        parts = []
        for label, where in unknown.items():
            close = difflib.get_close_matches(label, known, n=1, cutoff=0.6)
            hint = f", did you mean '{close[0]}'?" if close else ""
            parts.append(f"'{label}' ({len(where)} feature(s), first {where[0]}{hint})")
        raise AnnotationError(
            f"{source}: unknown class(es) {'; '.join(parts)}. Known classes: "
            f"{', '.join(known) or '(none)'}. Rename them in QuPath, or train with these "
            "classes."
        )


def _warn(source: str, skipped: list[str], repaired: list[str]) -> None:
    if skipped:
        warnings.warn(
            f"{source}: {len(skipped)} feature(s) without an area or a point (lines, or no "
            f"geometry) were skipped: {', '.join(skipped[:5])}"
            f"{', ...' if len(skipped) > 5 else ''}.",
            AnnotationWarning, stacklevel=4,
        )
    if repaired:
        warnings.warn(
            f"{source}: {len(repaired)} self-intersecting polygon(s) were repaired: "
            f"{', '.join(repaired[:5])}{', ...' if len(repaired) > 5 else ''}. Check their "
            "outlines in QuPath.",
            AnnotationWarning, stacklevel=4,
        )


# -- writing ----------------------------------------------------------------------------
def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def feature_collection(items: Sequence[tuple[BaseGeometry, str, str, dict]], *,
                       colors: dict[str, Any] | None = None,
                       object_type: str = "annotation") -> dict:
    """Build a QuPath-style FeatureCollection from ``(geometry, label, id, properties)``.

    Each feature has ``id`` (when it is a UUID; other ids go to
    ``properties.napari_dfl_id``) and ``properties`` with ``objectType`` and
    ``classification: {"name", "color": [r, g, b]}`` plus the given properties.

    An item's own ``objectType`` property (a QuPath cell or detection read as a point)
    wins over ``object_type``; a point that still sits at the centroid of the outlines kept
    in :data:`OUTLINE_KEY` is written with them (``geometry`` and, for a cell,
    ``nucleusGeometry``), so QuPath gets its objects back as they were.
    """
    labels = sorted({label for _, label, _, _ in items})
    try:
        palette = {k: list(to_rgb(v)) for k, v in class_colors(labels, colors).items()}
    except ColorError as exc:
        raise AnnotationError(str(exc)) from None
    features = []
    for geometry, label, ident, props in items:
        props = dict(props)
        outline = props.pop(OUTLINE_KEY, None)
        properties = {"objectType": object_type, **props,
                      "classification": {"name": label, "color": palette[label]}}
        feature = {"type": "Feature", "id": ident, "geometry": mapping(geometry),
                   "properties": properties}
        if _unmoved(geometry, outline, properties["objectType"]):
            feature["geometry"] = outline["geometry"]
            if "nucleusGeometry" in outline:
                feature["nucleusGeometry"] = outline["nucleusGeometry"]
        if not _is_uuid(ident):
            del feature["id"]
            properties["napari_dfl_id"] = ident
        features.append(feature)
    return {"type": "FeatureCollection", "features": features}


def _unmoved(geometry: BaseGeometry, outline: Any, kind: str) -> bool:
    """Whether a cell's or detection's point still sits where its kept outlines put it."""
    if kind not in POINT_TYPES or not isinstance(geometry, Point) or \
            not isinstance(outline, dict) or "geometry" not in outline:
        return False
    try:
        shape = _geometry(outline.get("nucleusGeometry") or outline["geometry"], nested=True)
    except _Bad:
        return False
    if not isinstance(shape, (Polygon, MultiPolygon)):
        return False
    centre = (_repair(shape) or shape).centroid
    return abs(centre.x - geometry.x) < 0.01 and abs(centre.y - geometry.y) < 0.01


def collection_text(collection: dict) -> str:
    """JSON text of a FeatureCollection, one feature per line (readable, diff-friendly).

    Numpy values in properties (probabilities, say) are written as numbers.
    """
    head = {k: v for k, v in collection.items() if k != "features"}
    lines = ",\n".join(to_json(feature, indent=None).replace("\n", " ")
                        for feature in collection["features"])
    return json.dumps(head)[:-1] + ', "features": [\n' + lines + "\n]}\n"
