"""Slide-level jobs: compress stores, train a slide model on a cohort, predict slides.

The CLI's ``compress``, ``train-slides`` and ``predict-slides`` and the panel's *Train slide
model* and *Predict this slide* call these; a slide that cannot be used is reported and the
others go on. A cohort trains a classifier (its ``label`` column) or a multi-target model
(numeric and binary target columns, :func:`train_target_cohort`), whose folder also holds
the cross-validated metrics per target of the MIL model and the pooled baseline
(:func:`write_target_model`).

The panel trains through :func:`train_slides_job`: the same :func:`train_cohort` /
:func:`train_target_cohort` the CLI runs (same defaults, same seed, hence the same model),
as a job that yields one ``("epoch", SlideEpoch)`` event per epoch of every fit and stops
between epochs when cancelled. :func:`results_text` writes its cross-validated figures
with their sample sizes and 95 % intervals.
"""

from __future__ import annotations

import csv
import os
import queue
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_dfl.core.errors import Cancelled, DFLError
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.features.store_folder import find_store, slide_name, store_extractor
from napari_dfl.core.slide_level.cohort import read_cohort
from napari_dfl.core.slide_level.config import MILConfig, MILError
from napari_dfl.core.slide_level.grids import (
    compress_store,
    grid_placement,
    pca_rgb,
    save_compressed,
)
from napari_dfl.core.slide_level.intervals import auc_interval, pearson_interval, wilson_interval
from napari_dfl.core.slide_level.prediction import (
    SlideLabelPrediction,
    SlidePredictionError,
    grid_embeddings,
    predict_slide_label,
    slide_tiles,
)
from napari_dfl.core.slides.tissue import TileGrid
from napari_dfl.core.util.atomic import atomic_path, write_json
from napari_dfl.workflows.embedding.local import CancelCheck, Embedder
from napari_dfl.workflows.jobs import Event, as_events

if TYPE_CHECKING:  # torch: the panel imports this module when it opens
    from napari_dfl.core.slide_level.model import SlideModel, TargetSlideModel
    from napari_dfl.core.slide_level.targets import TargetCohort
    from napari_dfl.core.slide_level.training import FitCallback, FitProgress

__all__ = [
    "SlideEpoch",
    "SlideTargetPrediction",
    "TrainedSlides",
    "cohort_columns",
    "compare_target_runs",
    "compress_stores",
    "draw_cv_figure",
    "predict_open_slide",
    "predict_stores",
    "results_text",
    "safe_name",
    "split_targets",
    "train_cohort",
    "train_slides_job",
    "train_target_cohort",
    "write_slide_model",
    "write_target_model",
]

#: Files a multi-target model folder holds beside its weights and card.
METRICS_CSV, METRICS_PNG, OOF_CSV = "cv_metrics.csv", "cv_metrics.png", "cv_predictions.csv"

Report = Callable[[str, dict | None, str | None], None]


def safe_name(name: str) -> str:
    """A file name made of letters, digits, ``.``, ``_`` and ``-`` only."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "slide"


def compress_stores(paths: Sequence[str | os.PathLike], out: str | os.PathLike,
                    on_done: Report | None = None) -> int:
    """Compress each store into ``OUT/<slide>.npz`` and a PCA preview PNG; the failures."""
    from PIL import Image  # Pillow: only for the preview files

    out, failed = Path(out), 0
    for path in paths:
        try:
            slide = compress_store(EmbeddingStore.open(path))
        except DFLError as exc:
            failed += 1
            if on_done is not None:
                on_done(str(path), None, str(exc))
            continue
        stem = safe_name(Path(slide.name).stem)
        target = save_compressed(slide, out / f"{stem}.npz")
        with atomic_path(out / f"{stem}.pca.png") as tmp:
            Image.fromarray(pca_rgb(slide)).save(tmp, format="PNG")
        if on_done is not None:
            rows, cols, dim = slide.grid.shape
            on_done(str(path), {"tiles": int(slide.mask.sum()), "grid": [rows, cols, dim],
                                "tile_size": slide.tile_size, "file": str(target)}, None)
    return failed


def train_cohort(cohort_csv: str | os.PathLike, stores: str | os.PathLike,
                 config: MILConfig, *, folds: int = 5,
                 on_skipped: Callable[[str], None] | None = None,
                 progress: FitCallback | None = None) -> SlideModel:
    """Read the cohort, cross-validate, train on every slide; the trained model.

    Slides the cohort cannot use (no store, another extractor...) are passed to
    ``on_skipped`` and left out. ``progress`` sees every epoch of every fit.

    Raises:
        MILError: no slide of the cohort has a usable store, one class only, folds the
            cohort cannot fill.

    """
    from napari_dfl.core.slide_level.training import train_slide_model  # torch, when run

    entries, problems = read_cohort(cohort_csv, stores)
    for problem in problems:
        if on_skipped is not None:
            on_skipped(problem)
    if not entries:
        raise MILError(f"none of the slides of {Path(cohort_csv).name} has a usable store in "
                       f"{stores}: embed them there first (napari-dfl embed SLIDES --out "
                       "that folder) or choose the store folder that holds them.")
    labels = sorted({e.label for e in entries})
    if len(labels) < 2:
        raise MILError(f"every usable slide of {Path(cohort_csv).name} ({len(entries)}) has "
                       f"the label {labels[0]!r}: a slide classifier needs slides of at least "
                       "two classes. Add slides of another class.")
    return train_slide_model(entries, config, folds=folds, progress=progress)


def train_target_cohort(cohort_csv: str | os.PathLike, stores: str | os.PathLike,
                        config: MILConfig, *, targets: str | list[str] | None = None,
                        pattern: str | None = None, missing: str = "drop", folds: int = 5,
                        baseline: bool = True, with_max: bool = False,
                        on_skipped: Callable[[str], None] | None = None,
                        progress: FitCallback | None = None,
                        ) -> tuple[TargetSlideModel, dict | None, TargetCohort]:
    """Read the cohort's target columns, cross-validate MIL and baseline, train on all.

    Slides left out (no store...) and missing values dropped are passed to ``on_skipped``;
    ``progress`` sees every epoch of every MIL fit.

    Returns:
        ``(model, out-of-fold predictions or None, cohort)`` (see
        :func:`napari_dfl.core.slide_level.target_training.train_target_model`).

    Raises:
        MILError: bad target columns, no usable slide, folds the cohort cannot fill.

    """
    from napari_dfl.core.slide_level.target_training import train_target_model  # torch
    from napari_dfl.core.slide_level.targets import read_target_cohort

    cohort, problems = read_target_cohort(cohort_csv, stores, targets, pattern, missing)
    for problem in problems:
        if on_skipped is not None:
            on_skipped(problem)
    model, oof = train_target_model(cohort, config, folds=folds, baseline=baseline,
                                    with_max=with_max, progress=progress)
    return model, oof, cohort


def write_target_model(model: TargetSlideModel, out: str | os.PathLike,
                       cohort: TargetCohort | None = None, oof: dict | None = None
                       ) -> dict[str, Path]:
    """Save a multi-target model folder and, when cross-validated, its reports inside it.

    Beside ``weights.safetensors`` and ``model_card.json``: ``cv_metrics.csv`` (one row per
    target and method), ``cv_metrics.png`` (MIL against the baseline per target, and the
    best numeric target's out-of-fold fit) and ``cv_predictions.csv`` (per slide: each
    target's value and both methods' out-of-fold predictions).

    Returns:
        ``{"model": folder, "metrics_csv": ..., "plot": ..., "predictions_csv": ...}``
        (only the model without cross-validation).

    """
    from napari_dfl.core.slide_level.model_files import save_slide_model  # torch, when run
    from napari_dfl.core.slide_level.regression_metrics import (
        save_metrics_plot,
        write_metrics_csv,
    )

    folder = save_slide_model(model, out)
    written = {"model": folder}
    if not model.metrics or cohort is None or oof is None:
        return written
    written["metrics_csv"] = write_metrics_csv(model.metrics["rows"], folder / METRICS_CSV)
    written["plot"] = save_metrics_plot(model.metrics["rows"], cohort.values, oof["mil"],
                                        model.targets, folder / METRICS_PNG)
    names = [t.name for t in model.targets]
    columns = ["slide", "group"] + [f"{n}{suffix}" for n in names
                                    for suffix in ("", "_mil", "_baseline")]
    with atomic_path(folder / OOF_CSV) as tmp, \
            open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for i, entry in enumerate(cohort.entries):
            row: list = [entry.name, entry.group]
            for t in range(len(names)):
                base = oof["baseline"][i, t] if oof["baseline"] is not None else np.nan
                row += ["" if not np.isfinite(v) else f"{v:.6g}"
                        for v in (cohort.values[i, t], oof["mil"][i, t], base)]
            writer.writerow(row)
    written["predictions_csv"] = folder / OOF_CSV
    return written


def compare_target_runs(before: str | os.PathLike, after: str | os.PathLike,
                        method: str = "mil") -> dict:
    """Compare two multi-target runs (model folders or ``cv_metrics.csv`` files).

    See :func:`napari_dfl.core.slide_level.regression_metrics.compare_runs`: how many targets
    ``after`` improved over ``before``, with a paired Wilcoxon signed-rank test.
    """
    from napari_dfl.core.slide_level.regression_metrics import compare_runs, read_run_metrics

    return compare_runs(read_run_metrics(before, method), read_run_metrics(after, method))


def draw_cv_figure(trained: TrainedSlides, path: str | os.PathLike) -> Path | None:
    """Draw a trained slide model's cross-validation into a PNG, as ``train-slides`` does.

    A classifier: the out-of-fold confusion matrix and ROC curves; a multi-target model:
    each target's metric against the baseline's, and the best target's out-of-fold
    predictions. None when the model was not cross-validated.
    """
    model = trained.model
    if not model.metrics:
        return None
    if hasattr(model, "targets"):
        if trained.oof is None or trained.cohort is None:
            return None
        from napari_dfl.core.slide_level.regression_metrics import save_metrics_plot

        return save_metrics_plot(model.metrics["rows"], trained.cohort.values,
                                 trained.oof["mil"], model.targets, path)
    return _classifier_figure(model, path)


def _classifier_figure(model: SlideModel, path: str | os.PathLike) -> Path | None:
    """The out-of-fold confusion matrix and ROC curves of a cross-validated classifier."""
    if not model.metrics or model.out_of_fold is None:
        return None
    from napari_dfl.core.heads.plots import save_report_plots  # matplotlib, when run

    return save_report_plots(model.metrics, model.out_of_fold["proba"],
                             model.out_of_fold["y_true"], model.classes, path, curve="roc")


def write_slide_model(model: SlideModel, out: str | os.PathLike) -> Path:
    """Save a slide model folder (see :mod:`napari_dfl.core.slide_level.model_files`).

    A cross-validated classifier also gets ``cv_validation.png``: the out-of-fold confusion
    matrix and ROC curves (one class against the rest, with their AUC and n).
    """
    from napari_dfl.core.slide_level.model_files import save_slide_model  # torch, when run

    folder = save_slide_model(model, out)
    _classifier_figure(model, Path(folder) / "cv_validation.png")
    return folder


def _prediction_row(model: SlideModel | TargetSlideModel, proba: np.ndarray, name: str,
                    path: str | os.PathLike, n_tiles: int) -> dict:
    """One row of ``predictions.csv``: a class and its probabilities, or a value per target."""
    if not hasattr(model, "targets"):
        row = {"slide": name, "store": str(path),
               "prediction": model.classes[int(proba.argmax())], "n_tiles": n_tiles}
        row.update({f"p_{c}": float(p) for c, p in zip(model.classes, proba, strict=True)})
        return row
    row = {"slide": name, "store": str(path), "n_tiles": n_tiles}
    row.update({(f"pred_{t.name}" if t.name in row else t.name): float(v)
                for t, v in zip(model.targets, proba, strict=True)})
    return row


def predict_stores(model: SlideModel | TargetSlideModel, paths: Sequence[str | os.PathLike],
                   out: str | os.PathLike, on_done: Report | None = None) -> int:
    """Predict slides from their stores; write CSV, JSON and attention arrays; the failures.

    Writes ``predictions.csv`` and ``predictions.json`` (a classifier: the predicted class
    and ``p_<class>`` columns; a multi-target model: one column per target, its value in the
    target's units or the probability of 1 for a binary target) and
    ``attention/<slide>.npz`` (``attention`` and ``grid``; a multi-target model has one
    attention map per target, ``(T, N)`` and ``(T, rows, cols)``, named by ``targets``).
    """
    out = Path(out)
    (out / "attention").mkdir(parents=True, exist_ok=True)
    rows, failed = [], 0
    per_target = hasattr(model, "targets")
    for path in paths:
        try:
            store = EmbeddingStore.open(path)
            found = store_extractor(store)
            differences = model.extractor.differences(found) if model.extractor else []
            if differences or store.dim != len(model.mean):
                raise SlidePredictionError(
                    f"{path} was embedded with {found.describe()}, not the model's extractor "
                    f"({', '.join(differences) or 'another embedding size'}): embed it like "
                    "the training cohort.")
            proba, attention = model.predict_store(store)
        except DFLError as exc:
            failed += 1
            if on_done is not None:
                on_done(str(path), None, str(exc))
            continue
        name = slide_name(store)
        index, shape, tile = grid_placement(store)
        maps = attention.reshape(-1, len(store)).astype(np.float32)
        grid = np.full((len(maps), *shape), np.nan, np.float32)
        grid[:, index[:, 0], index[:, 1]] = maps
        arrays = {"coords": store.coords, "tile_size": np.float64(tile)}
        if per_target:
            arrays.update(attention=maps, grid=grid,
                          targets=np.array([t.name for t in model.targets], dtype=str))
        else:
            arrays.update(attention=maps[0], grid=grid[0])
        with atomic_path(out / "attention" / f"{safe_name(Path(name).stem)}.npz") as tmp, \
                open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        row = _prediction_row(model, proba, name, path, len(store))
        rows.append(row)
        if on_done is not None:
            on_done(str(path), row, None)
    if rows:
        with atomic_path(out / "predictions.csv") as tmp, \
                open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        write_json(out / "predictions.json", rows)
    return failed


@dataclass
class SlideTargetPrediction:
    """A multi-target slide model's prediction for one slide.

    Attributes:
        slide: the slide's file name.
        targets: target names in output order.
        kinds: each target's kind (``"numeric"`` or ``"binary"``).
        values: ``(T,)`` predictions: numeric targets in their units, binary ones P(1).
        attention: ``(T, N)`` attention of the grid's tiles, one map per target.
        grid: the tiles, in the order of ``attention``'s columns.

    """

    slide: str
    targets: list[str]
    kinds: list[str]
    values: np.ndarray
    attention: np.ndarray
    grid: TileGrid

    def attention_grid(self, target: int = 0, fill: float = np.nan) -> np.ndarray:
        """``(rows, cols)`` float32 attention of one target, ``fill`` off the tiles."""
        return self.grid.to_grid(self.attention[target].astype(np.float32),
                                 fill).astype(np.float32)

    def value_text(self, target: int) -> str:
        """``"2.31"`` (numeric) or ``"P(1) 0.84"`` (binary)."""
        value = float(self.values[target])
        return f"P(1) {value:.2f}" if self.kinds[target] == "binary" else f"{value:.3g}"


def _predict_targets(model: TargetSlideModel, store: EmbeddingStore, grid: TileGrid,
                     slide: str) -> SlideTargetPrediction:
    """:func:`predict_slide_label`'s checks and prediction, for a multi-target model."""
    values, attention = model.predict_embeddings(grid_embeddings(model, store, grid))
    return SlideTargetPrediction(slide, model.names, [t.kind for t in model.targets],
                                 np.asarray(values, np.float64),
                                 np.asarray(attention, np.float32).reshape(len(values), -1),
                                 grid)


def predict_open_slide(slide, model: SlideModel | TargetSlideModel, settings: Settings,
                       embedder: Embedder, cancel: CancelCheck | None = None,
                       ) -> Generator[Event, None, SlideLabelPrediction | SlideTargetPrediction]:
    """The panel's *Predict this slide*: find or complete the slide's store, then predict.

    The store of the model's extractor is looked up in the settings' store folder; tiles it
    lacks are embedded first (yielding ``("embedding", progress)``). A classifier gives a
    :class:`SlideLabelPrediction`, a multi-target model a :class:`SlideTargetPrediction`.
    """
    grid = slide_tiles(slide, settings.composition, settings.min_tissue)
    yield "grid", grid
    store = find_store(settings.stores, slide, model.extractor) if model.extractor else None
    store = store or embedder.known_store(slide)
    missing = grid.coords if store is None else grid.coords[store.missing(grid.coords)]
    if len(missing):
        store = yield from as_events("embedding", embedder.embed(slide, missing, cancel))
    if hasattr(model, "targets"):
        return _predict_targets(model, store, grid, Path(slide.path).name)
    return predict_slide_label(model, store, grid, Path(slide.path).name)


# -- training from the panel ------------------------------------------------------------------
#: Characters that make an item of the targets text a shell pattern.
_PATTERN_CHARS = frozenset("*?[")


def cohort_columns(cohort_csv: str | os.PathLike) -> list[str]:
    """The header of a cohort CSV, checked to be a cohort's (a ``slide`` column).

    Raises:
        MILError: the file cannot be read as UTF-8 CSV, has no header, or no ``slide``
            column; the message says what a cohort CSV holds.

    """
    path = Path(cohort_csv)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise MILError(f"{path.name} is not a cohort CSV ({reason}): choose a CSV with a "
                       "header slide,label[,group] (or slide[,group] and target "
                       "columns).") from None
    columns = [c.strip() for c in header]
    if "slide" not in columns:
        shown = ", ".join(columns[:6]) + (" ..." if len(columns) > 6 else "")
        raise MILError(f"{path.name} is not a cohort CSV: its header has no slide column "
                       f"(found {shown or 'nothing'}). A cohort CSV has a header "
                       "slide,label[,group] (or slide[,group] and target columns).")
    return columns


def split_targets(text: str) -> tuple[list[str], str | None]:
    """The panel's targets text ``"A, B"`` or ``"GENE_*"`` as ``(names, pattern)``.

    Raises:
        MILError: more than one shell pattern.

    """
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    patterns = [t for t in items if _PATTERN_CHARS & set(t)]
    if len(patterns) > 1:
        raise MILError(f"one pattern at a time in Targets ({', '.join(patterns)}): list the "
                       "other columns by name.")
    return [t for t in items if t not in patterns], (patterns[0] if patterns else None)


@dataclass(frozen=True)
class SlideEpoch:
    """One epoch of one fit of a slide model's training (the job's ``"epoch"`` event).

    Read like a tile head's training epoch (``epoch``, ``max_epochs``, ``train_loss``,
    ``val_loss``) by the panel's session, with the fold it belongs to.
    """

    fit: FitProgress

    @property
    def epoch(self) -> int:
        """The epoch of the current fit."""
        return self.fit.epoch

    @property
    def max_epochs(self) -> int:
        """The most epochs of a fit."""
        return self.fit.epochs

    @property
    def train_loss(self) -> float:
        """The epoch's mean training loss."""
        return self.fit.loss

    @property
    def val_loss(self) -> None:
        """Not reported per epoch (the card records the early-stopping history)."""
        return None

    def overall(self) -> tuple[int, int]:
        """``(epochs done, most epochs)`` over all the fits (the folds, then the final)."""
        fits = self.fit.n_folds + 1
        before = (self.fit.fold - 1) if self.fit.fold else self.fit.n_folds
        return before * self.fit.epochs + self.fit.epoch, fits * self.fit.epochs

    def describe(self) -> str:
        """``"fold 2 of 5: epoch 3 of at most 20, loss 0.412"``."""
        return (f"{self.fit.stage}: epoch {self.fit.epoch} of at most {self.fit.epochs}, loss "
                f"{self.fit.loss:.3f}")


@dataclass
class TrainedSlides:
    """A slide model trained on a cohort, and what training it said.

    Attributes:
        model: the classifier or the multi-target model (its ``metrics`` the
            cross-validation, None without folds).
        cohort_csv: the cohort it was trained on.
        skipped: slides left out (no store, another extractor...) and missing values.
        oof: out-of-fold predictions of a multi-target model (for its saved reports).
        cohort: the targets' cohort of a multi-target model.

    """

    model: SlideModel | TargetSlideModel
    cohort_csv: Path
    skipped: list[str] = field(default_factory=list)
    oof: dict | None = None
    cohort: TargetCohort | None = None


def _threaded(work: Callable[[Callable], object], cancel: CancelCheck | None,
              ) -> Generator[Event, None, object]:
    """Run ``work(report)`` in a thread, yielding its ``("epoch", SlideEpoch)`` events.

    ``report`` raises :class:`Cancelled` once ``cancel()`` is true (or the job was closed),
    so the training stops after its current epoch; what ``work`` raises is raised here.
    """
    events: queue.Queue = queue.Queue()
    closed = threading.Event()
    outcome: dict = {}

    def report(fit: FitProgress) -> None:
        if closed.is_set() or (cancel is not None and cancel()):
            raise Cancelled(f"slide training stopped at {fit.stage}, epoch {fit.epoch}: no "
                            "model was made; the slide model shown before is kept.")
        events.put(("epoch", SlideEpoch(fit)))

    def run_work() -> None:
        try:
            outcome["value"] = work(report)
        except BaseException as exc:  # handed to the job's thread, raised there
            outcome["error"] = exc
        finally:
            events.put(None)

    thread = threading.Thread(target=run_work, name="napari-dfl-slide-training", daemon=True)
    thread.start()
    try:
        while (event := events.get()) is not None:
            yield event
    finally:
        closed.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def train_slides_job(cohort_csv: str | os.PathLike, stores: str | os.PathLike,
                     config: MILConfig | None = None, *, folds: int = 5, targets: str = "",
                     cancel: CancelCheck | None = None,
                     ) -> Generator[Event, None, TrainedSlides]:
    """The panel's *Train slide model*: :func:`train_cohort` or :func:`train_target_cohort`.

    Args:
        cohort_csv: the cohort (``slide,label[,group]``, or target columns).
        stores: the folder of the slides' stores (the panel's store folder).
        config: training settings (default: the CLI's defaults, seed 0).
        folds: cross-validation folds (0: none), as ``train-slides --folds``.
        targets: empty for a classifier of the ``label`` column, else target columns by
            name and/or one shell pattern (``"A,B"``, ``"GENE_*"``), as ``--targets`` and
            ``--targets-from``.
        cancel: checked after every epoch; true stops the job (:class:`Cancelled`).

    Yields ``("epoch", SlideEpoch)`` after every epoch of every fit; returns the
    :class:`TrainedSlides`. The CLI's own calls with the same inputs give the same model.

    Raises:
        MILError: not a cohort CSV, no label column nor targets, bad target columns, no
            usable slide, one class, folds the cohort cannot fill.

    """
    config = MILConfig() if config is None else config
    columns = cohort_columns(cohort_csv)
    names, pattern = split_targets(targets)
    if not names and not pattern and "label" not in columns:
        others = [c for c in columns if c not in ("slide", "group")]
        raise MILError(f"{Path(cohort_csv).name} has no label column: name its target "
                       f"columns under Targets ({', '.join(others[:6]) or 'none found'}) or "
                       "add a label column for a classifier.")
    skipped: list[str] = []

    def work(report: FitCallback) -> TrainedSlides:
        if names or pattern:
            model, oof, cohort = train_target_cohort(
                cohort_csv, stores, config, targets=names, pattern=pattern, folds=folds,
                on_skipped=skipped.append, progress=report)
            return TrainedSlides(model, Path(cohort_csv), skipped, oof, cohort)
        model = train_cohort(cohort_csv, stores, config, folds=folds,
                             on_skipped=skipped.append, progress=report)
        return TrainedSlides(model, Path(cohort_csv), skipped)

    return (yield from _threaded(work, cancel))


def save_trained(trained: TrainedSlides, out: str | os.PathLike) -> Path:
    """Save a model trained by :func:`train_slides_job` as ``train-slides --out`` would."""
    if hasattr(trained.model, "targets"):
        return write_target_model(trained.model, out, trained.cohort, trained.oof)["model"]
    return write_slide_model(trained.model, out)


# -- results with their sample sizes and uncertainty ------------------------------------------
def _interval(bounds: tuple[float, float] | None) -> str:
    return "" if bounds is None else f" [CI {bounds[0]:.2f}-{bounds[1]:.2f}]"


def _classifier_text(model: SlideModel) -> list[str]:
    from napari_dfl.core.heads.metrics import metric_text

    m = model.metrics
    classes, confusion = m["classes"], np.asarray(m["confusion_matrix"], int)
    support = confusion.sum(1)
    auc = m.get("auc")
    auc_ci = (auc_interval(auc, int(support[1]), int(support[0]))
              if len(classes) == 2 else None)
    folds = [a for a in m.get("fold_auc") or [] if a is not None]
    spread = f"; folds {min(folds):.2f}-{max(folds):.2f}" if len(folds) > 1 else ""
    perfect = (" (perfect separation, no CI)"
               if auc_ci is None and auc in (0.0, 1.0) and len(classes) == 2 else "")
    lines = [f"AUC {metric_text(auc, 'one class')}{_interval(auc_ci)}{perfect}{spread}",
             f"balanced accuracy {metric_text(m.get('balanced_accuracy'))}; "
             f"{int(np.trace(confusion))} of {m['n']} slides right",
             "per class: slides, recall [CI] (right), precision"]
    width = max(len(c) for c in classes)
    for k, name in enumerate(classes):
        right, n = int(confusion[k, k]), int(support[k])
        per = m["per_class"][name]
        ci = wilson_interval(right, n)
        bounds = f" [{ci[0]:.2f}-{ci[1]:.2f}]" if ci else ""
        lines.append(f"  {name.ljust(width)}  n={n}  {metric_text(per.get('recall'))}"
                     f"{bounds} ({right}/{n})  {metric_text(per.get('precision'))}")
    return lines


def _targets_text(model: TargetSlideModel) -> list[str]:
    from napari_dfl.core.heads.metrics import metric_text
    from napari_dfl.core.slide_level.regression_metrics import format_table

    rows = model.metrics["rows"]
    lines = format_table(rows).splitlines()
    lines.append("MIL per target [CI]:")
    for row in (r for r in rows if r["method"] == "mil"):
        n = int(row["n"])
        if row["kind"] == "numeric":
            ci = pearson_interval(row.get("pearson_r"), n)
            lines.append(f"  {row['target']}: r {metric_text(row.get('pearson_r'), 'constant')}"
                         f"{_interval(ci)} (n={n})")
        else:
            pos = int(row.get("n_positive") or 0)
            ci = auc_interval(row.get("auc"), pos, n - pos)
            perfect = (" (perfect separation, no CI)"
                       if ci is None and row.get("auc") in (0.0, 1.0) else "")
            lines.append(f"  {row['target']}: AUC {metric_text(row.get('auc'), 'one class')}"
                         f"{_interval(ci)}{perfect} (n={n}, {pos} positive)")
    wins = model.metrics.get("wins")
    if wins:
        lines.append(f"per target: MIL better on {wins['mil']}, pooled baseline on "
                     f"{wins['baseline']}, tied or unscored {wins['tie']}")
    return lines


def results_text(model: SlideModel | TargetSlideModel, skipped: Sequence[str] = ()) -> str:
    """The cross-validated results of a slide model, as lines for people.

    A classifier: AUC (95 % interval by Hanley & McNeil for two classes, and the folds'
    range), balanced accuracy, and per class its slides ``n``, recall with its 95 % Wilson
    interval (and the slides right) and precision. A multi-target model: the metrics table
    of MIL and the pooled baseline per target
    (:func:`~napari_dfl.core.slide_level.regression_metrics.format_table`)
    and each target's 95 % interval (Fisher's z for r, Hanley & McNeil for AUC) with its
    ``n``. Then how many slides were left out, and the first reasons.
    """
    summary = model.summary or {}
    what = (f"{len(model.targets)} target(s)" if hasattr(model, "targets")
            else f"classes {', '.join(model.classes)}")
    lines = [f"Trained on {summary.get('n_slides', '?')} slides "
             f"({summary.get('n_groups', '?')} groups), {what}."]
    if not model.metrics:
        lines.append("No cross-validation (folds 0): no held-out figures.")
    else:
        lines.append(f"Cross-validated, {model.metrics['n_folds']} grouped folds "
                     "(held-out slides; CI: 95 %):")
        lines += (_targets_text(model) if hasattr(model, "targets")
                  else _classifier_text(model))
    stop = model.early_stopping or {}
    if stop.get("validation"):
        lines.append(f"Final model: best epoch {stop['best_epoch']} of {stop['epochs_run']} "
                     f"({stop['n_val_slides']} validation slides).")
    elif stop:
        lines.append(f"Final model: {stop.get('epochs_run')} epochs, no early stopping "
                     f"({stop.get('reason')}).")
    if skipped:
        lines.append(f"{len(skipped)} slide(s) or value(s) left out:")
        lines += [f"  {text}" for text in skipped[:5]]
        if len(skipped) > 5:
            lines.append(f"  ... and {len(skipped) - 5} more")
    return "\n".join(lines)
