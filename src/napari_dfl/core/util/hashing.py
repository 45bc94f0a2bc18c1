"""Content hashes: of files (weights, slides' ends) and of JSON values (identities).

File hashes are cached per (real path, modification time, size), so hashing the same
weights again costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

_FILE_CACHE: dict[tuple[str, int, int], str] = {}
_BLOCK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a whole file, read in 1 MiB blocks (cached per path, mtime and size)."""
    real = os.path.realpath(os.fspath(path))
    stat = os.stat(real)
    key = (real, stat.st_mtime_ns, stat.st_size)
    cached = _FILE_CACHE.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with open(real, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    _FILE_CACHE[key] = digest.hexdigest()
    return _FILE_CACHE[key]


def ends_sha256(path: str | os.PathLike, span: int = _BLOCK) -> str:
    """Hex sha256 of a file's first and last ``span`` bytes: a quick identity of a big file."""
    size = os.stat(path).st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(span))
        handle.seek(max(0, size - span))
        digest.update(handle.read(span))
    return digest.hexdigest()


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: equal values give equal text (for hashing, comparing)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def json_sha256(value: Any) -> str:
    """Hex sha256 of :func:`canonical_json` of ``value``."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()
