"""Hostile or damaged files are refused before they cost memory or time (issue: nothing hangs).

Each fixture makes a real hostile file on disk: a zip bomb, an archive whose headers claim
terabytes, a named pipe where a file is expected.
"""

from __future__ import annotations

import io
import os
import threading
import zipfile

import numpy as np
import pytest

from napari_dfl.core.errors import DFLError
from napari_dfl.core.heads import prediction_files
from napari_dfl.core.heads.prediction_files import load_arrays, save_arrays
from napari_dfl.core.heads.tile_prediction import TilePrediction
from napari_dfl.core.slides.tissue import TileGrid
from napari_dfl.core.util.files import npz_members


def finishes(call, seconds: float = 20.0):
    """Run ``call`` in a thread; return its exception (None), or fail when it hangs."""
    outcome: dict = {}

    def target() -> None:
        try:
            call()
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{call} hung for {seconds} s"
    return outcome.get("error")


@pytest.fixture
def prediction_file(tmp_path):
    """A real prediction archive of 12 tiles and 3 classes."""
    rng = np.random.default_rng(0)
    index = np.array([(r, c) for r in range(3) for c in range(4)])
    grid = TileGrid(coords=index[:, ::-1] * 224, grid_index=index, grid_shape=(3, 4),
                    tile_size=224.0, patch_size=224, mpp=0.5,
                    tissue_fraction=np.ones(12))
    proba = rng.dirichlet(np.ones(3), 12).astype(np.float32)
    path = save_arrays(TilePrediction(grid, ["a", "b", "c"], proba), tmp_path / "p.npz")
    return path


def npy_bytes(shape, dtype="<f4", payload: bytes = b"") -> bytes:
    """A .npy file whose header claims ``shape``, followed by ``payload`` only."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue() + payload


def rewrite(path, name: str, data: bytes) -> None:
    """Replace one member of an npz archive by ``data``."""
    with zipfile.ZipFile(path) as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    members[name] = data
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, content in members.items():
            archive.writestr(member, content)


def test_a_good_prediction_loads(prediction_file):
    prediction = load_arrays(prediction_file)
    assert prediction.classes == ["a", "b", "c"] and len(prediction.grid) == 12
    members = npz_members(prediction_file, 2**20, "the prediction")
    assert members["proba"].shape == (12, 3) and members["proba"].nbytes == 144


def test_coordinates_claiming_terabytes_are_refused_without_allocating(prediction_file):
    # 10**12 x 2 int64 (16 TB) claimed by a header followed by 16 bytes.
    rewrite(prediction_file, "coords.npy", npy_bytes((10**12, 2), "<i8", b"\0" * 16))
    with pytest.raises(DFLError, match=r"not a valid array archive.*declares"):
        load_arrays(prediction_file)


def test_a_zip_bomb_is_refused(prediction_file, monkeypatch):
    # 96 MiB of zeros deflate to about 100 KB; the limit is lowered to keep the test quick.
    monkeypatch.setattr(prediction_files, "MAX_PREDICTION_BYTES", 64 * 2**20)
    zeros = np.zeros(24 * 2**20, np.float32)
    buffer = io.BytesIO()
    np.save(buffer, zeros)
    rewrite(prediction_file, "proba.npy", buffer.getvalue())
    assert prediction_file.stat().st_size < 2**20
    with pytest.raises(DFLError, match=r"more than 0\.1 GiB of arrays"):
        load_arrays(prediction_file)


def test_a_grid_claiming_a_trillion_cells_is_refused(prediction_file):
    buffer = io.BytesIO()
    np.save(buffer, np.array([10**6, 10**6], np.int64))
    rewrite(prediction_file, "grid_shape.npy", buffer.getvalue())
    with pytest.raises(DFLError, match=r"claims a grid of 1000000 x 1000000 tiles"):
        load_arrays(prediction_file)


def test_pickled_objects_in_an_archive_are_refused(prediction_file):
    rewrite(prediction_file, "classes.npy", npy_bytes((3,), "|O", b"\0" * 8))
    with pytest.raises(DFLError, match="unpickling"):
        load_arrays(prediction_file)


def test_a_named_pipe_never_hangs(tmp_path):
    pipe = tmp_path / "prediction.npz"
    os.mkfifo(pipe)
    error = finishes(lambda: load_arrays(pipe))
    assert isinstance(error, DFLError) and "not a regular file" in str(error)


# -- slides -------------------------------------------------------------------------------

def cli(*args, cwd=None, timeout=120):
    """``napari-dfl ARGS`` in its own process, as a user runs it; the finished process."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "napari_dfl", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_a_named_pipe_as_a_slide_is_refused_at_once(tmp_path):
    from napari_dfl.core.slides.factory import open_slide

    pipe = tmp_path / "slide.svs"
    os.mkfifo(pipe)
    error = finishes(lambda: open_slide(pipe))
    assert isinstance(error, DFLError) and "not a regular file" in str(error)
    for command in (("info", pipe), ("embed", pipe, "--mpp", "0.5", "--stores", tmp_path)):
        done = cli(*command, timeout=60)
        assert done.returncode != 0 and "not a regular file" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("side", [100_000, 1_000_000])
def test_a_tiff_claiming_pixels_it_does_not_hold_is_refused(tmp_path, side):
    from bad_files import huge_empty_tiles
    from napari_dfl.core.slides.tiff import Slide

    path = huge_empty_tiles(tmp_path, side)
    assert path.stat().st_size < 40_000_000
    error = finishes(lambda: Slide(path, mpp=0.5), seconds=60)
    assert isinstance(error, DFLError) and "tiles are empty" in str(error), error
    done = cli("info", path, timeout=120)
    assert done.returncode != 0 and "holds none" in done.stderr, done.stderr


def test_a_huge_tiff_without_a_pyramid_is_refused_with_what_to_do(tmp_path):
    from bad_files import huge_empty_tiles
    from napari_dfl.core.errors import UnsupportedSlideError
    from napari_dfl.core.slides.tiff import Slide

    path = huge_empty_tiles(tmp_path, 100_000, shared_tile=True)  # real pixels, one tile
    error = finishes(lambda: Slide(path, mpp=0.5), seconds=60)
    assert isinstance(error, UnsupportedSlideError), error
    assert "without a pyramid" in str(error) and "vips tiffsave" in str(error)


@pytest.mark.parametrize("fraction", [0.90, 0.95, 0.99])
def test_a_truncated_svs_names_the_missing_tiles(tmp_path, no_mpp_svs_path, fraction):
    from bad_files import truncated
    from napari_dfl.core.errors import CorruptSlideError
    from napari_dfl.core.slides.tiff import Slide

    path = truncated(no_mpp_svs_path, tmp_path, fraction)
    with pytest.raises(CorruptSlideError, match="is truncated") as info:
        Slide(path, mpp=0.5)
    assert "pyramid levels or images stored after it are missing" in str(info.value)
    assert "Copy the file again" in str(info.value)
    done = cli("info", path, "--mpp", "0.5")
    assert done.returncode != 0 and "is truncated" in done.stderr, done.stderr


def test_tiles_past_the_end_of_a_file_are_named(tmp_path):
    from bad_files import huge_empty_tiles
    from napari_dfl.core.errors import CorruptSlideError
    from napari_dfl.core.slides.tiff import Slide

    # its directory comes first and its pixels last: cutting the end keeps the directory
    whole = huge_empty_tiles(tmp_path, 2048, shared_tile=True)
    assert Slide(whole, mpp=0.5).dimensions == (2048, 2048)
    path = tmp_path / "cut.tif"
    path.write_bytes(whole.read_bytes()[:-1000])
    with pytest.raises(CorruptSlideError, match="16 of 16 tiles of level 0") as info:
        Slide(path, mpp=0.5)
    assert "lie past the end of the file" in str(info.value)
    assert "x 0-2,048, y 0-2,048 in level-0 pixels" in str(info.value)


def test_an_empty_output_path_is_refused_before_any_work(tmp_path, sample_slide_path):
    for command in (("embed", sample_slide_path, "--out", ""),
                    ("embed", sample_slide_path, "--stores", "")):
        done = cli(*command, cwd=tmp_path, timeout=60)
        assert done.returncode == 2 and "give a path, not an empty text" in done.stderr
    assert not any(tmp_path.iterdir()), "nothing written into the working folder"


# -- stores -------------------------------------------------------------------------------

def small_store(tmp_path):
    from napari_dfl.core.features.store import EmbeddingStore

    identity = {"backbone": {"name": "efficientnet-lite0", "weights_sha256": "a" * 64},
                "composition": {"patch_size": 112, "zooms": [0.5], "variants": ["rgb"]},
                "slide": {"name": "s.svs", "bytes": 1}}
    store = EmbeddingStore.create_or_open(tmp_path / "s__x.dfl.zarr", identity, 16,
                                          chunk_rows=64)
    coords = np.stack([np.arange(200) * 112, np.zeros(200, np.int64)], axis=1)
    store.append(coords, np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32))
    return store, identity


def test_a_store_whose_metadata_was_edited_is_not_trusted(tmp_path):
    import json

    from napari_dfl.core.features.store import EmbeddingStore
    from napari_dfl.core.features.store_format import META_FILE, CorruptStoreError

    store, _identity = small_store(tmp_path)
    meta_path = store.path / META_FILE
    meta = json.loads(meta_path.read_text())
    meta["identity"]["backbone"]["name"] = "uni"  # claims another backbone
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CorruptStoreError, match="changed after the store was written"):
        EmbeddingStore.open(store.path)
    done = cli("compress", store.path, "--out", tmp_path / "grids")
    assert done.returncode != 0 and "changed after the store was written" in done.stderr
    assert not (tmp_path / "grids").exists() or not any((tmp_path / "grids").iterdir())


def test_a_damaged_chunk_is_found_when_embedding_resumes(tmp_path):
    from napari_dfl.core.features import store as store_module
    from napari_dfl.core.features.store import EmbeddingStore
    from napari_dfl.core.features.store_format import CorruptStoreError

    store, identity = small_store(tmp_path)
    chunk = store.path / "embeddings" / "c" / "0" / "0"  # rows 0-63, complete
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    store_module._CHECKED.clear()  # as a new process would start
    with pytest.raises(CorruptStoreError, match=r"chunk 0 of its embeddings \(rows 0-63\)"):
        EmbeddingStore.create_or_open(store.path, identity, 16)
    with pytest.raises(CorruptStoreError, match="Delete"):  # every read path says so too
        EmbeddingStore.open(store.path).embeddings()


def test_a_chunk_swollen_to_gigabytes_is_refused_before_it_is_read(tmp_path):
    from napari_dfl.core.features.store import EmbeddingStore
    from napari_dfl.core.features.store_format import CorruptStoreError

    store, _identity = small_store(tmp_path)
    chunk = store.path / "embeddings" / "c" / "1" / "0"
    with open(chunk, "r+b") as handle:  # a sparse 20 GB file: nothing on disk, huge to read
        handle.truncate(20 * 2**30)
    with pytest.raises(CorruptStoreError, match="chunk 1 of 'embeddings' is 21,474,836,480"):
        EmbeddingStore.open(store.path)
    done = cli("compress", store.path, "--out", tmp_path / "grids")
    assert done.returncode != 0 and "can be valid" in done.stderr, done.stderr
