"""Where a slide's annotations autosave, keyed by the slide's content, not its name.

Each slide gets its own folder in the user data folder
(:func:`napari_dfl.core.util.paths.default_autosave_dir`), named after the slide's stem and
its content fingerprint (:mod:`napari_dfl.core.slides.fingerprint`): ``x.svs`` and
``x.tiff`` from one folder, or two different ``slide.svs`` of two patients, never share
annotations. A slide moved keeps its folder; a slide renamed finds the folder of its
content under its old name (:func:`locate_autosave`), and the user is told. The folder
records the slide it belongs to (``slide.json``), so a folder whose record names other
content is never restored silently, and the µm/px a user gave a slide that records none,
so it is asked once.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_dfl.core.slides.fingerprint import fingerprint_key, slide_fingerprint
from napari_dfl.core.util.atomic import write_json
from napari_dfl.core.util.paths import default_autosave_dir

__all__ = ["ANNOTATIONS_FILE", "JOURNAL_FILE", "SLIDE_FILE", "AutosaveLocation",
           "autosave_folder", "folder_slide", "given_mpp", "holds_annotations",
           "locate_autosave", "record_slide"]

SLIDE_FILE = "slide.json"
#: The autosaved annotations (the project folder's file name).
ANNOTATIONS_FILE = "annotations.geojson"
#: The edits not yet in ``annotations.geojson`` (:mod:`napari_dfl.core.project.journal`).
JOURNAL_FILE = "annotations.journal"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def autosave_folder(slide: Any, root: Path | None = None) -> Path:
    """The autosave folder of an open slide: ``<root>/<stem>-<fingerprint key>``."""
    fingerprint = slide_fingerprint(slide)
    stem = _SAFE.sub("_", Path(slide.path).stem) or "slide"
    return (root or default_autosave_dir()) / f"{stem}-{fingerprint_key(fingerprint)}"


def record_slide(folder: Path, slide: Any, mpp: float | None = None) -> None:
    """Write which slide a folder's annotations belong to, and the µm/px given it, if any.

    Args:
        folder: the slide's autosave folder.
        slide: the open slide.
        mpp: the µm/px the user gave (None: the slide's own, or none given).

    """
    record = {"path": str(Path(slide.path).resolve()), "fingerprint": slide_fingerprint(slide)}
    if mpp is not None:
        record["mpp_given"] = float(mpp)
    write_json(folder / SLIDE_FILE, record)


def given_mpp(folder: Path) -> float | None:
    """The µm/px a user gave the folder's slide (None: none, or not a plausible value)."""
    value = (folder_slide(folder) or {}).get("mpp_given")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and 0.01 <= value <= 100 else None


def holds_annotations(folder: Path) -> bool:
    """Whether a folder holds annotations: the GeoJSON, or a journal of edits.

    A crash before the first autosave leaves only the journal.
    """
    return (folder / ANNOTATIONS_FILE).is_file() or (folder / JOURNAL_FILE).is_file()


def folder_slide(folder: Path) -> dict | None:
    """What ``slide.json`` of a folder says (``path``, ``fingerprint``), or None."""
    try:
        data = json.loads((folder / SLIDE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class AutosaveLocation:
    """Where a slide's annotations come from and go to.

    Attributes:
        folder: where they autosave (the slide's own folder, or beside a foreign one).
        restore_from: the folder whose annotations to show, or None.
        note: what the user should know (annotations found under another name, or a folder
            that belongs to other content and was left alone), or None.

    """

    folder: Path
    restore_from: Path | None
    note: str | None = None


def _same_content(record: dict | None, fingerprint: dict) -> bool:
    """Whether a ``slide.json`` record names the slide of ``fingerprint`` (None: no record)."""
    theirs = (record or {}).get("fingerprint")
    if not isinstance(theirs, dict):
        return True  # written before records existed: the folder's key is all we have
    return fingerprint_key(theirs) == fingerprint_key(fingerprint)


def locate_autosave(slide: Any, root: Path | None = None) -> AutosaveLocation:
    """Find the annotations autosaved for an open slide (its content, whatever its name).

    * its own folder holds them: restore them, unless its ``slide.json`` records other
      content (a key collision or a folder copied by hand): then they are left alone, the
      user is told whose they are, and new annotations autosave beside (``.<n>``);
    * else a folder of the same content under another name (the slide was renamed):
      restore from it, say so, and autosave into the slide's own folder from now on.
    """
    root = root or default_autosave_dir()
    fingerprint = slide_fingerprint(slide)
    own = autosave_folder(slide, root)
    if holds_annotations(own):
        record = folder_slide(own)
        if _same_content(record, fingerprint):
            return AutosaveLocation(own, own)
        other = Path(str((record or {}).get("path", "another slide"))).name
        beside = own
        counter = 1
        while holds_annotations(beside):
            counter += 1
            beside = own.with_name(f"{own.name}.{counter}")
        return AutosaveLocation(beside, None, (
            f"the autosave folder {own} holds annotations of {other}, not of this slide: "
            f"they were not shown (Import GeoJSON… {own / ANNOTATIONS_FILE} to use them); "
            f"this slide's annotations autosave to {beside}"))
    key = fingerprint_key(fingerprint)
    for folder in sorted(root.glob(f"*-{key}")) if root.is_dir() else []:
        record = folder_slide(folder)
        if folder != own and holds_annotations(folder) and \
                record is not None and _same_content(record, fingerprint):
            old = Path(str(record.get("path", folder.name))).name
            return AutosaveLocation(own, folder, (
                f"restored the annotations drawn on this slide when it was named {old} "
                f"(same content); they autosave to {own} from now on"))
    return AutosaveLocation(own, None)
