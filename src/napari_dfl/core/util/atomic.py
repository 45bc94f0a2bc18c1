"""Atomic writes: a file or a folder appears complete or not at all.

Everything the core writes goes through here. A file is written beside its target under a
hidden temporary name, flushed to disk, then renamed over the target; a crash or an
exception leaves the previous file (or nothing) in place, never half a file. A *folder*
(a head, a slide model, a fine-tuned backbone) is written whole in a temporary folder and
then swapped in; if the swap is interrupted, :func:`recover_folder` puts the previous
folder back the next time it is opened.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_folder", "atomic_path", "recover_folder", "to_json", "write_json",
           "write_text"]

_OLD = ".old-"
_TMP = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    The temporary file is removed if the block raises. Parent folders are created.

    Example:
        >>> with atomic_path("out/report.png") as tmp:  # doctest: +SKIP
        ...     figure.savefig(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically, flushed to disk before the rename; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def _plain(value: Any) -> Any:
    """JSON form of numpy values and paths (``json.dumps``'s ``default``)."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(obj: Any, *, indent: int | None = 1, sort_keys: bool = False) -> str:
    """Standard JSON text of ``obj`` (numpy values and paths allowed; NaN and inf refused)."""
    return json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=False,
                      default=_plain)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1,
               sort_keys: bool = False) -> Path:
    """Write ``obj`` as JSON atomically (see :func:`to_json`); returns the path."""
    return write_text(path, to_json(obj, indent=indent, sort_keys=sort_keys) + "\n")


def _fsync_tree(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; swap it in when the block succeeds.

    The previous ``target`` (if any) stays intact until the new folder is complete and
    flushed; it is then renamed aside, the new folder renamed into place and the old one
    deleted. If the block raises, the temporary folder is removed and ``target`` is
    untouched. A crash between the two renames leaves the old folder beside the target;
    :func:`recover_folder` restores it.

    Callers check that ``target`` is theirs to replace before calling this.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{_TMP}", dir=target.parent))
    old = None
    try:
        yield tmp
        _fsync_tree(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}{_OLD}{uuid.uuid4().hex[:8]}")
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists():
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_folder(target: str | os.PathLike) -> bool:
    """Finish or undo an interrupted :func:`atomic_folder` swap of ``target``.

    When ``target`` is missing but an old copy was left beside it, the old copy is put back
    (the save that was interrupted never completed). Leftover temporary and old folders
    are then removed. Returns True when the old folder was put back.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return False
    restored = False
    leftovers = sorted(target.parent.glob(f".{target.name}{_OLD}*"))
    if not target.exists() and leftovers:
        os.replace(leftovers.pop(), target)
        restored = True
    for folder in [*leftovers, *target.parent.glob(f".{target.name}{_TMP}*")]:
        shutil.rmtree(folder, ignore_errors=True)
    return restored
