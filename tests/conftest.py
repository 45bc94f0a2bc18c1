"""Shared fixtures: real slides on disk (the bundled CC0 sample and ../shared/data)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SLIDE = ROOT / "sample_data" / "CMU-1-Small-Region.svs"
SHARED_DATA = Path(os.environ.get("NAPARI_DFL_SHARED_DATA", ROOT.parent / "shared" / "data"))
SHARED_SLIDES = SHARED_DATA / "slides"

#: Each napari viewer opened and closed in this environment (Python 3.11) leaves the
#: refcount of ``None`` about 8,000 lower than before (measured with
#: ``sys.getrefcount(None)`` around ``napari.Viewer(show=True)`` / ``viewer.close()``, with
#: or without this plugin): a C extension of the viewer stack drops references to ``None``
#: it never took. With all the suite's viewers together the count reaches
#: zero at interpreter exit ("Fatal Python error: none_dealloc", exit 134, after every test
#: passed). This list of references is leaked on purpose (never freed, not even while the
#: interpreter finalizes) to keep the count positive; ``None`` is immortal from 3.12 on.
_NONE_REFERENCES = [None] * 2_000_000
ctypes.pythonapi.Py_IncRef(ctypes.py_object(_NONE_REFERENCES))


@pytest.fixture(autouse=True, scope="session")
def numba_cache_folder(tmp_path_factory):
    """The suite's own folder for numba's compiled UMAP (shared by its tests, not the user's)."""
    from napari_dfl.workflows.projection_service import NUMBA_CACHE_ENV

    folder = tmp_path_factory.mktemp("numba-cache")
    previous = os.environ.get(NUMBA_CACHE_ENV)
    os.environ[NUMBA_CACHE_ENV] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop(NUMBA_CACHE_ENV, None)
    else:
        os.environ[NUMBA_CACHE_ENV] = previous


@pytest.fixture(autouse=True)
def user_folders(tmp_path, monkeypatch):
    """Each test gets its own autosave, store and config folders (never the user's)."""
    from napari_dfl.core.util.paths import AUTOSAVE_ENV, CONFIG_ENV, STORES_ENV

    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "user-config"))
    monkeypatch.setenv(AUTOSAVE_ENV, str(tmp_path / "user-autosave"))
    monkeypatch.setenv(STORES_ENV, str(tmp_path / "user-stores"))
    return tmp_path


def shared_file(relative: str) -> Path:
    """Path of a file under ../shared/data, or skip the test with a message."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: real-data test skipped (set NAPARI_DFL_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def sample_slide_path() -> Path:
    """The CC0 sample slide shipped with the project."""
    return SAMPLE_SLIDE


@pytest.fixture(scope="module")
def slide(sample_slide_path):
    """The sample slide, opened once per test module."""
    from napari_dfl import Slide

    with Slide(sample_slide_path) as opened:
        yield opened


@pytest.fixture(scope="session")
def pyramid_tiff_path() -> Path:
    """A 3-level tiled JPEG TIFF with resolution tags (shared data)."""
    return shared_file("slides/CMU-1-Small-Region_pyramid.tiff")


@pytest.fixture(scope="session")
def no_mpp_svs_path() -> Path:
    """A JPEG2000 Aperio frozen section without mpp (shared data)."""
    return shared_file("slides/tcga-cr-7395-01a-01-ts1.svs")


#: Embeddings of the same pixels computed in different batches agree to these tolerances
#: (``rtol = atol``, then the least cosine): in fp32 up to the kernels' summation order; in
#: bf16 (chosen on CPUs with AMX) each layer rounds to 8 significant bits, and oneDNN's
#: kernels depend on the batch, so single values differ by up to ~5 % (measured: 0.055 on
#: values near 1.25) while the vectors keep a cosine of 0.99996.
EMBEDDING_TOLERANCE = {"fp32": (2e-2, 0.9999), "bf16": (1e-1, 0.9995), "fp16": (1e-1, 0.9995)}


def assert_same_embeddings(got, expected, precision: str) -> None:
    """Assert two embeddings of the same pixels agree as the backbone's precision allows."""
    import numpy as np

    tol, least_cosine = EMBEDDING_TOLERANCE[precision]
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(
        expected, axis=1)
    assert cosine.min() > least_cosine, (precision, cosine.min())


@pytest.fixture(scope="session")
def backbone():
    """The real default backbone (EfficientNet-Lite0, ImageNet weights from its package)."""
    from napari_dfl.core.backbones.backbone import load_backbone

    return load_backbone()


@pytest.fixture
def notes():
    """Messages of the napari notifications shown during the test."""
    from napari.utils.notifications import notification_manager

    seen: list[str] = []

    def record(event):
        seen.append(str(event.message))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


#: A composition the 2-core test machine affords: 112 px, x20 only, RGB only.
FAST_COMPOSITION = (112, (0.5,), ("rgb",))


def configure_fast_panel(widget, store_dir, min_tissue: float = 0.0) -> None:
    """Set the panel's form to :data:`FAST_COMPOSITION` and ``store_dir``, as a user would.

    ``min_tissue`` 0 predicts glass too (to see the background class there).
    """
    form = widget.form
    form.patch_spin.setValue(112)
    form.zooms_edit.setText("0.5")
    form.zooms_edit.editingFinished.emit()
    form.gray_check.setChecked(False)
    form.tissue_spin.setValue(min_tissue)
    form.store_edit.setText(str(store_dir))
    form.store_edit.editingFinished.emit()
    settings = widget.session.settings
    assert settings.composition.to_dict() == {"patch_size": 112, "zooms": [0.5],
                                              "variants": ["rgb"], "input_size": None}
    assert settings.store_dir == str(store_dir) and settings.min_tissue == min_tissue


@pytest.fixture
def configure_fast():
    """:func:`configure_fast_panel`, for the GUI tests that run the real backbone."""
    return configure_fast_panel


def _resident_mb() -> float:
    """This process's resident memory, in MiB (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    """With ``NAPARI_DFL_RSS_LOG=FILE``, append each test's resident memory after it ran.

    ``FILE`` gets one line per test, ``<MiB>\\t<test id>``: the memory-growth figures of
    docs/reliability.md come from it.
    """
    log = os.environ.get("NAPARI_DFL_RSS_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{_resident_mb():.0f}\t{item.nodeid}\n")

