"""A napari-dfl project folder: annotations, settings, head, and a reference to the store.

``<name>.dfl/`` (by default the slide's store folder, ``<slide folder>/<stem>.dfl``) holds:

* ``annotations.geojson``: every annotation, QuPath GeoJSON (written atomically, so the
  panel's autosave never leaves half a file).
* ``project.json``: the panel's settings: slide path and µm/px, backbone, composition,
  minimum tissue share, classes and colours, and the embedding store folder.
* ``head.dflhead/``: the trained head and its model card (:mod:`napari_dfl.core.heads.head_files`),
  when one was trained.
* ``prediction.npz``: the last whole-slide prediction
  (:func:`napari_dfl.core.heads.prediction_files.
  save_arrays`), when there was one.

:func:`load_project` never raises for a damaged or moved project: it loads what it can and
lists each missing or unreadable part, with what to do, in :attr:`Project.problems`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_dfl.core.annotations.annotation import Annotation, read_geojson, write_geojson
from napari_dfl.core.annotations.geojson import write_json_atomic
from napari_dfl.core.errors import DFLError

ANNOTATIONS_NAME = "annotations.geojson"
SETTINGS_NAME = "project.json"
HEAD_NAME = "head.dflhead"
PREDICTION_NAME = "prediction.npz"
PROJECT_FORMAT = "napari-dfl project"
PROJECT_FORMAT_VERSION = 1


class ProjectError(DFLError):
    """A project folder cannot be used at all (absent, or a file)."""


@dataclass
class Project:
    """What :func:`load_project` found in a project folder.

    Attributes:
        folder: the project folder.
        annotations: the annotations (empty when the file is absent or unreadable).
        settings: the settings of ``project.json`` (empty when absent or unreadable).
        head: the trained head, or None.
        card: the head's model card, or None.
        prediction: the saved slide prediction (``SlidePrediction``), or None.
        problems: one sentence per missing or damaged part, saying what to do.

    """

    folder: Path
    annotations: list[Annotation] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    head: Any = None
    card: dict | None = None
    prediction: Any = None
    problems: list[str] = field(default_factory=list)

    @property
    def colors(self) -> dict[str, str]:
        """``{class: "#rrggbb"}`` from the settings, in their order."""
        out = {}
        for item in self.settings.get("classes") or []:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                out[item["name"]] = str(item.get("color") or "")
        return out


def save_annotations(folder: str | os.PathLike, annotations: list[Annotation],
                     colors: dict[str, str] | None = None) -> Path:
    """Write ``annotations.geojson`` in ``folder`` atomically (the folder is created).

    Args:
        folder: the project folder.
        annotations: what to write (an empty list writes an empty collection).
        colors: ``{class: "#rrggbb"}``.

    Returns:
        The file written.

    """
    return write_geojson(annotations, Path(folder) / ANNOTATIONS_NAME, colors=colors)


def save_project(folder: str | os.PathLike, *, annotations: list[Annotation],
                 settings: dict[str, Any], colors: dict[str, str] | None = None,
                 head: Any = None, extractor: dict | None = None,
                 prediction: Any = None) -> Path:
    """Write a project folder: annotations, settings and (when given) the head.

    Args:
        folder: the project folder (created when absent).
        annotations: the annotations.
        settings: JSON-serialisable panel settings (slide, mpp, backbone, composition,
            min_tissue, store_dir); ``classes`` is filled from ``colors``.
        colors: ``{class: "#rrggbb"}`` in the panel's order.
        head: a trained head, saved with its model card when ``extractor`` is given.
        extractor: the embedding store's identity (needed to save the head).
        prediction: the slide's ``SlidePrediction`` to keep with the project, or None.

    Returns:
        The project folder.

    Raises:
        DFLError: the folder cannot be written, or the head cannot be saved.

    """
    from napari_dfl.core.heads.head_files import save_head

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ProjectError(f"{folder} is a file: choose a folder for the project.")
    colors = dict(colors or {})
    save_annotations(folder, annotations, colors)
    data = {"format": PROJECT_FORMAT, "format_version": PROJECT_FORMAT_VERSION, **settings,
            "classes": [{"name": k, "color": v} for k, v in colors.items()],
            "head": HEAD_NAME if head is not None and extractor is not None else None,
            "prediction": PREDICTION_NAME if prediction is not None else None}
    if head is not None and extractor is not None:
        save_head(head, folder / HEAD_NAME, extractor=extractor,
                  colors={k: v for k, v in colors.items() if k in head.classes})
    if prediction is not None:
        from napari_dfl.core.heads.prediction_files import save_arrays

        save_arrays(prediction, folder / PREDICTION_NAME)
    write_json_atomic(data, folder / SETTINGS_NAME)  # last: it names what was written
    return folder


def _read_settings(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        problems.append(f"{SETTINGS_NAME} is missing: the panel keeps its current settings "
                        "(check backbone, composition and store folder, then Save project).")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problems.append(f"{SETTINGS_NAME} is damaged ({str(exc).splitlines()[0]}): the panel "
                        "keeps its current settings; Save project to write it again.")
        return {}
    if not isinstance(data, dict) or data.get("format") != PROJECT_FORMAT:
        problems.append(f"{SETTINGS_NAME} is not a napari-dfl project file: the panel keeps "
                        "its current settings; Save project to write it again.")
        return {}
    return data


def load_project(folder: str | os.PathLike) -> Project:
    """Load what a project folder holds; list what is missing or damaged.

    Args:
        folder: the project folder.

    Returns:
        The project; :attr:`Project.problems` is empty when everything loaded.

    Raises:
        ProjectError: ``folder`` does not exist or is a file.

    """
    from napari_dfl.core.heads.head_files import load_head

    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise ProjectError(f"project folder {folder} {what}: choose the folder that holds "
                           f"{SETTINGS_NAME} and {ANNOTATIONS_NAME}.")
    project = Project(folder)
    problems = project.problems
    annotations = folder / ANNOTATIONS_NAME
    if annotations.is_file():
        try:
            project.annotations = read_geojson(annotations)
        except DFLError as exc:
            problems.append(f"{ANNOTATIONS_NAME} could not be read ({exc}); it was left "
                            "untouched: repair it or import a copy with Import GeoJSON.")
    else:
        problems.append(f"{ANNOTATIONS_NAME} is missing: no annotations were loaded "
                        "(import a QuPath GeoJSON if you have a copy).")
    project.settings = settings = _read_settings(folder / SETTINGS_NAME, problems)
    store = settings.get("store_dir")
    if isinstance(store, str) and store and not Path(store).is_dir():
        problems.append(f"the embedding store folder {store} is missing (moved or deleted): "
                        "press Extract to compute the embeddings again, or set the store "
                        "folder to where it now is.")
    slide = settings.get("slide")
    if isinstance(slide, str) and slide and not Path(slide).exists():
        problems.append(f"the project's slide {slide} is not there: open the slide from its "
                        "new place; the annotations are in level-0 pixels of that slide.")
    if settings.get("head"):
        head_dir = folder / str(settings["head"])
        try:
            project.head, project.card = load_head(head_dir)
        except DFLError as exc:
            problems.append(f"the trained head could not be loaded ({exc}): press Train to "
                            "train it again.")
    if project.card is not None:
        problems.extend(extractor_mismatch(project.card, settings))
    if settings.get("prediction"):
        from napari_dfl.core.heads.prediction_files import load_arrays

        try:
            project.prediction = load_arrays(folder / str(settings["prediction"]))
        except DFLError as exc:
            problems.append(f"the saved prediction could not be loaded ({exc}).")
    return project


def card_extractor(card: dict | None) -> dict | None:
    """``{"backbone": name, "composition": dict}`` recorded by a head's model card, or None."""
    extractor = (card or {}).get("extractor") or {}
    if not extractor:
        return None
    return {"backbone": (extractor.get("backbone") or {}).get("name"),
            "composition": extractor.get("composition") or {}}


def settings_extractor(settings: dict[str, Any]) -> dict:
    """The backbone name and composition that a project's ``project.json`` settings give.

    Zooms are stored as the panel's text (``"0.5, 2.0"``); unreadable values are left out,
    so that only what the settings really say is compared.
    """
    composition: dict[str, Any] = {}
    if isinstance(settings.get("patch_size"), int):
        composition["patch_size"] = settings["patch_size"]
    zooms = settings.get("zooms")
    if isinstance(zooms, str):
        try:
            composition["zooms"] = [float(z) for z in zooms.replace(";", ",").split(",")
                                    if z.strip()]
        except ValueError:
            composition["zooms"] = zooms  # differs from any head's: reported as it is
    if isinstance(settings.get("variants"), list):
        composition["variants"] = list(settings["variants"])
    return {"backbone": settings.get("backbone"), "composition": composition}


def extractor_differences(trained: dict | None, current: dict) -> list[str]:
    """Where a head's extractor differs from ``current``, as ``"<what> <head's> (now: ...)"``.

    Both are ``{"backbone": name, "composition": dict}``; what either side does not say
    is not compared.
    """
    if not trained:
        return []
    differ = []
    if trained.get("backbone") and current.get("backbone") and \
            trained["backbone"] != current["backbone"]:
        differ.append(f"backbone {trained['backbone']} (now: {current['backbone']})")
    now = current.get("composition") or {}
    for key, value in (trained.get("composition") or {}).items():
        if key in now and _as_list(value) != _as_list(now[key]):
            differ.append(f"{key} {value} (now: {now[key]})")
    return differ


def _as_list(value: Any) -> list:
    """Scalars and sequences alike as a list (numbers as floats) for comparison."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    return [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
            for v in items]


def extractor_mismatch(card: dict, settings: dict[str, Any]) -> list[str]:
    """Sentences saying where a head's extractor differs from the project's settings.

    A head only applies to embeddings of its own backbone and composition; a project whose
    settings were edited by hand (or saved by another version) would otherwise predict
    with embeddings the head never saw.
    """
    differ = extractor_differences(card_extractor(card), settings_extractor(settings))
    if not differ:
        return []
    return ["the trained head was made with " + ", ".join(differ) + ": set the panel to the "
            "head's backbone and composition before Predict, or Train again."]


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
        color = cls.get("color")
        if (isinstance(color, list) and len(color) >= 3
                and all(isinstance(c, int) and 0 <= c <= 255 for c in color[:3])):
            out.setdefault(cls["name"], "#{:02x}{:02x}{:02x}".format(*color[:3]))
    return out
