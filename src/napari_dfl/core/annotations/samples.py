"""The training samples that annotations yield on one slide.

A *region* yields the tiles of the slide's regular tile grid that lie mostly inside it; a
*point* yields one sample centred on it. Each sample is anchored on the level-0 top-left
corner of its first zoom's patch (the key embeddings are stored under) and grouped by the
annotation it came from, so that validation never puts neighbouring tiles of one region on
both sides. See ``docs/annotations.md`` for every rule.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from napari_dfl.core.annotations.annotation import POINT, REGION, Annotation
from napari_dfl.core.annotations.geojson import AnnotationWarning
from napari_dfl.core.errors import DFLError
from napari_dfl.core.slides.sampling import Composition, anchors_from_centres
from napari_dfl.core.slides.tissue import grid_tiles_within, tile_grid

__all__ = ["NESTED_SHARE", "SamplePreview", "SampleSet", "preview_samples",
           "samples_from_annotations", "slide_samples"]

#: Share of a smaller region that must lie inside a larger one for it to count as nested.
NESTED_SHARE = 0.9


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
    samples, empty, ambiguous = _collect(annotations, tiles, composition, slide_mpp,
                                         min_overlap, source)
    _warn_regions(empty, ambiguous, min_overlap)
    return samples


def _collect(annotations: Sequence[Annotation], tiles: Any, composition: Composition,
             slide_mpp: float, min_overlap: float, source: str,
             ) -> tuple[SampleSet, list[Annotation], int]:
    """The samples, the regions that yield none and the count of ambiguous tiles."""
    if not 0 < min_overlap <= 1:
        raise DFLError(f"min_overlap must be in (0, 1], got {min_overlap}.")
    regions = [a for a in annotations if a.kind == REGION]
    coords, labels, groups = [], [], []
    empty: list[Annotation] = []
    ambiguous = 0
    if regions:
        tile_coords, size = _tile_geometry(tiles, composition, slide_mpp)
        x, y = tile_coords[:, 0].astype(float), tile_coords[:, 1].astype(float)
        boxes = shapely.box(x, y, x + size, y + size)
        tree = shapely.STRtree(boxes)
        hits: dict[int, list[tuple[int, float]]] = {}
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
    for ann in annotations:
        if ann.kind != POINT:
            continue
        anchors = anchors_from_centres(ann.points(), composition, slide_mpp)
        coords.extend(anchors)
        labels.extend([ann.label] * len(anchors))
        groups.extend([ann.id] * len(anchors))
    if not coords:
        return SampleSet.empty(source), empty, ambiguous
    return SampleSet(np.asarray(coords), labels, groups, source), empty, ambiguous


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


def slide_samples(slide: Any, annotations: Sequence[Annotation], composition: Composition, *,
                  min_tissue: float = 0.0, min_overlap: float = 0.5) -> SampleSet:
    """The samples of annotations on an open slide: its tile grid, then the annotations' tiles.

    The one way annotations become samples, for the CLI's datasets and the panel alike:
    the same annotations on the same slide always give the same samples and groups.

    Args:
        slide: the open slide (with its mpp).
        annotations: regions and points in the slide's level-0 pixels.
        composition: the sample composition (its first zoom's patch is the tile).
        min_tissue: tissue share a tile needs to be a region's sample (0: glass too, so
            that a "background" region can be learnt).
        min_overlap: share of a tile that must lie inside a region.

    Warns:
        UserWarning: the first zoom's field of view is larger than the slide (most of each
            part is white padding; right for a patch-sized image, a mistake on a slide).

    """
    mpp = slide.require_mpp()
    width, height = slide.dimensions
    if composition.anchor_extent(mpp) > max(width, height):
        warnings.warn(
            f"the field of view ({composition.patch_size} px at "
            f"{composition.zooms[0]:g} µm/px: {composition.fields_um()[0]:g} µm) is larger "
            f"than {Path(str(slide.path)).name} ({width * mpp:.0f} x {height * mpp:.0f} µm): "
            "most of each sample is white padding; choose a smaller patch size "
            "(--patch-size, or 'patch px' in the panel) unless these are patch images.",
            stacklevel=2)
    tiles = _candidate_tiles(slide, annotations, composition, min_tissue)
    return samples_from_annotations(annotations, tiles, composition, mpp,
                                    min_overlap=min_overlap, source=str(slide.path))


def _candidate_tiles(slide: Any, annotations: Sequence[Annotation], composition: Composition,
                     min_tissue: float) -> Any:
    """The grid tiles regions may take: near the regions only when no tissue filter applies."""
    regions = [a.geometry for a in annotations if a.kind == REGION]
    if not regions:
        return np.zeros((0, 2), np.int64)
    if min_tissue > 0:
        return tile_grid(slide, composition.patch_size, composition.zooms[0],
                         min_tissue=min_tissue)
    bounds = shapely.total_bounds(np.asarray(regions, dtype=object))
    return grid_tiles_within(slide, composition.patch_size, composition.zooms[0],
                             tuple(float(v) for v in bounds))


@dataclass(frozen=True)
class SamplePreview:
    """What annotations will yield, told while they are drawn (no pixel is read).

    Attributes:
        counts: samples per class (every class of the annotations, 0 included).
        tile_um: side of a tile in µm (a region must hold at least half a tile).
        regions_without_samples: regions that yield no sample (smaller than a tile).
        ambiguous: tiles left out for lying in overlapping regions of different classes.

    """

    counts: dict[str, int]
    tile_um: float
    regions_without_samples: list[Annotation]
    ambiguous: int


def preview_samples(slide: Any, annotations: Sequence[Annotation],
                    composition: Composition, *, min_overlap: float = 0.5) -> SamplePreview:
    """Count the samples annotations give on ``slide`` (the panel's rule: glass tiles too).

    The same samples :func:`slide_samples` makes with ``min_tissue=0``; geometry only, so
    it runs after every edit.
    """
    annotations = list(annotations)
    tiles = _candidate_tiles(slide, annotations, composition, 0.0)
    samples, empty, ambiguous = _collect(annotations, tiles, composition, slide.require_mpp(),
                                         min_overlap, str(slide.path))
    counts = dict.fromkeys(dict.fromkeys(a.label for a in annotations), 0)
    counts.update(samples.counts())
    return SamplePreview(counts, composition.patch_size * composition.zooms[0], empty,
                         ambiguous)
