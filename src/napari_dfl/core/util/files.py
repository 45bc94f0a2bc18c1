"""Files handed in by users, checked before anything reads them.

A named pipe or a device never ends (a reader hangs); an ``.npz`` archive can declare
gigabytes that a few megabytes of zeros compress to, or shapes whose allocation kills the
process. These checks bound what is read by what the file really is, before reading it.
"""

from __future__ import annotations

import ast
import os
import zipfile
from pathlib import Path

import numpy as np

from napari_dfl.core.errors import DFLError

__all__ = ["NpzMember", "npz_members", "require_regular_file"]


def require_regular_file(path: str | os.PathLike, what: str,
                         error: type[DFLError] = DFLError) -> Path:
    """``path`` when it is an existing regular file; else ``error`` saying what it is.

    Args:
        path: the file.
        what: what it should be, for the message (e.g. ``"the project's prediction"``).
        error: the exception to raise (a :class:`DFLError` subclass).

    """
    path = Path(path)
    if not path.exists():
        raise error(f"{what} {path} does not exist.")
    if path.is_dir():
        raise error(f"{what} {path} is a folder, not a file.")
    if not path.is_file():
        raise error(f"{what} {path} is not a regular file (a pipe or a device?): refused, "
                    "as reading it could hang.")
    return path


class NpzMember(tuple):
    """``(shape, dtype)`` of one array of an ``.npz`` archive, read from its header."""

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return self[0]

    @property
    def dtype(self) -> np.dtype:
        """The array's dtype."""
        return self[1]

    @property
    def nbytes(self) -> int:
        """Bytes the array takes once loaded."""
        return int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize


def _header(stream) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` header, without trusting anything after it."""
    version = np.lib.format.read_magic(stream)
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise ValueError(f"unknown .npy version {version}")
    length_size = 2 if version == (1, 0) else 4
    length = int.from_bytes(stream.read(length_size), "little")
    if length > 65536:
        raise ValueError("the array header is implausibly long")
    header = ast.literal_eval(stream.read(length).decode("latin1"))
    if not isinstance(header, dict) or not {"descr", "shape", "fortran_order"} <= set(header):
        raise ValueError("the array header is malformed")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError("the array's shape is malformed")
    dtype = np.dtype(header["descr"])
    if dtype.hasobject:
        raise ValueError("the archive holds Python objects (refused: they need unpickling)")
    return shape, dtype


def npz_members(path: str | os.PathLike, max_bytes: int, what: str) -> dict[str, NpzMember]:
    """Shapes and dtypes of an ``.npz`` archive's arrays, checked against ``max_bytes``.

    Reads the zip directory and each array's header only. The arrays' sizes (from their
    shapes) and the sizes the archive declares for them must agree and stay under
    ``max_bytes`` in all: a shape claiming terabytes, or a zip bomb (gigabytes of zeros in
    megabytes) is refused before anything is allocated.

    Raises:
        DFLError: not a regular file, not a zip archive, a malformed header, or too large.

    """
    path = require_regular_file(path, what)
    members: dict[str, NpzMember] = {}
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as stream:
                    shape, dtype = _header(stream)
                member = NpzMember((shape, dtype))
                # the declared size covers the header too: allow it a little slack
                if member.nbytes > info.file_size or info.file_size > member.nbytes + 65536 + 16:
                    raise ValueError(f"{info.filename} declares {info.file_size} bytes for an "
                                     f"array of {member.nbytes}")
                total += member.nbytes
                if total > max_bytes:
                    raise DFLError(
                        f"{what} {path.name} holds more than {max_bytes / 2**30:.1f} GiB of "
                        "arrays, more than napari-dfl ever writes for it: refused (a damaged "
                        "or hostile file?).")
                members[info.filename[:-len(".npy")]] = member
    except (zipfile.BadZipFile, ValueError, SyntaxError, EOFError, OSError) as exc:
        raise DFLError(f"{what} {path.name} is not a valid array archive ({exc}).") from None
    return members
