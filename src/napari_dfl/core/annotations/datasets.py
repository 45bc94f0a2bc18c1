"""Labelled training data from the three forms users bring it in.

1. A slide and its QuPath GeoJSON: ``SLIDE:ANNOTATIONS.geojson``, or just ``SLIDE`` when
   ``<stem>.geojson`` (or ``<name>.geojson``) lies beside it. Regions yield the tissue tiles
   of the slide's grid inside them; points yield one sample centred on each.
2. A folder with one subfolder per class holding patch images; each image is a one-sample
   source centred in the image, grouped by the image file.
3. A CSV with header ``image,x,y,label``: image paths relative to the CSV, ``x, y`` pixel
   centres (level 0 for slides); each row is a sample, grouped by its image.

Each form becomes a list of :class:`LabelledSource` (one per slide or image) that the
training pipeline embeds source by source. Coordinates are validated against each image's
size; plain images without a pixel size get ``mpp`` or an assumed 0.5 um/px, said in one
warning. See ``docs/annotations.md``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_dfl.core.annotations.annotation import check_within, read_geojson
from napari_dfl.core.annotations.samples import SampleSet, slide_samples
from napari_dfl.core.errors import DFLError, MissingMppWarning
from napari_dfl.core.slides.factory import open_slide
from napari_dfl.core.slides.image import (
    DEFAULT_ASSUMED_MPP,
    ImageSlide,
    is_plain_image,
    probe_image,
)
from napari_dfl.core.slides.sampling import Composition, anchors_from_centres
from napari_dfl.core.slides.tiff import Slide

__all__ = ["DatasetError", "LabelledSource", "annotation_kinds", "dataset_summary",
           "load_dataset", "load_datasets"]

#: Files taken as patch images in a class folder (compared case-insensitively).
PATCH_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CSV_COLUMNS = ("image", "x", "y", "label")
#: A one-level TIFF at most this large on a side is a patch: its mpp may be assumed.
PATCH_MAX_SIDE = 4096
_GEOJSON_SUFFIXES = (".geojson", ".json")
_SHOWN = 5


class DatasetError(DFLError):
    """A dataset cannot be used as given; the message says what to change."""


@dataclass
class LabelledSource:
    """One slide or image with its labelled samples.

    Attributes:
        path: the slide or image file.
        samples: its samples (anchors in the file's level-0 pixels).
        mpp: the pixel size to open it with (``open_slide(path, mpp=mpp)``); None means
            the file's own.
        mpp_assumed: True when ``mpp`` is the assumed default, not a given value.

    """

    path: Path
    samples: SampleSet
    mpp: float | None = None
    mpp_assumed: bool = False

    def open(self) -> Slide | ImageSlide:
        """Open the source with the pixel size its samples were placed with."""
        return open_slide(self.path, mpp=self.mpp)


def _shown(items: Sequence[str]) -> str:
    more = f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _inspect(path: Path, mpp: float | None) -> tuple[tuple[int, int], float, float | None, bool]:
    """Size and pixel size of a source without decoding its pixels.

    A source without a recorded pixel size takes ``mpp``; without ``mpp``, plain images and
    patch-sized one-level TIFFs assume 0.5 um/px, while slides are refused (a wrong guess
    there would silently change the magnification of every sample).

    Returns ``(dimensions, mpp used, mpp to reopen with, assumed)``.
    """
    if is_plain_image(path):
        size = probe_image(path)
        used = DEFAULT_ASSUMED_MPP if mpp is None else mpp
        return size, used, used, mpp is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMppWarning)
        slide = Slide(path)
    with slide:
        if slide.mpp is not None:
            return slide.dimensions, slide.mpp, None, False
        if mpp is not None:
            return slide.dimensions, float(mpp), float(mpp), False
        file_levels = [level for level in slide.levels if not level.computed]
        if len(file_levels) == 1 and max(slide.dimensions) <= PATCH_MAX_SIDE:
            return slide.dimensions, DEFAULT_ASSUMED_MPP, DEFAULT_ASSUMED_MPP, True
        return slide.dimensions, slide.require_mpp(), None, False  # raises: says how to give it


# -- form 1: slide + GeoJSON --------------------------------------------------------------
def _split_spec(text: str) -> tuple[Path, Path] | None:
    """Find ``SLIDE:ANNOTATIONS.geojson`` in ``text`` (colons may occur in paths too)."""
    pairs = [(Path(text[:i]), Path(text[i + 1 :])) for i, ch in enumerate(text)
             if ch == ":" and i > 0 and text[i + 1 :].lower().endswith(_GEOJSON_SUFFIXES)]
    for left, right in pairs:
        if left.is_file():
            return left, right
    if pairs:
        raise DatasetError(f"{text}: slide {pairs[-1][0]} does not exist. Give "
                           "SLIDE:ANNOTATIONS.geojson with both files present.")
    return None


def _sibling_geojson(slide_path: Path) -> Path:
    names = [slide_path.stem + ".geojson", slide_path.name + ".geojson"]
    for name in names:
        if (slide_path.parent / name).is_file():
            return slide_path.parent / name
    raise DatasetError(
        f"{slide_path.name} has no annotations: expected {names[0]} beside it, or give the "
        f"file explicitly as {slide_path}:ANNOTATIONS.geojson."
    )


def _from_annotated_slide(slide_path: Path, geojson: Path, composition: Composition,
                          mpp: float | None, min_tissue: float, classes: Sequence[str] | None,
                          min_overlap: float) -> list[LabelledSource]:
    annotations = read_geojson(geojson, known_classes=classes)
    if not annotations:
        raise DatasetError(f"{geojson.name} holds no annotations; draw and classify regions "
                           "or points in QuPath and export them again.")
    _, slide_mpp, reopen_mpp, assumed = _inspect(slide_path, mpp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMppWarning)
        slide = open_slide(slide_path, mpp=reopen_mpp)
    if assumed:
        warnings.warn(
            f"{slide_path.name} does not record its pixel size; assuming {slide_mpp:g} "
            "microns per pixel. If that is wrong, give the real value with --mpp.",
            MissingMppWarning, stacklevel=4,
        )
    with slide:
        check_within(annotations, slide.dimensions, f"{geojson.name} (for {slide_path.name})")
        samples = slide_samples(slide, annotations, composition, min_tissue=min_tissue,
                                min_overlap=min_overlap)
    return [LabelledSource(slide_path, samples, reopen_mpp, assumed)]


# -- form 2: class folders ----------------------------------------------------------------
def _visible_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in PATCH_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _from_folder(folder: Path, composition: Composition,
                 mpp: float | None) -> list[LabelledSource]:
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    loose = [p.name for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in PATCH_SUFFIXES]
    if not class_dirs:
        if loose:
            raise DatasetError(
                f"{folder} holds images but no class subfolders: put each class's images in "
                f"a subfolder named after the class, e.g. {folder / 'tumor'}/patch1.png."
            )
        raise DatasetError(f"{folder} is empty: expected one subfolder per class holding patch "
                           f"images ({', '.join(PATCH_SUFFIXES)}).")
    if loose:
        warnings.warn(f"{len(loose)} image(s) directly in {folder} belong to no class and are "
                      f"ignored: {_shown(loose)}.", stacklevel=4)
    sources, empty, assumed, sizes = [], [], 0, []
    for class_dir in class_dirs:
        images = _visible_images(class_dir)
        if not images:
            empty.append(class_dir.name)
        for image in images:
            (w, h), used, reopen, was_assumed = _inspect(image, mpp)
            anchor = anchors_from_centres(np.array([[w / 2, h / 2]]), composition, used)
            samples = SampleSet(anchor, [class_dir.name], [str(image)], str(image))
            sources.append(LabelledSource(image, samples, reopen, was_assumed))
            assumed += was_assumed
            sizes.append(max(w, h) * used)
    if empty:
        raise DatasetError(f"class folder(s) {_shown(empty)} in {folder} hold no images "
                           f"({', '.join(PATCH_SUFFIXES)}); add images or remove the folder.")
    _warn_assumed(assumed, len(sources), str(folder))
    _warn_context(composition, float(np.median(sizes)))
    return sources


def _warn_assumed(assumed: int, total: int, where: str) -> None:
    if assumed:
        warnings.warn(
            f"{assumed} of {total} images in {where} do not record their pixel size; assuming "
            f"{DEFAULT_ASSUMED_MPP:g} microns per pixel (x20). If that is wrong, give the real "
            "value with --mpp (CLI) or the mpp field (GUI).",
            MissingMppWarning, stacklevel=5,
        )


def _warn_context(composition: Composition, image_microns: float) -> None:
    widest = max(composition.zooms) * composition.patch_size
    if widest > 1.5 * image_microns:
        warnings.warn(
            f"the patch images span about {image_microns:.0f} um but the "
            f"{max(composition.zooms):g} um/px patch spans {widest:.0f} um: most of it will be "
            "white padding. For patch datasets one zoom (e.g. --zooms 0.5) is usually right.",
            stacklevel=5,
        )


# -- form 3: CSV of points ----------------------------------------------------------------
def _csv_rows(path: Path) -> list[tuple[int, str, float, float, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path.name} is not UTF-8 text (byte {exc.start}); save it as "
                           "CSV (UTF-8).") from exc
    header = text.split("\n", 1)[0]
    delimiter = next((d for d in ",;\t" if d in header), ",")
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    found = [(name or "").strip().lower() for name in (reader.fieldnames or [])]
    missing = [c for c in CSV_COLUMNS if c not in found]
    if not found:
        raise DatasetError(f"{path.name} is empty; expected a header {','.join(CSV_COLUMNS)} "
                           "and one row per sample.")
    if missing:
        raise DatasetError(
            f"{path.name} lacks column(s) {', '.join(missing)}; found: {', '.join(found)}; "
            f"required: {', '.join(CSV_COLUMNS)} (names in the first row)."
        )
    reader.fieldnames = found
    rows = []
    for row in reader:
        values = {c: (row.get(c) or "").strip() for c in CSV_COLUMNS}
        if not any(values.values()):
            continue
        line = reader.line_num
        for column in ("image", "label"):
            if not values[column]:
                raise DatasetError(f"{path.name}, line {line}: the {column} is empty.")
        coords = []
        for column in ("x", "y"):
            try:
                number = float(values[column])
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise DatasetError(f"{path.name}, line {line}: {column} {values[column]!r} is "
                                   "not a number of pixels.")
            coords.append(number)
        rows.append((line, values["image"], coords[0], coords[1], values["label"]))
    return rows


def _from_csv(path: Path, composition: Composition, mpp: float | None,
              missing_images: str) -> list[LabelledSource]:
    rows = _csv_rows(path)
    if not rows:
        raise DatasetError(f"{path.name} has a header but no rows.")
    by_image: dict[str, list[tuple[int, float, float, str]]] = {}
    for line, image, x, y, label in rows:
        by_image.setdefault(image, []).append((line, x, y, label))
    folder = path.parent
    missing = [name for name in by_image if not (folder / name).is_file()]
    if missing:
        n_rows = sum(len(by_image[name]) for name in missing)
        text = (f"{len(missing)} of {len(by_image)} images listed in {path.name} do not exist "
                f"(paths are relative to {folder}): {_shown(missing)}")
        if missing_images != "skip":
            raise DatasetError(f"{text}. Fix the paths, or skip their {n_rows} rows with "
                               "missing_images='skip'.")
        warnings.warn(f"{text}; their {n_rows} rows are skipped.", stacklevel=4)
    sources, assumed = [], 0
    for name, items in by_image.items():
        if name in missing:
            continue
        image = folder / name
        (w, h), used, reopen, was_assumed = _inspect(image, mpp)
        points = np.array([(x, y) for _, x, y, _ in items], dtype=np.float64)
        outside = [(line, x, y) for line, x, y, _ in items if not (0 <= x <= w and 0 <= y <= h)]
        if outside:
            line, x, y = outside[0]
            more = f" (and {len(outside) - 1} more rows)" if len(outside) > 1 else ""
            raise DatasetError(
                f"{path.name}, line {line}: point ({x:g}, {y:g}) lies outside {name} "
                f"({w} x {h} px){more}. x and y are pixels of that image (level 0 for a "
                "slide), x to the right and y down."
            )
        anchors = anchors_from_centres(points, composition, used)
        labels = [label for *_, label in items]
        samples = SampleSet(anchors, labels, [str(image)] * len(items), str(image))
        sources.append(LabelledSource(image, samples, reopen, was_assumed))
        assumed += was_assumed
    _warn_assumed(assumed, len(sources), path.name)
    return sources


# -- entry points -------------------------------------------------------------------------
def annotation_kinds(specs: Sequence[str | os.PathLike]) -> set[str]:
    """What the datasets annotate, without cutting samples: ``point``, ``region``, ``tile``.

    A CSV holds points; a folder of class subfolders holds tiles; an annotated slide holds
    the kinds of its GeoJSON's annotations. A spec that cannot be read adds nothing (loading
    it later says what is wrong).
    """
    kinds: set[str] = set()
    for spec in specs:
        text = os.fspath(spec)
        path = Path(text)
        if path.is_dir():
            kinds.add("tile")
        elif path.is_file() and path.suffix.lower() == ".csv":
            kinds.add("point")
        else:
            try:
                pair = (path, _sibling_geojson(path)) if path.is_file() else _split_spec(text)
                if pair is not None:
                    kinds.update(a.kind for a in read_geojson(pair[1]))
            except DFLError:
                continue
    return kinds


def _load(spec: str | os.PathLike, composition: Composition, mpp: float | None,
          min_tissue: float, classes: Sequence[str] | None, min_overlap: float,
          missing_images: str) -> list[LabelledSource]:
    if mpp is not None and not (mpp > 0 and math.isfinite(mpp)):
        raise DatasetError(f"mpp must be a positive number of microns per pixel, got {mpp}.")
    if missing_images not in ("error", "skip"):
        raise DatasetError(f"missing_images must be 'error' or 'skip', got {missing_images!r}.")
    text = os.fspath(spec)
    path = Path(text)
    if path.is_dir():
        sources = _from_folder(path, composition, mpp)
    elif path.is_file() and path.suffix.lower() == ".csv":
        sources = _from_csv(path, composition, mpp, missing_images)
    elif path.is_file() and path.suffix.lower() in _GEOJSON_SUFFIXES:
        raise DatasetError(f"{path.name} is an annotation file; give its slide too, as "
                           f"SLIDE:{path}.")
    elif path.is_file():
        sources = _from_annotated_slide(path, _sibling_geojson(path), composition, mpp,
                                        min_tissue, classes, min_overlap)
    elif (pair := _split_spec(text)) is not None:
        sources = _from_annotated_slide(*pair, composition, mpp, min_tissue, classes,
                                        min_overlap)
    else:
        raise DatasetError(
            f"{text}: no such file or folder. A dataset is a slide (with <stem>.geojson beside "
            "it), SLIDE:ANNOTATIONS.geojson, a folder of class subfolders, or a CSV."
        )
    if classes is not None:
        _check_classes(sources, classes, text)
    return sources


def _check_classes(sources: list[LabelledSource], classes: Sequence[str], spec: str) -> None:
    known = {str(c) for c in classes}
    found = {label for s in sources for label in s.samples.counts()}
    unknown = sorted(found - known)
    if unknown:
        raise DatasetError(f"{spec}: unknown class(es) {', '.join(unknown)}; known classes: "
                           f"{', '.join(sorted(known))}.")


def _validate(sources: list[LabelledSource], what: str) -> list[LabelledSource]:
    counts = dataset_summary(sources)["classes"]
    if not counts:
        raise DatasetError(f"{what} yields no samples: check that the annotations lie on "
                           "tissue (or lower min_tissue) and that files are not empty.")
    if len(counts) == 1:
        (label, n), = counts.items()
        raise DatasetError(f"{what} has only one class, '{label}' ({n} samples); a classifier "
                           "needs at least two. Annotate another class too.")
    single = [label for label, n in counts.items() if n < 2]
    if single:
        raise DatasetError(f"{what}: class(es) {', '.join(repr(s) for s in single)} have only "
                           "one sample; give each class at least two (more for validation) "
                           "or remove it.")
    return sources


def load_dataset(spec: str | os.PathLike, *, composition: Composition,
                 mpp: float | None = None, min_tissue: float = 0.5,
                 classes: Sequence[str] | None = None, min_overlap: float = 0.5,
                 missing_images: str = "error") -> list[LabelledSource]:
    """Load one dataset, in any of the three forms, as labelled sources.

    Args:
        spec: ``SLIDE:ANNOTATIONS.geojson``, a slide with ``<stem>.geojson`` beside it, a
            folder of class subfolders, or a CSV ``image,x,y,label``.
        composition: the sample composition the embeddings will use (anchors depend on it).
        mpp: microns per pixel for sources that record none (plain images always; slides
            without metadata). A slide's own value is never overridden. Plain images
            without ``mpp`` assume 0.5 with a :class:`MissingMppWarning`.
        min_tissue: tissue fraction of the tiles annotated regions may yield.
        classes: when given, other classes are refused.
        min_overlap: share of a tile that must lie inside a region.
        missing_images: ``"error"`` (default) refuses a CSV naming files that do not exist;
            ``"skip"`` leaves their rows out with a warning.

    Returns:
        One :class:`LabelledSource` per slide or image.

    Raises:
        DatasetError: the dataset is unusable (missing files or columns, bad numbers, one
            class, a class with one sample...). Annotation and slide problems raise
            ``AnnotationError`` and ``SlideError``; all are ``DFLError``.

    """
    sources = _load(spec, composition, mpp, min_tissue, classes, min_overlap, missing_images)
    return _validate(sources, os.fspath(spec))


def load_datasets(specs: Sequence[str | os.PathLike], **options) -> list[LabelledSource]:
    """Load several datasets (any forms) and validate their union as one training set.

    Takes the keyword options of :func:`load_dataset`; ``composition`` is required.
    """
    if not specs:
        raise DatasetError("no dataset given.")
    composition = options.pop("composition")
    keys = ("mpp", "min_tissue", "classes", "min_overlap", "missing_images")
    unknown = set(options) - set(keys)
    if unknown:
        raise TypeError(f"unexpected options: {', '.join(sorted(unknown))}")
    defaults = {"mpp": None, "min_tissue": 0.5, "classes": None, "min_overlap": 0.5,
                "missing_images": "error"}
    defaults.update(options)
    sources = []
    for spec in specs:
        sources += _load(spec, composition, *(defaults[k] for k in keys))
    return _validate(sources, " + ".join(os.fspath(s) for s in specs))


def dataset_summary(sources: Sequence[LabelledSource]) -> dict:
    """A JSON-serialisable summary: sources, samples, per-class counts, groups, assumed mpp."""
    counts: dict[str, int] = {}
    groups = set()
    for source in sources:
        for label, n in source.samples.counts().items():
            counts[label] = counts.get(label, 0) + n
        groups.update(source.samples.groups.tolist())
    return {
        "sources": len(sources),
        "samples": int(sum(counts.values())),
        "classes": dict(sorted(counts.items())),
        "groups": len(groups),
        "mpp_assumed": sum(s.mpp_assumed for s in sources),
    }
