"""The interactive session: the panel's state and actions, as a plain evented model (no Qt).

A :class:`Session` owns what a pathologist works on: the slide, the classes and which one is
active, the annotations, the settings, and the results (samples, head, tile prediction). It
starts the jobs (extract, train, predict, auto) through a job runner and applies their
events to its state. Every change is announced by a ``psygnal`` signal; the napari panel's
widgets and layers only lay out, forward user input to the session and redraw when a
signal says so. The same session runs headless, without Qt or napari, with
:class:`SyncRunner` (tests, scripts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from psygnal import Signal

from napari_dfl.core.annotations.annotation import Annotation
from napari_dfl.core.annotations.samples import SampleSet
from napari_dfl.core.errors import Cancelled, DFLError, one_line
from napari_dfl.core.features.preferred import load_preferred
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.heads.config import TrainConfig
from napari_dfl.core.heads.tile_prediction import TilePrediction
from napari_dfl.core.slides.factory import open_slide
from napari_dfl.core.slides.sample_slide import (
    SAMPLE_COMPOSITION,
    SAMPLE_PATCH,
    is_bundled_sample,
)
from napari_dfl.core.slides.sampling import TISSUE_COMPOSITION, default_composition
from napari_dfl.core.util.palette import class_colors, to_hex
from napari_dfl.workflows.embedding.local import CancelCheck, Embedder, LocalEmbedder
from napari_dfl.workflows.jobs import Event, run
from napari_dfl.workflows.labelled import extract_annotations
from napari_dfl.workflows.predict import predict_tiles, prediction_grid
from napari_dfl.workflows.train import TrainingResult, train_on_annotations

__all__ = ["JobState", "RemovedClass", "Runner", "Session", "SyncRunner", "annotation_counts",
           "plural"]

JobFactory = Callable[[CancelCheck], Generator[Event, None, Any]]
Outcome = Callable[[str, Any], None]


class Runner(Protocol):
    """Runs one job at a time and reports its events and outcome (see :class:`SyncRunner`)."""

    @property
    def busy(self) -> bool:
        """Whether a job is running."""

    def start(self, name: str, factory: JobFactory, on_event: Callable[[str, Any], None],
              on_outcome: Outcome) -> bool:
        """Start ``factory(cancel_check)``; False when a job already runs.

        ``on_event(kind, payload)`` gets every event and ``on_outcome(status, value)`` the end:
        ``("ok", result)``, ``("cancelled", Cancelled)`` or ``("error", exception)``.
        """

    def cancel(self) -> None:
        """Ask the running job to stop (between batches or epochs)."""


class SyncRunner:
    """Runs a job to its end at once, in the calling thread (headless sessions, tests)."""

    def __init__(self) -> None:
        self.busy = False
        self._cancelled = False

    def start(self, name: str, factory: JobFactory, on_event: Callable[[str, Any], None],
              on_outcome: Outcome) -> bool:
        """Run the job now; see :meth:`Runner.start`."""
        if self.busy:
            return False
        self.busy, self._cancelled = True, False
        try:
            outcome: tuple[str, Any] = ("ok", run(factory(lambda: self._cancelled), on_event))
        except Cancelled as exc:
            outcome = ("cancelled", exc)
        except Exception as exc:  # reported to the session like the panel's runner does
            outcome = ("error", exc)
        finally:
            self.busy = False
        on_outcome(*outcome)
        return True

    def cancel(self) -> None:
        """Cancel at the next check (only meaningful from within an event callback)."""
        self._cancelled = True


@dataclass(frozen=True)
class JobState:
    """What the running job is doing, for a progress display.

    Attributes:
        name: ``Extract``, ``Train``, ``Predict``, ``Auto``...
        stage: what it does now, e.g. ``embedding``, ``training``, ``predicting``.
        done: items done in this stage.
        total: items of this stage (0 when unknown).
        started: ``time.monotonic()`` when the stage started.

    """

    name: str
    stage: str = "starting"
    done: int = 0
    total: int = 0
    started: float = 0.0

    def eta_seconds(self) -> float | None:
        """Seconds left in this stage at the pace so far, when it can be told."""
        if not self.total or self.done <= 0 or self.done >= self.total:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed / self.done * (self.total - self.done)


def plural(count: int, noun: str) -> str:
    """``"1 region"``, ``"3 regions"``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def annotation_counts(annotations: Sequence[Annotation]) -> str:
    """``"3 regions, 1 point"``: how many regions and points."""
    regions = sum(a.kind == "region" for a in annotations)
    return f"{plural(regions, 'region')}, {plural(len(annotations) - regions, 'point')}"


@dataclass(frozen=True)
class RemovedClass:
    """A deleted class, kept so that its deletion can be undone (:meth:`Session.restore_class`).

    Attributes:
        name: the class.
        color: its ``#rrggbb``.
        position: its place in the class list (its key).
        annotations: its annotations when it was deleted.
        result: the head that knew the class (cleared with it), or None.
        prediction: that head's prediction (cleared with it), or None.
        when: ``time.time()`` of the deletion.

    """

    name: str
    color: str
    position: int
    annotations: tuple[Annotation, ...]
    result: TrainingResult | None = None
    prediction: TilePrediction | None = None
    when: float = 0.0

    def describe(self) -> str:
        """``"'dermis' (3 regions, 2 points)"``."""
        return f"'{self.name}' ({annotation_counts(self.annotations)})"


def _starting_settings() -> tuple[Settings, str]:
    """The built-in settings, or the user's choice (``napari-dfl select --apply``); a note."""
    try:
        preferred = load_preferred()
    except DFLError as exc:
        return Settings(), f"{exc} The built-in settings are used."
    if preferred is None:
        return Settings(), ""
    return (preferred.apply_to(Settings()),
            f"Settings chosen on your labels by napari-dfl select: {preferred.describe()}.")


class Session:
    """The state of one panel and the actions on it (see the module docstring).

    Args:
        runner: runs jobs (default :class:`SyncRunner`; the panel gives a Qt one).
        embedder: makes the embedder for settings (default: in this process; the panel
            uses the extraction child).

    """

    slide_changed = Signal(object)
    classes_changed = Signal()
    active_class_changed = Signal(object)
    class_renamed = Signal(str, str)
    class_removed = Signal(str)
    class_trashed = Signal(object)
    annotations_changed = Signal()
    annotations_added = Signal(object)
    annotations_replaced = Signal(object)
    settings_changed = Signal(object)
    samples_changed = Signal(object)
    head_changed = Signal(object)
    prediction_started = Signal(object)
    prediction_updated = Signal(object, object)
    prediction_finished = Signal(object)
    status_changed = Signal(str)
    message = Signal(str, str)
    job_changed = Signal(object)

    def __init__(self, runner: Runner | None = None,
                 embedder: Callable[[Settings], Embedder] | None = None) -> None:
        self.runner: Runner = runner if runner is not None else SyncRunner()
        self._make_embedder = embedder or LocalEmbedder
        self._slide = None
        self._opened: dict[tuple, Any] = {}
        self._colors: dict[str, str] = {}
        self._active: str | None = None
        self._annotations: list[Annotation] = []
        self._settings, self.status = _starting_settings()
        #: The composition was set by the user, a project or a kept choice: keep it.
        self._composition_chosen = self._settings.composition != TISSUE_COMPOSITION
        self.samples: SampleSet | None = None
        self.result: TrainingResult | None = None
        self.prediction: TilePrediction | None = None
        self.job: JobState | None = None
        #: Deleted classes, the latest last (:meth:`restore_class` undoes a deletion).
        self.trash: list[RemovedClass] = []

    def disconnect_all(self) -> None:
        """Disconnect every listener (the panel closing: its widgets must not be called)."""
        for name in dir(type(self)):
            if isinstance(getattr(type(self), name, None), Signal):
                getattr(self, name).disconnect()

    # -- messages ----------------------------------------------------------------------
    def say(self, text: str) -> None:
        """Set the one-line status (what happened, what to do next)."""
        self.status = text
        self.status_changed.emit(text)

    def tell(self, level: str, text: str) -> None:
        """A message for the user (``info``, ``warning``, ``error``); also the status."""
        self.say(text)
        self.message.emit(level, text)

    # -- slide ---------------------------------------------------------------------------
    @property
    def slide(self):
        """The slide worked on, opened with the settings' µm/px when the file has none."""
        return self._slide

    def set_slide(self, slide) -> None:
        """Work on ``slide`` (an open slide reader, or None).

        On the bundled sample, default settings become the demo's (112 px tiles: the sample
        is a small region), so the panel and ``napari-dfl demo`` agree.
        """
        if slide is self._slide:
            return
        self._slide = slide
        self.samples = None
        self.slide_changed.emit(slide)
        if slide is not None and is_bundled_sample(slide.path) and \
                self._settings.composition == TISSUE_COMPOSITION:
            self.set_settings(self._settings.with_(composition=SAMPLE_COMPOSITION))
            self.say(f"The sample slide is a small region: tiles of {SAMPLE_PATCH} px and "
                     "the x5 context centred on each, as in napari-dfl demo (224 px tiles "
                     "would leave its demo regions too few samples).")

    def working_slide(self):
        """The slide with a pixel size, ready for a job.

        Raises:
            DFLError: no slide, or no µm/px known (the message says where to give it).

        """
        slide = self._slide
        if slide is None:
            raise DFLError("no slide: open a whole-slide image with napari-dfl's reader "
                           "(File > Open) or its sample, then pick it in the panel.")
        if slide.mpp is not None and self._settings.mpp is None:
            return slide
        mpp = self._settings.mpp or slide.mpp
        if mpp is None:
            raise DFLError(f"{Path(slide.path).name} does not record its pixel size: give "
                           "its µm/px in the panel's field (0.25 is typical at x40, 0.5 at "
                           "x20), then try again.")
        if slide.mpp is not None and abs(slide.mpp - mpp) < 1e-9:
            return slide
        key = (str(slide.path), mpp)
        if key not in self._opened:  # the slide reopened once per pixel size given
            self._opened[key] = open_slide(slide.path, mpp=mpp)
        return self._opened[key]

    # -- classes -------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        """Class names, in the panel's order (keys 1-9 pick the first nine)."""
        return list(self._colors)

    @property
    def colors(self) -> dict[str, str]:
        """``{class: "#rrggbb"}``."""
        return dict(self._colors)

    @property
    def active(self) -> str | None:
        """The class new annotations get."""
        return self._active

    def add_class(self, name: str, color: str | None = None) -> bool:
        """Add a class and make it active; False when the name is empty or taken."""
        name = str(name).strip()
        if not name or name in self._colors:
            return False
        self._colors[name] = to_hex(color) if color else \
            class_colors([*self._colors, name], self._colors)[name]
        self.classes_changed.emit()
        self.set_active(name)
        return True

    def rename_class(self, old: str, new: str) -> bool:
        """Rename a class (its annotations follow); False when ``new`` is empty or taken."""
        new = str(new).strip()
        if old not in self._colors or not new or new in self._colors:
            return False
        self._colors = {(new if k == old else k): v for k, v in self._colors.items()}
        self._annotations = [replace(a, label=new) if a.label == old else a
                             for a in self._annotations]
        if self._active == old:
            self._active = new
        self.class_renamed.emit(old, new)
        self.classes_changed.emit()
        self.annotations_changed.emit()
        return True

    def set_color(self, name: str, color: str) -> None:
        """Recolour a class."""
        if name in self._colors:
            self._colors[name] = to_hex(color)
            self.classes_changed.emit()

    def remove_class(self, name: str) -> list[Annotation]:
        """Delete a class and its annotations; returns the annotations removed.

        The class goes to :attr:`trash` (``class_trashed`` says so; the panel writes it to
        disk) and :meth:`restore_class` brings it back. A head that knew the class and its
        prediction are cleared with it: they would go on showing a class that is gone.
        Refused while a job runs (it may be training on the class).
        """
        if name not in self._colors:
            return []
        if self.busy:
            self.tell("warning", f"'{name}' was not deleted: a job is running; wait for it "
                                 "or cancel it, then delete again.")
            return []
        removed = [a for a in self._annotations if a.label == name]
        knew = self.result is not None and name in self.result.head.classes
        entry = RemovedClass(name, self._colors[name], self.classes.index(name),
                             tuple(removed), self.result if knew else None,
                             self.prediction if knew else None, time.time())
        self.trash.append(entry)
        del self._colors[name]
        self._annotations = [a for a in self._annotations if a.label != name]
        if self._active == name:
            self._active = next(iter(self._colors), None)
        self.class_removed.emit(name)
        self.class_trashed.emit(entry)
        self.classes_changed.emit()
        self.active_class_changed.emit(self._active)
        self.annotations_changed.emit()
        if knew:
            self.prediction = None
            self.set_result(None)
        return removed

    def restore_class(self, entry: RemovedClass | None = None) -> bool:
        """Undo a deletion (the latest by default): the class, its colour, place and annotations.

        The head and prediction cleared with it come back too when no other head was set
        since. Annotations of a class of the same name created meanwhile are kept beside the
        restored ones. False when there is nothing to restore.
        """
        if entry is None:
            if not self.trash:
                return False
            entry = self.trash[-1]
        if entry not in self.trash:
            return False
        self.trash.remove(entry)
        if entry.name not in self._colors:
            items = list(self._colors.items())
            items.insert(min(entry.position, len(items)), (entry.name, entry.color))
            self._colors = dict(items)
            self.classes_changed.emit()
        self.set_active(entry.name)
        if entry.annotations:
            self.add_annotations(entry.annotations)
        if entry.result is not None and self.result is None:
            self.set_result(entry.result)
            if entry.prediction is not None:
                self.set_prediction(entry.prediction)
        self.say(f"Restored {entry.describe()}.")
        return True

    def set_active(self, name_or_index: str | int) -> None:
        """Make a class active, by name or by 0-based position (keys 1-9)."""
        names = self.classes
        name = names[name_or_index] if isinstance(name_or_index, int) and \
            0 <= name_or_index < len(names) else name_or_index
        if name in self._colors and name != self._active:
            self._active = name
            self.active_class_changed.emit(name)

    # -- annotations -----------------------------------------------------------------------
    @property
    def annotations(self) -> list[Annotation]:
        """The annotations of the slide, in level-0 pixels."""
        return list(self._annotations)

    def set_annotations(self, annotations: Sequence[Annotation]) -> None:
        """Replace the annotations (the annotation layers call this after every edit)."""
        annotations = list(annotations)
        if annotations == self._annotations:
            return
        self._annotations = annotations
        self.annotations_changed.emit()

    def add_annotations(self, annotations: Sequence[Annotation]) -> None:
        """Add annotations (a GeoJSON, a labelled suggestion); unknown classes are created."""
        annotations = self._with_classes(annotations)
        self._annotations.extend(annotations)
        self.annotations_added.emit(annotations)
        self.annotations_changed.emit()

    def replace_annotations(self, annotations: Sequence[Annotation]) -> None:
        """Replace every annotation (a project opened); unknown classes are created."""
        annotations = self._with_classes(annotations)
        self._annotations = annotations
        self.annotations_replaced.emit(annotations)
        self.annotations_changed.emit()

    def _with_classes(self, annotations: Sequence[Annotation]) -> list[Annotation]:
        """The annotations as a list, after creating the classes the session lacks."""
        annotations = list(annotations)
        for label in dict.fromkeys(a.label for a in annotations):
            if label not in self._colors:
                self.add_class(label)
        return annotations

    # -- settings --------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        """The extractor, store folder and run settings."""
        return self._settings

    def set_settings(self, settings: Settings) -> None:
        """Change the settings (the head keeps its own extractor; Predict checks them)."""
        if settings != self._settings:
            if settings.composition != self._settings.composition:
                self._composition_chosen = True
            self._settings = settings
            self.settings_changed.emit(settings)

    def _fit_field_to_annotations(self) -> None:
        """Points alone, on the built-in composition: cell-sized fields (once, and said).

        The measured default for cells (:func:`default_composition`); a composition the
        user or a project chose is never changed.
        """
        if self._composition_chosen or not self._annotations:
            return
        fitted = default_composition({a.kind for a in self._annotations})
        if fitted != self._settings.composition:
            self.set_settings(self._settings.with_(composition=fitted))
            self.tell("info", f"Points only: cell-sized fields of {fitted.patch_size} px "
                      f"({fitted.fields_um()[0]:g} µm at x20) with their x5 context centred, "
                      "the default for cells; set 'patch px' to 224 (and the x5 context to "
                      "nearest) for the tissue default.")

    def embedder(self) -> Embedder:
        """An embedder for the current settings."""
        return self._make_embedder(self._settings)

    # -- results ---------------------------------------------------------------------------
    @property
    def head(self):
        """The trained head, or None."""
        return None if self.result is None else self.result.head

    def set_result(self, result: TrainingResult | None) -> None:
        """Use a trained head (from Train, or a project)."""
        self.result = result
        self.head_changed.emit(result)

    def set_prediction(self, prediction: TilePrediction | None) -> None:
        """Show a finished prediction (a project's, say)."""
        self.prediction = prediction
        if prediction is not None:
            self.prediction_started.emit(prediction)
            self.prediction_finished.emit(prediction)

    # -- jobs ----------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Whether a job runs."""
        return self.job is not None

    def cancel(self) -> None:
        """Cancel the running job (what it finished is kept)."""
        if self.job is not None:
            self.runner.cancel()

    def _start(self, name: str, factory: JobFactory,
               on_done: Callable[[Any], None] | None = None) -> bool:
        if self.busy:
            self.tell("info", f"{self.job.name} is still running: wait for it or press Cancel.")
            return False
        self._set_job(JobState(name, started=time.monotonic()))

        def outcome(status: str, value: Any) -> None:
            self._set_job(None)
            if status == "ok":
                if on_done is not None:
                    on_done(value)
            elif status == "cancelled":
                self.tell("info", f"{name} cancelled: {one_line(value)}")
            elif isinstance(value, DFLError):
                self.tell("error", f"{name}: {one_line(value)}")
            else:
                self.tell("error", f"{name} failed: {one_line(value)}")

        started = self.runner.start(name, factory, self._on_event, outcome)
        if not started and self.job is not None and self.job.name == name:
            self._set_job(None)
        return started

    def _set_job(self, job: JobState | None) -> None:
        self.job = job
        self.job_changed.emit(job)

    def _ready(self) -> tuple[Any, Settings, list[Annotation], Embedder] | None:
        """What a job takes: the slide, the settings, the annotations and an embedder.

        None after telling the user what is missing (a slide, its pixel size).
        """
        try:
            slide = self.working_slide()
        except DFLError as exc:
            self.tell("error", str(exc))
            return None
        self._fit_field_to_annotations()
        return slide, self._settings, self.annotations, self.embedder()

    def extract(self) -> bool:
        """Embed the samples of the annotations in the background; False if not started."""
        ready = self._ready()
        if ready is None:
            return False
        if not self._annotations:
            self.tell("warning", "nothing to extract: draw regions or points with a class "
                      "first.")
            return False
        slide, settings, annotations, embedder = ready
        return self._start(
            "Extract", lambda cancel: extract_annotations(slide, annotations, settings,
                                                          embedder, cancel),
            lambda samples: self.say(f"Extracted {len(samples)} samples."))

    def train(self, config: TrainConfig | None = None) -> bool:
        """Embed what is missing, then train a head in the background."""
        ready = self._ready()
        if ready is None:
            return False
        slide, settings, annotations, embedder = ready
        config = config or TrainConfig()
        return self._start(
            "Train", lambda cancel: train_on_annotations(slide, annotations, settings, config,
                                                         embedder, cancel),
            self._on_trained)

    def predict(self, centre_xy: tuple[float, float] | None = None) -> bool:
        """Predict the slide's tiles, the field of view first, filling in the prediction."""
        ready = self._ready()  # first: a missing pixel size is the problem to name
        if ready is None:
            return False
        if self.result is None:
            self.tell("error", "no trained head yet: annotate at least two classes and press "
                      "Train before Predict.")
            return False
        slide, settings, _, _ = ready
        differences = self.result.extractor.differences(settings.chosen_extractor())
        if differences:
            self.tell("error", f"the head was trained with {', '.join(differences)}: set the "
                      "panel back to them (Backbone and composition), or Train again with "
                      "these settings.")
            return False
        head, embedder = self.result.head, ready[3]

        def job(cancel: CancelCheck):
            grid = prediction_grid(slide, settings)
            return (yield from predict_tiles(slide, head, grid, embedder, cancel=cancel,
                                             centre_xy=centre_xy))

        return self._start("Predict", job, self._on_predicted)

    def auto_step(self, config: TrainConfig | None = None,
                  centre_xy: tuple[float, float] | None = None) -> bool:
        """Auto mode's step: embed what is missing, retrain, predict; False if not started."""
        if len({a.label for a in self._annotations}) < 2:
            self.say("Auto mode: waiting for annotations of a second class.")
            return False
        ready = self._ready()
        if ready is None:
            return False
        slide, settings, annotations, embedder = ready
        config = config or TrainConfig()

        def job(cancel: CancelCheck):
            result = yield from train_on_annotations(slide, annotations, settings, config,
                                                     embedder, cancel)
            yield "trained", result
            if cancel():
                raise Cancelled("cancelled after training; the new head is kept.")
            grid = prediction_grid(slide, settings)
            return (yield from predict_tiles(slide, result.head, grid, embedder,
                                             cancel=cancel, centre_xy=centre_xy))

        return self._start("Auto", job, self._on_predicted)

    def start_job(self, name: str, factory: JobFactory,
                  on_done: Callable[[Any], None] | None = None) -> bool:
        """Run another job (the explorer's projection, a slide model's prediction)."""
        return self._start(name, factory, on_done)

    # -- events of jobs (on the thread that owns the session) ------------------------------
    def _stage(self, stage: str, done: int, total: int) -> None:
        job = self.job
        if job is None:
            return
        started = job.started if job.stage == stage else time.monotonic()
        self._set_job(JobState(job.name, stage, done, total, started))

    def _on_event(self, kind: str, payload: Any) -> None:
        if kind == "samples":
            self.samples = payload
            self.samples_changed.emit(payload)
            self.say(f"{len(payload)} samples from the annotations: "
                     + ", ".join(f"{k} {v}" for k, v in payload.counts().items()))
        elif kind == "embedding":
            self._stage("embedding", payload.done, payload.total)
            self.say(f"Embedded {payload.done} / {payload.total} samples.")
        elif kind == "epoch":
            self._stage("training", payload.epoch, payload.max_epochs)
            val = payload.val_loss
            self.say(f"Training: epoch {payload.epoch}, loss {payload.train_loss:.3f}"
                     + ("" if val is None else f" (early-stopping split {val:.3f})"))
        elif kind == "assessing":
            self._stage("assessing", 0, 0)
            self.say(f"Measuring the head: grouped cross-validation of {payload} samples...")
        elif kind == "trained":
            self._on_trained(payload)
        elif kind == "prediction":
            self.prediction = payload
            self._stage("predicting", 0, len(payload.grid))
            self.prediction_started.emit(payload)
        elif kind == "proba" and self.prediction is not None:
            done = int(self.prediction.predicted.sum())
            self._stage("predicting", done, len(self.prediction.grid))
            self.prediction_updated.emit(*payload)
            self.say(f"Predicted {done} / {len(self.prediction.grid)} tiles.")
        elif kind == "waiting":
            self._stage("waiting", 0, 0)

    def _on_trained(self, result: TrainingResult) -> None:
        self.set_result(result)
        self.say(f"Trained a head on {', '.join(result.head.classes)}.")

    def _on_predicted(self, prediction: TilePrediction) -> None:
        self.prediction = prediction
        self.prediction_finished.emit(prediction)
        self.say("Predicted: " + ", ".join(f"{k} {v}" for k, v in prediction.counts().items()))
