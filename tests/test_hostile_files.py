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
