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


def huge_empty_tiles(folder: Path, side: int = 100_000, tile: int = 512,
                     shared_tile: bool = False) -> Path:
    """A tiled RGB TIFF claiming ``side`` x ``side`` px, with no pyramid, in a small file.

    Written byte by byte (a TIFF writer would store the pixels): one IFD whose tile
    offsets and byte counts are all zero, so a few hundred kilobytes claim 30 GB of pixels;
    with ``shared_tile`` every tile points at one stored grey tile instead (real pixels).
    """
    import struct

    tiles = (-(-side // tile)) ** 2
    entries = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 3, None), (259, 3, 1, 1),
               (262, 3, 1, 2), (277, 3, 1, 3), (284, 3, 1, 1), (322, 4, 1, tile),
               (323, 4, 1, tile), (324, 4, tiles, None), (325, 4, tiles, None)]
    ifd_at = 8
    data_at = ifd_at + 2 + 12 * len(entries) + 4
    bits_at, zeros_at = data_at, data_at + 6
    offsets_at, counts_at = data_at + 6, data_at + 6 + 4 * tiles
    pixels_at = counts_at + 4 * tiles
    if shared_tile:
        offsets = struct.pack(f"<{tiles}I", *([pixels_at] * tiles))
        counts = struct.pack(f"<{tiles}I", *([tile * tile * 3] * tiles))
        table = struct.pack("<HHH", 8, 8, 8) + offsets + counts + b"\x80" * (tile * tile * 3)
    else:
        table = struct.pack("<HHH", 8, 8, 8) + b"\0" * (4 * tiles)
    out = bytearray(b"II*\0" + struct.pack("<I", ifd_at) + struct.pack("<H", len(entries)))
    for tag, kind, count, value in entries:
        if tag == 258:
            value = bits_at
        elif tag in (324, 325) and shared_tile:
            value = offsets_at if tag == 324 else counts_at
        elif tag in (324, 325):
            value = zeros_at  # both tables point at the same zeros
        packed = struct.pack("<H", value) + b"\0\0" if kind == 3 and count == 1 else \
            struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + packed
    out += struct.pack("<I", 0) + table
    path = folder / f"{'shared' if shared_tile else 'empty'}_tiles_{side}.tif"
    path.write_bytes(bytes(out))
    return path
