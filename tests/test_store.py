"""The resumable embedding store and its TRIDENT/CLAM h5 interop, on real files on disk."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_dfl.core.errors import DFLError
from napari_dfl.core.features import store as store_mod
from napari_dfl.core.features.store import (
    STORE_FORMAT_VERSION,
    CorruptStoreError,
    EmbeddingStore,
    MissingEmbeddingsError,
    ReadOnlyStoreError,
    StoreMismatchError,
    StoreNotFoundError,
)
from napari_dfl.core.features.store_folder import store_path_for

DIM = 16
IDENTITY = {
    "slide": {"name": "s1.svs", "size": 123},
    "backbone": {"name": "tf_efficientnet_lite0", "weights_sha256": "aaa"},
    "composition": {"zooms": [0.5, 2.0], "variants": ["rgb", "gray"], "patch_size": 224},
    "package_version": "0.1.0",
}


def grid(n: int, offset: int = 0, step: int = 256) -> np.ndarray:
    i = np.arange(offset, offset + n)
    return np.stack([(i % 97) * step, (i // 97) * step], axis=1).astype(np.int64)


def feats(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def make(tmp_path: Path, chunk_rows: int | None = 8, **kw) -> EmbeddingStore:
    return EmbeddingStore.create_or_open(
        tmp_path / "s.dfl.zarr", kw.get("identity", IDENTITY), DIM, chunk_rows=chunk_rows
    )


# ------------------------------------------------------------------ round trip and lookup


def test_create_append_reopen_round_trip(tmp_path):
    store = make(tmp_path)
    c, e = grid(21), feats(21)
    store.append(c[:10], e[:10])
    store.append(c[10:], e[10:])
    store.set_attrs(tile_size_level0=512, mpp=0.499, slide_name="s1")
    assert len(store) == 21

    again = EmbeddingStore.open(store.path)
    assert again.read_only and len(again) == 21 and again.dim == DIM
    assert again.identity == IDENTITY
    assert again.attrs == {"tile_size_level0": 512, "mpp": 0.499, "slide_name": "s1"}
    np.testing.assert_array_equal(again.coords, c)
    np.testing.assert_array_equal(again.embeddings(), e)
    assert again.coords.dtype == np.int64 and again.embeddings().dtype == np.float32
    np.testing.assert_array_equal(again.embeddings(slice(3, 12, 2)), e[3:12:2])
    np.testing.assert_array_equal(again.embeddings(np.array([20, 0, 20, 5])), e[[20, 0, 20, 5]])
    mask = np.zeros(21, bool)
    mask[[1, 7]] = True
    np.testing.assert_array_equal(again.embeddings(mask), e[mask])
    meta = json.loads((store.path / "dfl_store.json").read_text())
    assert meta["format_version"] == STORE_FORMAT_VERSION
    assert json.loads((store.path / "dfl_commit.json").read_text()) == {"count": 21}

    with pytest.raises(ReadOnlyStoreError):
        again.append(grid(1, 500), feats(1))
    with pytest.raises(DFLError, match="-1"):
        again.embeddings(np.array([-1]))

    reopened = EmbeddingStore.create_or_open(store.path, IDENTITY, DIM)
    assert len(reopened) == 21 and reopened.chunk_rows == 8  # chunking is the store's own


def test_lookup_missing_get(tmp_path):
    store = make(tmp_path)
    c, e = grid(30), feats(30)
    store.append(c, e)
    query = np.array([c[5], [999_999, 1], c[0], [-256, 0], [2**40, 0]])
    np.testing.assert_array_equal(store.lookup(query), [5, -1, 0, -1, -1])
    np.testing.assert_array_equal(store.missing(query), [False, True, False, True, True])
    np.testing.assert_array_equal(store.get(c[[29, 3]]), e[[29, 3]])
    with pytest.raises(MissingEmbeddingsError, match="3 of 5 coordinates") as info:
        store.get(query)
    assert isinstance(info.value, KeyError) and isinstance(info.value, DFLError)
    assert len(info.value.missing) == 3
    with pytest.raises(DFLError, match="integers"):
        store.lookup(np.array([[1.5, 2.0]]))
    assert store.lookup(np.empty((0, 2), np.int64)).shape == (0,)


def test_duplicates_skipped_first_written_kept(tmp_path):
    store = make(tmp_path)
    c = grid(5)
    store.append(c, feats(5, seed=1))
    batch = np.concatenate([c[:2], grid(2, 100), grid(2, 100)])
    store.append(batch, feats(6, seed=2))
    assert len(store) == 7
    np.testing.assert_array_equal(store.get(c), feats(5, seed=1))
    np.testing.assert_array_equal(store.get(grid(2, 100)), feats(6, seed=2)[2:4])
    store.append(c, feats(5, seed=3))  # all present: nothing written
    assert len(store) == 7
    assert len(np.unique(EmbeddingStore.open(store.path).coords, axis=0)) == 7


def test_negative_coords_allowed(tmp_path):
    store = make(tmp_path)
    c = np.array([[-128, -128], [-128, 0], [0, -128]])
    store.append(c, feats(3))
    np.testing.assert_array_equal(store.lookup(c[::-1]), [2, 1, 0])


# ------------------------------------------------------------------ refusals


def test_mismatched_identity_lists_dotted_keys(tmp_path):
    make(tmp_path).append(grid(3), feats(3))
    other = json.loads(json.dumps(IDENTITY))
    other["backbone"]["weights_sha256"] = "bbb"
    other["composition"]["zooms"] = [0.5]
    other["extra"] = 1
    with pytest.raises(StoreMismatchError) as info:
        EmbeddingStore.create_or_open(tmp_path / "s.dfl.zarr", other, DIM)
    msg = str(info.value)
    for text in ('backbone.weights_sha256 is "aaa"', '"bbb"', "composition.zooms", "[0.5, 2.0]"):
        assert text in msg
    assert "extra is (absent) in the store but 1 now" in msg
    assert "--out" in msg and "delete" in msg
    assert [d[0] for d in info.value.differences] == [
        "backbone.weights_sha256",
        "composition.zooms",
        "extra",
    ]
    # Tuples and numpy scalars normalise to JSON: the same identity still opens.
    same = dict(IDENTITY, composition=dict(IDENTITY["composition"], zooms=(0.5, np.float64(2))))
    assert len(EmbeddingStore.create_or_open(tmp_path / "s.dfl.zarr", same, DIM)) == 3


def test_dim_mismatch_refused(tmp_path):
    make(tmp_path)
    with pytest.raises(StoreMismatchError, match="dim is 16 in the store but 32 now"):
        EmbeddingStore.create_or_open(tmp_path / "s.dfl.zarr", IDENTITY, 32)


def test_identity_must_be_json(tmp_path):
    with pytest.raises(DFLError, match="JSON"):
        EmbeddingStore.create_or_open(tmp_path / "x.dfl.zarr", {"f": object()}, DIM)
    with pytest.raises(DFLError, match="JSON"):
        EmbeddingStore.create_or_open(tmp_path / "x.dfl.zarr", {"f": float("nan")}, DIM)
    assert not (tmp_path / "x.dfl.zarr").exists()


def test_corrupt_or_missing_store_refused(tmp_path):
    store = make(tmp_path)
    store.append(grid(20), feats(20))
    with pytest.raises(StoreNotFoundError):
        EmbeddingStore.open(tmp_path / "nope.dfl.zarr")

    meta = store.path / "dfl_store.json"
    good = meta.read_text()
    meta.write_text(good[: len(good) // 2])
    with pytest.raises(CorruptStoreError, match=r"garbled.*Delete"):
        EmbeddingStore.open(store.path)
    with pytest.raises(CorruptStoreError):
        EmbeddingStore.create_or_open(store.path, IDENTITY, DIM)
    meta.unlink()
    with pytest.raises(CorruptStoreError, match=r"dfl_store\.json"):
        EmbeddingStore.open(store.path)
    meta.write_text(good)
    assert len(EmbeddingStore.open(store.path)) == 20

    chunk = store.path / "embeddings" / "c" / "1" / "0"
    chunk.rename(chunk.with_name("moved"))
    with pytest.raises(CorruptStoreError, match="chunk 1 of 'embeddings' is missing"):
        EmbeddingStore.open(store.path)
    chunk.with_name("moved").write_bytes(b"garbage")
    chunk.with_name("moved").rename(chunk)
    broken = EmbeddingStore.open(store.path)
    with pytest.raises(CorruptStoreError, match="Could not read embeddings"):
        broken.embeddings()
    with pytest.raises(CorruptStoreError):
        broken.verify()

    first = store.path / "embeddings" / "c" / "0" / "0"
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a valid zstd frame
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError):
        EmbeddingStore.open(store.path).embeddings(slice(0, 8))

    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("x")
    with pytest.raises(CorruptStoreError, match="not a napari-dfl embedding store"):
        EmbeddingStore.create_or_open(tmp_path / "plain", IDENTITY, DIM)


def test_nan_refused_and_nothing_written(tmp_path):
    store = make(tmp_path)
    store.append(grid(4), feats(4))
    bad = feats(6, seed=5)
    bad[3, 2] = np.nan
    with pytest.raises(DFLError, match="NaN or inf"):
        store.append(grid(6, 50), bad)
    bad[3, 2] = np.inf
    with pytest.raises(DFLError, match="nothing was written"):
        store.append(grid(6, 50), bad)
    assert len(store) == 4
    assert store.missing(grid(6, 50)).all()
    reopened = EmbeddingStore.open(store.path)
    assert len(reopened) == 4
    assert json.loads((store.path / "dfl_commit.json").read_text())["count"] == 4
    with pytest.raises(DFLError, match="shape"):
        store.append(grid(2), feats(3))
    with pytest.raises(DFLError, match="floating"):
        store.append(grid(2), np.ones((2, DIM), np.int32))


# ------------------------------------------------------------------ resumability


def test_crash_before_commit_keeps_old_rows(tmp_path, monkeypatch):
    store = make(tmp_path, chunk_rows=8)
    c, e = grid(30), feats(30)
    store.append(c[:13], e[:13])  # ends mid-chunk: the next append rewrites chunk 1

    def crash(*_args):
        raise RuntimeError("simulated crash before commit")

    monkeypatch.setattr(store_mod, "write_commit", crash)
    junk = feats(9, seed=99)
    with pytest.raises(RuntimeError, match="simulated"):
        store.append(grid(9, 1000), junk)
    monkeypatch.undo()
    assert len(store) == 13 and store.missing(grid(9, 1000)).all()

    raw = store_mod.EmbeddingStore.open(store.path)._emb  # uncommitted rows are on disk...
    np.testing.assert_array_equal(raw[13:22], junk)
    reopened = EmbeddingStore.open(store.path)  # ...but invisible
    assert len(reopened) == 13
    np.testing.assert_array_equal(reopened.embeddings(), e[:13])
    np.testing.assert_array_equal(reopened.coords, c[:13])
    assert reopened.missing(grid(9, 1000)).all()

    resumed = EmbeddingStore.create_or_open(store.path, IDENTITY, DIM)
    resumed.append(c[13:], e[13:])  # overwrites the uncommitted rows
    final = EmbeddingStore.open(store.path)
    np.testing.assert_array_equal(final.embeddings(), e)
    np.testing.assert_array_equal(final.coords, c)
    assert final.missing(grid(9, 1000)).all()


def test_hard_kill_between_rows_and_commit(tmp_path):
    """A real process death (os._exit: no cleanup runs) in the middle of an append."""
    path = tmp_path / "s.dfl.zarr"
    script = f"""
import os, numpy as np
from napari_dfl.core.features import store as m
s = m.EmbeddingStore.create_or_open({str(path)!r}, {{"k": 1}}, 4, chunk_rows=8)
s.append(np.array([[0, 0], [1, 0], [2, 0]]), np.ones((3, 4), np.float32))
m.write_commit = lambda *a: os._exit(3)
s.append(np.array([[3, 0], [4, 0]]), np.full((2, 4), 7, np.float32))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == 3, proc.stderr.decode()
    store = EmbeddingStore.create_or_open(path, {"k": 1}, 4)
    assert len(store) == 3
    np.testing.assert_array_equal(store.embeddings(), np.ones((3, 4), np.float32))
    store.append(np.array([[5, 0]]), np.full((1, 4), 2, np.float32))
    np.testing.assert_array_equal(store.coords, [[0, 0], [1, 0], [2, 0], [5, 0]])


def test_resume_equals_uninterrupted(tmp_path):
    c, e = grid(100), feats(100)
    once = EmbeddingStore.create_or_open(tmp_path / "a.dfl.zarr", IDENTITY, DIM, chunk_rows=16)
    once.append(c, e)
    pieces = EmbeddingStore.create_or_open(tmp_path / "b.dfl.zarr", IDENTITY, DIM, chunk_rows=16)
    for lo, hi in [(0, 7), (7, 40), (0, 40), (40, 41), (41, 100)]:
        pieces = EmbeddingStore.create_or_open(pieces.path, IDENTITY, DIM)  # reopen each time
        todo = pieces.missing(c[lo:hi])
        pieces.append(c[lo:hi][todo], e[lo:hi][todo])
    a, b = EmbeddingStore.open(once.path), EmbeddingStore.open(pieces.path)
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_array_equal(a.embeddings(), b.embeddings())


# ------------------------------------------------------------------ streaming


def test_to_dask_and_iter_chunks_stream_equal(tmp_path):
    store = make(tmp_path, chunk_rows=8)
    c, e = grid(45), feats(45)
    store.append(c, e)
    arr = store.to_dask()
    assert arr.shape == (45, DIM) and arr.chunks[0][0] == 8
    np.testing.assert_array_equal(arr.compute(), e)
    assert store.to_dask(rows=20).chunks[0][0] == 24
    blocks = list(store.iter_chunks(rows=10))
    assert [len(b[0]) for b in blocks] == [10, 10, 10, 10, 5]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in blocks]), c)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), e)
    assert sum(len(b[1]) for b in store.iter_chunks()) == 45
    store.verify()


def test_default_chunk_rows_bounded_by_bytes(tmp_path):
    wide = EmbeddingStore.create_or_open(tmp_path / "w.dfl.zarr", {"a": 1}, 5120)
    narrow = EmbeddingStore.create_or_open(tmp_path / "n.dfl.zarr", {"a": 1}, 64)
    assert wide.chunk_rows == 128 and narrow.chunk_rows == 4096


def test_store_path_for():
    ident = dict(IDENTITY, backbone={"name": "hf-hub:MahmoodLab/UNI", "weights_sha256": "x"})
    p = store_path_for("/out", "/data/slide one.svs", ident)
    assert p.parent == Path("/out") and p.name.endswith(".dfl.zarr")
    stem, backbone, digest = p.name[: -len(".dfl.zarr")].split("__")
    assert (stem[:-9], backbone, len(digest)) == ("slide_one", "hf-hub_MahmoodLab_UNI", 12)
    assert stem[-9] == "-" and int(stem[-8:], 16) >= 0  # the slide's content key
    other_slide = store_path_for("/out", "/data/slide two.svs", dict(ident, slide={"n": 2}))
    assert (
        other_slide.name.split("__")[2] == f"{digest}.dfl.zarr"
    )  # the slide part does not enter the extractor's hash
    # another file with the same name: another store; the name alone: no content key
    twin = store_path_for("/out", "/elsewhere/slide one.svs",
                          dict(ident, slide={"name": "slide one.svs", "size": 999}))
    assert twin.parent == p.parent and twin.name != p.name
    assert twin.name.split("__")[1:] == p.name.split("__")[1:]
    bare = store_path_for("/out", "/data/slide one.svs", dict(ident, slide={"name": "x"}))
    assert bare.name.split("__")[0] == "slide_one"
    assert store_path_for("/out", "/data/slide one.svs", ident) == p
    changed = dict(ident, composition={"zooms": [0.5]})
    assert store_path_for("/out", "/data/slide one.svs", changed) != p


# ------------------------------------------------------------------ property test


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(
        st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), min_size=0, max_size=12),
        min_size=1,
        max_size=5,
    ),
    seed=st.integers(0, 2**16),
)
def test_property_appends_unique_first_written(batches, seed):
    rng = np.random.default_rng(seed)
    expected: dict[tuple[int, int], np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddingStore.create_or_open(Path(tmp) / "p.dfl.zarr", {"p": 1}, 3, chunk_rows=4)
        for batch in batches:
            coords = np.array(batch, dtype=np.int64).reshape(-1, 2)
            emb = rng.standard_normal((len(coords), 3)).astype(np.float32)
            store.append(coords, emb)
            for xy, vec in zip(map(tuple, coords.tolist()), emb, strict=True):
                expected.setdefault(xy, vec)
        for reader in (store, EmbeddingStore.open(store.path)):
            assert len(reader) == len(expected)
            assert len(np.unique(reader.coords, axis=0)) == len(reader)
            if expected:
                keys = np.array(list(expected), dtype=np.int64)
                rows = reader.lookup(keys)
                assert (rows >= 0).all()
                np.testing.assert_array_equal(
                    reader.embeddings(rows), np.stack(list(expected.values()))
                )


# ------------------------------------------------------------------ h5 interop


@pytest.fixture
def h5py():
    return pytest.importorskip("h5py")


def test_export_h5_read_back(tmp_path, h5py):
    from napari_dfl.core.features.h5 import IDENTITY_ATTR, export_h5, import_h5

    store = make(tmp_path)
    c, e = grid(37), feats(37)
    store.append(c, e)
    store.set_attrs(tile_size_level0=512.0, patch_size=256, level0_magnification=20)
    out = export_h5(store, tmp_path / "h5" / "s1.h5")
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["features"][:], e)
        np.testing.assert_array_equal(f["coords"][:], c)
        assert f["features"].dtype == np.float32 and f["coords"].dtype == np.int64
        assert f["coords"].attrs["patch_size_level0"] == 512
        assert np.issubdtype(f["coords"].attrs["patch_size_level0"].dtype, np.integer)
        assert f["coords"].attrs["patch_size"] == 256
        assert f["coords"].attrs["level0_magnification"] == 20
        assert json.loads(f.attrs[IDENTITY_ATTR]) == IDENTITY
    assert [p.name for p in out.parent.iterdir()] == ["s1.h5"]  # no temp file left
    export_h5(store, out, patch_size_level0=1024)
    with h5py.File(out, "r") as f:
        assert f["coords"].attrs["patch_size_level0"] == 1024

    back = import_h5(out, tmp_path / "back.dfl.zarr")
    np.testing.assert_array_equal(back.embeddings(), e)
    assert back.identity[IDENTITY_ATTR] == IDENTITY and back.identity["imported_from"] == "s1.h5"
    assert back.attrs["patch_size_level0"] == 1024
    again = import_h5(out, tmp_path / "back.dfl.zarr")  # idempotent
    assert len(again) == 37


def test_import_clam_style_3d(tmp_path, h5py):
    from napari_dfl.core.features.h5 import import_h5

    c, e = grid(12), feats(12, dim=8)
    path = tmp_path / "clam.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=e[None].astype(np.float64))
        coords = f.create_dataset("coords", data=c.astype(np.int32))
        coords.attrs["patch_size"] = 256
        coords.attrs["patch_level"] = 0
        coords.attrs["downsample"] = np.array([2.0, 2.0])
    store = import_h5(path, tmp_path / "clam.dfl.zarr")
    assert store.dim == 8 and len(store) == 12
    np.testing.assert_array_equal(store.embeddings(), e)
    np.testing.assert_array_equal(store.get(c[::-1]), e[::-1])
    assert (
        set(store.identity) == {"imported_from", "sha256"} and len(store.identity["sha256"]) == 64
    )
    assert store.attrs["patch_size_level0"] == 512


def test_import_refuses_bad_files(tmp_path, h5py):
    from napari_dfl.core.features.h5 import H5FormatError, import_h5

    text = tmp_path / "notes.h5"
    text.write_text("this is not hdf5")
    with pytest.raises(H5FormatError, match="not an HDF5 file"):
        import_h5(text, tmp_path / "x.dfl.zarr")
    no_coords = tmp_path / "no_coords.h5"
    with h5py.File(no_coords, "w") as f:
        f.create_dataset("features", data=feats(3))
    with pytest.raises(H5FormatError, match=r"no 'coords' dataset.*features"):
        import_h5(no_coords, tmp_path / "x.dfl.zarr")
    nan = tmp_path / "nan.h5"
    bad = feats(3)
    bad[1, 1] = np.nan
    with h5py.File(nan, "w") as f:
        f.create_dataset("features", data=bad)
        f.create_dataset("coords", data=grid(3))
    with pytest.raises(H5FormatError, match="NaN"):
        import_h5(nan, tmp_path / "x.dfl.zarr")
    mismatch = tmp_path / "mismatch.h5"
    with h5py.File(mismatch, "w") as f:
        f.create_dataset("features", data=feats(3))
        f.create_dataset("coords", data=grid(4))
    with pytest.raises(H5FormatError, match=r"\(3, 2\)"):
        import_h5(mismatch, tmp_path / "x.dfl.zarr")
    assert not (tmp_path / "x.dfl.zarr").exists()


def test_missing_h5py_message(monkeypatch, tmp_path):
    from napari_dfl.core.features import h5 as h5io

    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(h5io.MissingDependencyError, match=r"pip install napari-dfl\[h5\]"):
        h5io.export_h5(make(tmp_path), tmp_path / "x.h5")
