"""All-or-nothing project saves: stage every part, commit with one rename, then move in.

A project is several files (annotations, settings, the head folder, the prediction). Saved
one after the other in place, a crash between two of them leaves a mix: new annotations
with no head, an old head beside new settings. A save therefore goes in three phases:

1. **Stage**: every part is written into ``<project>/.saving-<random>/``; nothing in the
   project changes. A failure (full disk, no permission) removes the stage and the
   project is as it was.
2. **Commit**: the stage is renamed to ``<project>/.saving`` (one atomic rename, after
   its files were flushed to disk). From that instant the save has happened.
3. **Apply**: each staged part replaces its counterpart (files by ``os.replace``; a folder
   is first moved into the stage as ``.old-<name>``), the parts the save removes are
   deleted (listed in the stage's ``remove.json``), the settings file last; then the
   stage is deleted.

:func:`recover` runs before a project is read: a committed stage is applied again (every
step can be repeated, so a crash during apply rolls forward), an uncommitted one is
deleted (roll back). After a crash at any instant the project opens either as it was or
as saved, never mixed. Nothing here imports Qt or napari.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from napari_dfl.core.util.atomic import write_json

__all__ = ["COMMITTED_NAME", "REMOVE_NAME", "apply", "recover", "staged"]

#: The committed stage of a project folder.
COMMITTED_NAME = ".saving"
#: Inside a stage: the names the save deletes from the project.
REMOVE_NAME = "remove.json"
_STAGING_PREFIX = ".saving-"
_OLD_PREFIX = ".old-"


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system syncs directories
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def staged(folder: str | os.PathLike, last: str, remove: Sequence[str] = ()) -> Iterator[Path]:
    """Yield an empty stage in ``folder``; on success commit it and apply it.

    Args:
        folder: the project folder (created when absent).
        last: the name of the part moved in last (the settings file, which names the
            others).
        remove: names in ``folder`` that the save deletes (a head or prediction no longer
            saved).

    If the block raises, the stage is removed and ``folder`` is untouched.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    recover(folder)  # a stage left by an earlier crash goes first
    stage = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=folder))
    try:
        yield stage
        write_json(stage / REMOVE_NAME, {"remove": list(remove), "last": last})
        _fsync_tree(stage)
        os.replace(stage, folder / COMMITTED_NAME)
        _fsync_dir(folder)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    apply(folder)


def _plan(stage: Path) -> tuple[list[str], str]:
    try:
        plan = json.loads((stage / REMOVE_NAME).read_text(encoding="utf-8"))
        remove = [str(name) for name in plan.get("remove", [])]
        last = str(plan.get("last", ""))
    except (OSError, ValueError, AttributeError):
        remove, last = [], ""
    return [name for name in remove if "/" not in name and name not in ("", ".", "..")], last


def _move_in(stage: Path, folder: Path, name: str) -> None:
    source, target = stage / name, folder / name
    if not source.exists():  # moved in before a crash
        return
    if source.is_dir():  # a folder cannot replace a folder: the old one goes aside first
        if target.exists():
            aside = stage / f"{_OLD_PREFIX}{name}"
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(target, aside)
    elif target.is_dir():
        shutil.rmtree(target)
    os.replace(source, target)


def apply(folder: str | os.PathLike) -> bool:
    """Move a committed stage's parts into ``folder`` (repeatable); False without one."""
    folder = Path(folder)
    stage = folder / COMMITTED_NAME
    if not stage.is_dir():
        return False
    remove, last = _plan(stage)
    parts = sorted(p.name for p in stage.iterdir()
                   if p.name != REMOVE_NAME and not p.name.startswith(_OLD_PREFIX))
    for name in [p for p in parts if p != last] + ([last] if last in parts else []):
        _move_in(stage, folder, name)
    for name in remove:
        target = folder / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    _fsync_dir(folder)
    shutil.rmtree(stage)
    return True


def recover(folder: str | os.PathLike) -> str | None:
    """Finish or undo a save that a crash interrupted; what was done, or None.

    A committed stage is applied (the save happened); a stage that was not committed is
    deleted (the project stays as it was before that save).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    note = None
    if (folder / COMMITTED_NAME).is_dir():
        apply(folder)
        note = "a save interrupted by a crash was completed"
    for leftover in folder.glob(f"{_STAGING_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
        note = note or "a save interrupted by a crash was discarded: the project is as " \
            "it was before it"
    return note
