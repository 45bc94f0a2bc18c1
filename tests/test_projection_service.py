"""The long-lived projection child and numba's on-disk cache of compiled code."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_dfl.core.errors import Cancelled, DFLError
from napari_dfl.core.explorer.projection import project
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.workflows.jobs import run
from napari_dfl.workflows.projection_service import ProjectionService

IDENTITY = {"name": "b", "weights_sha256": "1", "slide": {"name": "a.svs"}}


def _store(path, rows: int, dim: int, seed: int) -> EmbeddingStore:
    store = EmbeddingStore.create_or_open(path, IDENTITY, dim)
    rng = np.random.default_rng(seed)
    coords = np.stack([np.arange(rows) * 224, np.zeros(rows)], 1).astype(np.int64)
    store.append(coords, rng.normal(size=(rows, dim)).astype(np.float32))
    return store


@pytest.fixture
def service(tmp_path):
    service = ProjectionService(tmp_path / "numba")
    yield service
    service.close()


def test_one_child_serves_several_projections_and_survives_errors(tmp_path, service):
    first = _store(tmp_path / "a__x.dfl.zarr", 40, 8, seed=0)
    second = _store(tmp_path / "b__x.dfl.zarr", 30, 8, seed=1)
    odd = _store(tmp_path / "c__x.dfl.zarr", 30, 5, seed=2)
    never = lambda: False  # noqa: E731

    [xy] = run(service.project([str(first.path)], "pca", never))
    np.testing.assert_allclose(xy, project(first.embeddings(), "pca"), rtol=1e-4, atol=1e-4)
    pid = service._process.pid
    with pytest.raises(DFLError, match="different embedding dimensions"):
        run(service.project([str(second.path), str(odd.path)], "pca", never))
    parts = run(service.project([str(first.path), str(second.path)], "pca", never))
    assert [len(p) for p in parts] == [40, 30]
    assert service.alive and service._process.pid == pid  # the same child all along


def test_cancel_ends_the_child_and_the_next_projection_starts_another(tmp_path, service):
    store = _store(tmp_path / "a__x.dfl.zarr", 40, 8, seed=0)
    calls = iter([False, False, True])
    with pytest.raises(Cancelled, match="PCA projection cancelled"):
        run(service.project([str(store.path)], "pca", lambda: next(calls, True)))
    assert not service.alive
    [xy] = run(service.project([str(store.path)], "pca", lambda: False))
    assert xy.shape == (40, 2) and service.alive


def test_a_child_that_dies_during_a_job_is_reported_and_replaced(tmp_path, service):
    store = _store(tmp_path / "a__x.dfl.zarr", 40, 8, seed=0)

    def kill_the_child() -> bool:  # the job's first cancel check: the child is still starting
        service._process.kill()
        service._process.join(5)
        return False

    with pytest.raises(DFLError, match="ended unexpectedly"):
        run(service.project([str(store.path)], "pca", kill_the_child))
    assert not service.alive
    [xy] = run(service.project([str(store.path)], "pca", lambda: False))
    assert xy.shape == (40, 2)


def test_compiled_code_is_kept_on_disk_for_the_next_process(tmp_path):
    """A function declared without cache=True is cached, and the next process loads it."""
    (tmp_path / "jitted.py").write_text(textwrap.dedent("""
        import numba

        @numba.njit
        def add(a, b):
            return a + b
    """))
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from napari_dfl.core.explorer.numba_cache import keep_compiled_code
        assert keep_compiled_code({str(tmp_path / "cache")!r})
        import jitted
        assert jitted.add(2, 3) == 5
        print(len(jitted.add.stats.cache_hits), len(jitted.add.stats.cache_misses))
    """)
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=120, check=False) for _ in range(2)]
    for done in runs:
        assert done.returncode == 0, done.stderr[-2000:]
    assert runs[0].stdout.split() == ["0", "1"]  # compiled, and written to the cache
    assert runs[1].stdout.split() == ["1", "0"]  # loaded from it
    assert list((tmp_path / "cache").rglob("*.nbi"))


def test_the_cache_is_not_installed_once_umap_is_imported(tmp_path):
    script = textwrap.dedent(f"""
        import umap
        from napari_dfl.core.explorer.numba_cache import keep_compiled_code
        print(keep_compiled_code({str(tmp_path / "cache")!r}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "False" and not (tmp_path / "cache").exists()
