"""A slide's identity by content: what stores, autosaves and caches are keyed on.

Two files with the same name can hold different slides (two ``slide.svs`` of two patients);
one slide can be renamed or moved. The fingerprint (size, dimensions, mpp and a hash of the
file's first and last MiB) tells them apart in milliseconds, where hashing a gigapixel file
would take minutes.
"""

from __future__ import annotations

from typing import Any

from napari_dfl.core.util.hashing import ends_sha256, json_sha256

__all__ = ["fingerprint_key", "slide_fingerprint"]


def slide_fingerprint(slide: Any) -> dict[str, Any]:
    """``name``, ``bytes``, ``dimensions``, ``mpp`` and ``ends_sha256`` of an open slide."""
    path = slide.path
    return {
        "name": path.name,
        "bytes": path.stat().st_size,
        "dimensions": list(slide.dimensions),
        "mpp": slide.mpp,
        "ends_sha256": ends_sha256(path),
    }


def fingerprint_key(fingerprint: dict[str, Any]) -> str:
    """A short stable key of a slide's content (its name left out): 16 hex digits."""
    content = {k: v for k, v in fingerprint.items() if k not in ("name", "mpp")}
    return json_sha256(content)[:16]
