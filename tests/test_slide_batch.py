"""Embedding many slides: serial, on a 2-worker dask LocalCluster, and from the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bad_files import not_an_image
from napari_dfl.cli import main
from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.slides.sampling import Composition
from napari_dfl.workflows.slide_batch import embed_slides, parse_scheduler

SETTINGS = Settings(composition=Composition(224, (0.5,), ("rgb",)), batch_size=8,
                    torch_threads=1)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, sample_slide_path, pyramid_tiff_path):
    folder = tmp_path_factory.mktemp("cohort")
    slides = [folder / "a.svs", folder / "b.tiff"]
    shutil.copy(sample_slide_path, slides[0])
    shutil.copy(pyramid_tiff_path, slides[1])
    return [*slides, not_an_image(folder)]


@pytest.fixture(scope="module")
def serial(cohort, tmp_path_factory):
    return embed_slides(cohort, SETTINGS.with_(store_dir=str(tmp_path_factory.mktemp("s"))))


def test_serial_reports_each_slide_and_skips_the_bad_one(serial, cohort):
    assert [r["status"] for r in serial] == ["ok", "ok", "error"]
    assert "TIFF-family slide" in serial[2]["error"]
    for report in serial[:2]:
        store = EmbeddingStore.open(report["store"])
        assert len(store) == report["samples"] > 20 and store.dim == 1280


def test_distributed_equals_serial(serial, cohort, tmp_path):
    reports = embed_slides(cohort, SETTINGS.with_(store_dir=str(tmp_path)), scheduler="local:2")
    assert [r["status"] for r in reports] == ["ok", "ok", "error"]
    for mine, theirs in zip(reports[:2], serial[:2], strict=True):
        a, b = EmbeddingStore.open(mine["store"]), EmbeddingStore.open(theirs["store"])
        order = np.lexsort(a.coords.T)
        np.testing.assert_array_equal(a.coords[order], b.coords[np.lexsort(b.coords.T)])
        np.testing.assert_allclose(a.get(a.coords), b.get(a.coords), rtol=1e-3, atol=1e-3)


def test_cli_embed_resumes_and_reports_json(cohort, tmp_path, capsys):
    args = ["embed", str(cohort[0]), "--out", str(tmp_path), "--zooms", "0.5",
            "--variants", "rgb", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["status"] == "ok" and first["computed"] == first["samples"] > 20
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["computed"] == 0 and second["store"] == first["store"]


def test_cli_embed_partial_failure_exit_code(cohort, tmp_path, capsys):
    code = main(["embed", str(cohort[2]), "--out", str(tmp_path), "--zooms", "0.5",
                 "--variants", "rgb"])
    assert code == 1
    assert "FAILED" in capsys.readouterr().err


def test_cli_embed_bad_options_are_one_line(tmp_path, cohort, capsys):
    # refused while the options are parsed, before any slide is opened
    with pytest.raises(SystemExit) as stop:
        main(["embed", str(cohort[0]), "--stores", str(tmp_path), "--variants", "hsv"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "unknown colour variant(s) hsv: choose among rgb,gray,stain" in err[-1]
    assert list(tmp_path.iterdir()) == []


def test_scheduler_parsing():
    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("tcp://10.0.0.1:8786") == ("tcp://10.0.0.1:8786", None)
    with pytest.raises(DFLError, match="positive worker count"):
        parse_scheduler("local:zero")


def test_cli_h5_export_and_import_round_trip(serial, tmp_path, capsys):
    import h5py

    store = EmbeddingStore.open(serial[0]["store"])
    h5 = tmp_path / "features.h5"
    assert main(["export-h5", str(store.path), str(h5)]) == 0
    with h5py.File(h5, "r") as handle:
        np.testing.assert_array_equal(handle["coords"][:], store.coords)
        np.testing.assert_array_equal(handle["features"][:], store.embeddings())
    assert main(["import-h5", str(h5), str(tmp_path / "back.dfl.zarr")]) == 0
    back = EmbeddingStore.open(tmp_path / "back.dfl.zarr")
    np.testing.assert_array_equal(back.get(store.coords), store.embeddings())
    assert "imported" in capsys.readouterr().out
