"""Where a slide's annotations autosave, keyed by the slide's content, not its name.

Each slide gets its own folder in the user data folder
(:func:`napari_dfl.core.util.paths.default_autosave_dir`), named after the slide's stem and
its content fingerprint (:mod:`napari_dfl.core.slides.fingerprint`): ``x.svs`` and
``x.tiff`` from one folder, or two different ``slide.svs`` of two patients, never share
annotations; a slide renamed or moved finds its annotations again. The folder records the
slide it belongs to (``slide.json``), so a mismatch can be told, never silently restored.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from napari_dfl.core.slides.fingerprint import fingerprint_key, slide_fingerprint
from napari_dfl.core.util.atomic import write_json
from napari_dfl.core.util.paths import default_autosave_dir

__all__ = ["SLIDE_FILE", "autosave_folder", "folder_slide", "record_slide"]

SLIDE_FILE = "slide.json"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def autosave_folder(slide: Any, root: Path | None = None) -> Path:
    """The autosave folder of an open slide: ``<root>/<stem>-<fingerprint key>``."""
    fingerprint = slide_fingerprint(slide)
    stem = _SAFE.sub("_", Path(slide.path).stem) or "slide"
    return (root or default_autosave_dir()) / f"{stem}-{fingerprint_key(fingerprint)}"


def record_slide(folder: Path, slide: Any) -> None:
    """Write which slide a folder's annotations belong to (path and fingerprint)."""
    write_json(folder / SLIDE_FILE, {"path": str(Path(slide.path).resolve()),
                                     "fingerprint": slide_fingerprint(slide)})


def folder_slide(folder: Path) -> dict | None:
    """What ``slide.json`` of a folder says (``path``, ``fingerprint``), or None."""
    try:
        data = json.loads((folder / SLIDE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
