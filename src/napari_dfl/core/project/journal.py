"""A write-ahead journal of annotation edits: what was drawn survives a crash a moment later.

The panel rewrites ``annotations.geojson`` atomically half a second after the last edit
(a full, fsynced rewrite: too slow to do on every stroke of a large set). Each edit is
therefore first appended, at once, to ``annotations.journal`` beside it: one JSON line
holding what changed since the line before (annotations added or changed, as GeoJSON
features, and the ids removed), plus the class colours when they changed. A line is
written with a single ``write`` on a file opened for appending, so a process killed at any
moment leaves every earlier line whole; the operating system keeps it even if the process
dies the next instant. Every line is idempotent (upsert by id, remove by id), so replaying
a journal over a GeoJSON that already holds some of its edits gives the same annotations.

:meth:`AnnotationJournal.compact` writes the GeoJSON (atomically, fsynced) and only then
empties the journal; :func:`replay` applies a journal to the annotations read from the
GeoJSON, stopping at the first line that is not whole (a line torn by a crash or a full
disk). Nothing here imports Qt or napari.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from napari_dfl.core.annotations.annotation import (
    Annotation,
    annotations_from_geojson,
    write_geojson,
)
from napari_dfl.core.annotations.geojson import feature_collection
from napari_dfl.core.errors import DFLError
from napari_dfl.core.project.autosave import ANNOTATIONS_FILE, JOURNAL_FILE

__all__ = ["JOURNAL_NAME", "AnnotationJournal", "Replay", "replay"]

#: The journal's file name, beside ``annotations.geojson``.
JOURNAL_NAME = JOURNAL_FILE
_FORMAT = "napari-dfl-journal"


def _features(annotations: Sequence[Annotation], colors: Mapping[str, str]) -> list[dict]:
    collection = feature_collection([(a.geometry, a.label, a.id, a.properties)
                                     for a in annotations], colors=dict(colors) or None)
    return collection["features"]


class AnnotationJournal:
    """The journal of one folder, and the state its last line leaves (see the module).

    Args:
        folder: the autosave or project folder (created on the first edit).
        annotations: what the folder's GeoJSON holds now (the state edits start from).
        colors: the class colours it holds.

    """

    def __init__(self, folder: str | os.PathLike, annotations: Sequence[Annotation] = (),
                 colors: Mapping[str, str] | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / JOURNAL_NAME
        self._known: dict[str, Annotation] = {}
        self._colors: dict[str, str] = {}
        self.reset(annotations, colors)

    @classmethod
    def on_disk(cls, folder: str | os.PathLike) -> AnnotationJournal:
        """The journal of ``folder``, starting from what the folder holds now.

        That is its GeoJSON with its journal replayed, so the next edit records exactly
        what differs from the disk (an unreadable GeoJSON counts as empty).
        """
        from napari_dfl.core.annotations.annotation import read_geojson
        from napari_dfl.core.project.folder import geojson_colors

        path = Path(folder) / ANNOTATIONS_FILE
        try:
            found = read_geojson(path) if path.is_file() else []
        except DFLError:
            found = []
        state = replay(folder, found, geojson_colors(path) if path.is_file() else {})
        return cls(folder, state.annotations, state.colors)

    def reset(self, annotations: Sequence[Annotation],
              colors: Mapping[str, str] | None = None) -> None:
        """Take ``annotations`` and ``colors`` as what is on disk (nothing to journal)."""
        self._known = {a.id: a for a in annotations}
        self._colors = dict(colors or {})

    def record(self, annotations: Sequence[Annotation],
               colors: Mapping[str, str] | None = None) -> int:
        """Append what changed since the last call as one line; the number of changes.

        Raises:
            OSError: the journal cannot be written (full disk, no permission); the state
                is left as it was, so the next call journals these changes again.

        """
        colors = dict(colors or {})
        now = {a.id: a for a in annotations}
        upserts = [a for key, a in now.items() if self._known.get(key) != a]
        removed = [key for key in self._known if key not in now]
        colors_changed = colors != self._colors
        if not upserts and not removed and not colors_changed:
            return 0
        entry: dict = {"format": _FORMAT}
        if upserts:
            entry["upsert"] = _features(upserts, colors)
        if removed:
            entry["remove"] = removed
        if colors_changed:
            entry["colors"] = colors
        line = (json.dumps(entry, separators=(",", ":"), allow_nan=False) + "\n").encode()
        self.folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(descriptor, line)
        finally:
            os.close(descriptor)
        if written != len(line):  # a full disk: the partial line is ignored on replay
            raise OSError(f"only {written} of {len(line)} bytes reached {self.path}")
        self._known, self._colors = now, colors
        return len(upserts) + len(removed) + int(colors_changed)

    def compact(self, annotations: Sequence[Annotation],
                colors: Mapping[str, str] | None = None) -> Path:
        """Write the GeoJSON (atomic, fsynced), then empty the journal; the GeoJSON's path.

        A crash between the two steps leaves a journal whose lines the GeoJSON already
        holds: replaying it changes nothing.
        """
        path = write_geojson(list(annotations), self.folder / ANNOTATIONS_FILE,
                             colors=dict(colors or {}) or None)
        self.path.unlink(missing_ok=True)
        self.reset(annotations, colors)
        return path


@dataclass
class Replay:
    """Annotations after a journal was applied.

    Attributes:
        annotations: the result, the GeoJSON's order first, new annotations after.
        colors: the class colours (the GeoJSON's, updated by the journal).
        edits: how many lines were applied (0: there was no journal or it was empty).
        torn: True when the journal ended with a line that was not whole (ignored).

    """

    annotations: list[Annotation]
    colors: dict[str, str] = field(default_factory=dict)
    edits: int = 0
    torn: bool = False


def replay(folder: str | os.PathLike, annotations: Sequence[Annotation],
           colors: Mapping[str, str] | None = None) -> Replay:
    """Apply ``folder``'s journal to the annotations read from its GeoJSON.

    Lines are applied in order until one is not a whole, valid journal line; the rest is
    ignored (``torn``). An unreadable journal file gives the annotations unchanged.
    """
    path = Path(folder) / JOURNAL_NAME
    state = {a.id: a for a in annotations}
    result = Replay(list(annotations), dict(colors or {}))
    try:
        data = path.read_bytes() if path.is_file() else b""
    except OSError:
        return result
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict) or entry.get("format") != _FORMAT:
                raise ValueError("not a journal line")
            upserts = annotations_from_geojson({"type": "FeatureCollection",
                                                "features": entry.get("upsert", [])},
                                               source=str(path))
            removed = entry.get("remove", [])
            new_colors = entry.get("colors")
            if not isinstance(removed, list) or not all(isinstance(k, str) for k in removed):
                raise ValueError("bad removals")
            if new_colors is not None and not (isinstance(new_colors, dict) and all(
                    isinstance(k, str) and isinstance(v, str) for k, v in new_colors.items())):
                raise ValueError("bad colours")
        except (ValueError, DFLError, RecursionError):
            result.torn = True
            break
        for key in removed:
            state.pop(key, None)
        for annotation in upserts:
            state[annotation.id] = annotation
        if new_colors is not None:
            result.colors = dict(new_colors)
        result.edits += 1
    result.annotations = list(state.values())
    return result
