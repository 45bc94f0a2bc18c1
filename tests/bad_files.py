"""Builders of broken and unsupported files, written to a test's tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile


def truncated(source: Path, folder: Path, fraction: float) -> Path:
    """A copy of ``source`` cut after ``fraction`` of its bytes."""
    data = source.read_bytes()
    path = folder / f"truncated_{int(fraction * 100)}{''.join(source.suffixes)}"
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def damaged_last_tile(source: Path, folder: Path) -> Path:
    """A copy of a tiled TIFF whose last level-0 tile is overwritten with garbage."""
    data = bytearray(source.read_bytes())
    with tifffile.TiffFile(source) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[-1], page.databytecounts[-1]
    data[offset : offset + count] = b"\x00\x01" * (count // 2) + b"\x00" * (count % 2)
    path = folder / f"damaged{source.suffix}"
    path.write_bytes(bytes(data))
    return path


def not_an_image(folder: Path, suffix: str = ".svs") -> Path:
    """A text file with a slide extension."""
    path = folder / f"notes{suffix}"
    path.write_text("patient notes, not a slide\n")
    return path


def sixteen_bit(folder: Path) -> Path:
    """A tiled 16-bit RGB TIFF (valid, but not a brightfield slide)."""
    path = folder / "uint16.tif"
    tifffile.imwrite(path, np.zeros((512, 512, 3), np.uint16), photometric="rgb",
                     tile=(256, 256))
    return path


def single_channel(folder: Path) -> Path:
    """A tiled single-channel 8-bit TIFF."""
    path = folder / "gray.tif"
    tifffile.imwrite(path, np.full((512, 512), 128, np.uint8), tile=(256, 256))
    return path


def huge_untiled(folder: Path) -> Path:
    """A 30000 x 30000 RGB TIFF in strips, with no pyramid (sparse on disk)."""
    path = folder / "huge_strips.tif"
    tifffile.imwrite(path, shape=(30000, 30000, 3), dtype="uint8", photometric="rgb")
    return path
