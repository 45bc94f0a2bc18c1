"""Where a slide's annotations autosave, keyed by the slide's content, not its name.

Each slide gets its own folder in the user data folder
(:func:`napari_dfl.core.util.paths.default_autosave_dir`), named after the slide's stem and
its content fingerprint (:mod:`napari_dfl.core.slides.fingerprint`): ``x.svs`` and
``x.tiff`` from one folder, or two different ``slide.svs`` of two patients, never share
annotations; a slide renamed or moved finds its annotations again. The folder records the
slide it belongs to (``slide.json``), so a mismatch can be told, never silently restored,
and the µm/px a user gave a slide that records none, so it is asked once.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from napari_dfl.core.slides.fingerprint import fingerprint_key, slide_fingerprint
from napari_dfl.core.util.atomic import write_json
from napari_dfl.core.util.paths import default_autosave_dir

__all__ = ["SLIDE_FILE", "autosave_folder", "folder_slide", "given_mpp", "record_slide"]

SLIDE_FILE = "slide.json"
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


def folder_slide(folder: Path) -> dict | None:
    """What ``slide.json`` of a folder says (``path``, ``fingerprint``), or None."""
    try:
        data = json.loads((folder / SLIDE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
