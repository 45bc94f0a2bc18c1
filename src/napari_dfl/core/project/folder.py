"""A napari-dfl project folder: annotations, settings, head and prediction of one slide.

``<name>/`` holds:

* ``annotations.geojson``: every annotation, QuPath GeoJSON (written atomically, so the
  panel's autosave never leaves half a file).
* ``project.json``: the slide, its classes and colours, and the
  :class:`~napari_dfl.core.features.settings.Settings` (backbone, composition, store
  folder...), read back as a typed :class:`ProjectFile`.
* ``head.dflhead/``: the trained head and its model card
  (:mod:`napari_dfl.core.heads.head_files`), when one was trained.
* ``prediction.npz``: the last whole-slide prediction
  (:func:`napari_dfl.core.heads.prediction_files.save_arrays`), when there was one.
* ``annotations.journal``: edits made since ``annotations.geojson`` was last written
  (:mod:`napari_dfl.core.project.journal`), replayed when the project is read.

:func:`save_project` is all-or-nothing (:mod:`napari_dfl.core.project.staged_save`): a
crash at any instant leaves the project as it was or as saved, and the next
:func:`load_project` finishes or discards what the crash interrupted.

:func:`load_project` never raises for a damaged or moved project: it loads what it can and
lists each missing or unreadable part, with what to do, in :attr:`Project.problems`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_dfl.core.annotations.annotation import Annotation, read_geojson, write_geojson
from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.extractor import Extractor
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.heads.head_files import head_extractor, load_head, save_head
from napari_dfl.core.heads.prediction_files import load_arrays, save_arrays
from napari_dfl.core.heads.tile_prediction import TilePrediction
from napari_dfl.core.project.autosave import ANNOTATIONS_FILE
from napari_dfl.core.project.journal import JOURNAL_NAME, replay
from napari_dfl.core.project.staged_save import recover, staged
from napari_dfl.core.slides.sampling import Composition, CompositionError, parse_zooms
from napari_dfl.core.util.atomic import recover_folder, write_json
from napari_dfl.core.util.palette import to_hex

if TYPE_CHECKING:  # torch: the panel imports this module when it opens
    from napari_dfl.core.heads.model import TrainedHead

__all__ = [
    "ANNOTATIONS_NAME",
    "HEAD_NAME",
    "PREDICTION_NAME",
    "SETTINGS_NAME",
    "TRASH_NAME",
    "Project",
    "ProjectError",
    "ProjectFile",
    "geojson_colors",
    "load_project",
    "save_annotations",
    "save_project",
    "save_trashed",
]

#: The annotations file (the same name in a slide's autosave folder).
ANNOTATIONS_NAME = ANNOTATIONS_FILE
SETTINGS_NAME = "project.json"
HEAD_NAME = "head.dflhead"
PREDICTION_NAME = "prediction.npz"
#: Deleted classes' annotations, one GeoJSON per deletion (Import GeoJSON brings one back).
TRASH_NAME = "trash"
PROJECT_FORMAT = "napari-dfl project"
PROJECT_FORMAT_VERSION = 2


class ProjectError(DFLError):
    """A project folder cannot be used at all (absent, or a file)."""


@dataclass
class ProjectFile:
    """What ``project.json`` says: the slide, the settings and the classes.

    Attributes:
        slide: the slide's path (None when the project was saved without one).
        settings: the extractor and run settings; ``settings.mpp`` is the µm/px the user
            gave for a slide whose file has none.
        colors: ``{class: "#rrggbb"}`` in the panel's order.
        head: the head folder's name inside the project, or None.
        prediction: the prediction file's name inside the project, or None.

    """

    slide: str | None = None
    settings: Settings = field(default_factory=Settings)
    colors: dict[str, str] = field(default_factory=dict)
    head: str | None = None
    prediction: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``project.json``."""
        return {"format": PROJECT_FORMAT, "format_version": PROJECT_FORMAT_VERSION,
                "slide": self.slide, "settings": self.settings.to_dict(),
                "classes": [{"name": k, "color": v} for k, v in self.colors.items()],
                "head": self.head, "prediction": self.prediction}

    @classmethod
    def from_json(cls, data: Any, problems: list[str]) -> ProjectFile:
        """Read ``project.json``'s object; unusable values are reported, defaults kept.

        Version 1 files (settings at the top level, zooms as text) are read too.
        """
        version = data.get("format_version")
        raw = data.get("settings") if version == PROJECT_FORMAT_VERSION else _v1_settings(data)
        settings, bad = Settings.from_dict(raw if raw is not None else {})
        problems.extend(f"{SETTINGS_NAME}: {text}." for text in bad)
        colors: dict[str, str] = {}
        for item in data.get("classes") or []:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                try:
                    colors[item["name"]] = to_hex(item.get("color"))
                except DFLError:
                    colors[item["name"]] = ""
        slide = data.get("slide") if isinstance(data.get("slide"), str) else None
        head = data.get("head") if isinstance(data.get("head"), str) else None
        prediction = data.get("prediction") if isinstance(data.get("prediction"), str) else None
        return cls(slide, settings, colors, head, prediction)


def _v1_settings(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept the settings at the top level and the zooms as the panel's text."""
    out = {k: data[k] for k in ("backbone", "min_tissue", "store_dir", "mpp") if k in data}
    composition: dict[str, Any] = dict(Composition().to_dict())
    composition.pop("input_size", None)  # v1 read every part at its patch size
    if isinstance(data.get("patch_size"), int):
        composition["patch_size"] = data["patch_size"]
    zooms = data.get("zooms")
    if isinstance(zooms, str):
        try:
            composition["zooms"] = list(parse_zooms(zooms))
        except CompositionError:
            composition["zooms"] = zooms  # reported as invalid by Settings.from_dict
    if isinstance(data.get("variants"), list):
        composition["variants"] = data["variants"]
    out["composition"] = composition
    return out


@dataclass
class Project:
    """What :func:`load_project` found in a project folder.

    Attributes:
        folder: the project folder.
        file: what ``project.json`` says (defaults when it is absent or unreadable).
        annotations: the annotations (empty when the file is absent or unreadable).
        head: the trained head, or None.
        card: the head's model card, or None.
        prediction: the saved tile prediction, or None.
        problems: one sentence per missing or damaged part, saying what to do.

    """

    folder: Path
    file: ProjectFile = field(default_factory=ProjectFile)
    annotations: list[Annotation] = field(default_factory=list)
    head: TrainedHead | None = None
    card: dict | None = None
    prediction: TilePrediction | None = None
    problems: list[str] = field(default_factory=list)


def save_annotations(folder: str | os.PathLike, annotations: list[Annotation],
                     colors: dict[str, str] | None = None) -> Path:
    """Write ``annotations.geojson`` in ``folder`` atomically (the folder is created)."""
    return write_geojson(annotations, Path(folder) / ANNOTATIONS_NAME, colors=colors)


def save_trashed(folder: str | os.PathLike, name: str, annotations: Sequence[Annotation],
                 color: str | None = None, when: float | None = None) -> Path:
    """Keep a deleted class's annotations in ``folder/trash/<UTC time>-<class>.geojson``.

    The file is a normal annotations GeoJSON (with the class's colour): importing it
    restores the class. Returns its path.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(when))
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "class"
    path = Path(folder) / TRASH_NAME / f"{stamp}-{safe}.geojson"
    path.parent.mkdir(parents=True, exist_ok=True)
    counter = 1
    while path.exists():  # two deletions of one name in one second
        counter += 1
        path = path.with_name(f"{stamp}-{safe}-{counter}.geojson")
    return write_geojson(list(annotations), path,
                         colors=None if color is None else {name: color})


def save_project(folder: str | os.PathLike, *, annotations: list[Annotation],
                 file: ProjectFile, head: TrainedHead | None = None,
                 extractor: Extractor | None = None,
                 prediction: TilePrediction | None = None,
                 assessment: dict | None = None) -> Path:
    """Write a project folder: annotations, the head and prediction when given, then settings.

    Args:
        folder: the project folder (created when absent).
        annotations: the annotations.
        file: the slide, settings and classes; its ``head`` and ``prediction`` names are
            filled in from what is saved.
        head: a trained head, saved with its model card when ``extractor`` is given.
        extractor: the extractor of the head's embeddings (needed to save the head).
        prediction: the slide's tile prediction to keep with the project, or None.
        assessment: the head's grouped cross-validation, recorded in its card.

    Returns:
        The project folder.

    Raises:
        DFLError: the folder cannot be written, or the head cannot be saved.

    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ProjectError(f"{folder} is a file: choose a folder for the project.")
    saved_head = head is not None and extractor is not None
    saved = replace(file, head=HEAD_NAME if saved_head else None,
                    prediction=PREDICTION_NAME if prediction is not None else None)
    try:
        # every part is staged, then committed at once (core.project.staged_save); the
        # saved annotations hold every journaled edit, so the journal goes
        with staged(folder, last=SETTINGS_NAME, remove=[JOURNAL_NAME]) as stage:
            save_annotations(stage, annotations, file.colors)
            if saved_head:
                save_head(head, stage / HEAD_NAME, extractor=extractor, assessment=assessment,
                          colors={k: v for k, v in file.colors.items() if k in head.classes})
            if prediction is not None:
                save_arrays(prediction, stage / PREDICTION_NAME)
            write_json(stage / SETTINGS_NAME, saved.to_json())  # it names what was written
    except DFLError:
        raise
    except Exception as exc:  # a full disk, no permission: the writers' own exceptions
        raise ProjectError(save_failure(folder, exc)) from exc
    file.head, file.prediction = saved.head, saved.prediction
    return folder


def save_failure(folder: Path, exc: BaseException) -> str:
    """The message of a project save that failed with ``exc`` (nothing was changed)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in text:
        return (f"the disk holding {folder} is full: the project was not saved and nothing "
                "in it was changed. Free some space, or Save project… to another disk.")
    return (f"the project could not be saved to {folder} ({text}); nothing in it was "
            "changed. Save project… to another folder.")


def _read_file(path: Path, problems: list[str]) -> ProjectFile:
    if not path.is_file():
        problems.append(f"{SETTINGS_NAME} is missing: the panel keeps its current settings "
                        "(check backbone, composition and store folder, then Save project).")
        return ProjectFile()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problems.append(f"{SETTINGS_NAME} is damaged ({str(exc).splitlines()[0]}): the panel "
                        "keeps its current settings; Save project to write it again.")
        return ProjectFile()
    if not isinstance(data, dict) or data.get("format") != PROJECT_FORMAT:
        problems.append(f"{SETTINGS_NAME} is not a napari-dfl project file: the panel keeps "
                        "its current settings; Save project to write it again.")
        return ProjectFile()
    return ProjectFile.from_json(data, problems)


def load_project(folder: str | os.PathLike) -> Project:
    """Load what a project folder holds; list what is missing or damaged.

    Raises:
        ProjectError: ``folder`` does not exist or is a file.

    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise ProjectError(f"project folder {folder} {what}: choose the folder that holds "
                           f"{SETTINGS_NAME} and {ANNOTATIONS_NAME}.")
    project = Project(folder)
    problems = project.problems
    try:
        note = recover(folder)
        recover_folder(folder / HEAD_NAME)  # left by saves before staged saves existed
    except OSError as exc:
        note = (f"a save interrupted by a crash could not be finished ({exc}): the project "
                "may be incomplete")
    if note:
        problems.append(note[0].upper() + note[1:] + ".")
    annotations = folder / ANNOTATIONS_NAME
    if annotations.is_file() or (folder / JOURNAL_NAME).is_file():
        try:
            found = read_geojson(annotations) if annotations.is_file() else []
            recovered = replay(folder, found)
            project.annotations = recovered.annotations
            if recovered.edits:
                problems.append(f"Recovered {recovered.edits} annotation edits made after "
                                f"the last save ({JOURNAL_NAME}).")
        except DFLError as exc:
            problems.append(f"{ANNOTATIONS_NAME} could not be read ({exc}); it was left "
                            "untouched: repair it or import a copy with Import GeoJSON.")
    else:
        problems.append(f"{ANNOTATIONS_NAME} is missing: no annotations were loaded "
                        "(import a QuPath GeoJSON if you have a copy).")
    project.file = file = _read_file(folder / SETTINGS_NAME, problems)
    store = file.settings.store_dir
    if store and not Path(store).is_dir():
        problems.append(f"the embedding store folder {store} is missing (moved or deleted): "
                        "press Extract to compute the embeddings again, or set the store "
                        "folder to where it now is.")
    if file.slide and not Path(file.slide).exists():
        problems.append(f"the project's slide {file.slide} is not there: open the slide from "
                        "its new place; the annotations are in level-0 pixels of that slide.")
    if file.head:
        try:
            project.head, project.card = load_head(folder / file.head)
        except DFLError as exc:
            problems.append(f"the trained head could not be loaded ({exc}): press Train to "
                            "train it again.")
    if project.card is not None:
        differences = head_extractor(project.card).differences(
            file.settings.chosen_extractor())
        if differences:
            problems.append("the trained head was made with " + ", ".join(differences)
                            + ": set the panel to the head's backbone and composition before "
                            "Predict, or Train again.")
    if file.prediction:
        try:
            project.prediction = load_arrays(folder / file.prediction)
        except DFLError as exc:
            problems.append(f"the saved prediction could not be loaded ({exc}).")
    return project


def geojson_colors(path: str | os.PathLike) -> dict[str, str]:
    """``{class: "#rrggbb"}`` of the classifications in a GeoJSON file (first colour wins).

    Unreadable files and features without a colour give nothing (never raises).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    features = data.get("features") if isinstance(data, dict) else data
    out: dict[str, str] = {}
    for feature in features if isinstance(features, list) else []:
        props = feature.get("properties") if isinstance(feature, dict) else None
        cls = props.get("classification") if isinstance(props, dict) else None
        if not isinstance(cls, dict) or not isinstance(cls.get("name"), str):
            continue
        try:
            out.setdefault(cls["name"], to_hex(cls.get("color")))
        except DFLError:
            continue
    return out
