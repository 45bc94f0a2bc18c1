"""Undefined metrics are told as "n/a (why)", never a TypeError after the work is done.

Cohen's kappa is undefined (None in the reports) when a validation fold holds one class and
every sample of it is predicted as that class; a standard deviation over folds is undefined
with fewer than two values. The data are real Kather tiles (CC BY 4.0, ../shared/data):
four adipose and three lymphocyte tiles cut into four grouped folds, so one fold holds one
adipose tile alone.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import shared_file
from napari_dfl.cli import main
from napari_dfl.core.heads.metrics import NO_KAPPA, NO_SD, classification_report, metric_text

FAST = ["--patch-size", "112", "--zooms", "0.5", "--variants", "rgb", "--mpp", "0.5",
        "--device", "cpu", "--head", "linear", "--loss", "ce"]


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """Four ADI and three LYM tiles as a folder of class subfolders (one group per tile)."""
    source = shared_file("kather_tiles/crc_val_he_7k")
    root = tmp_path_factory.mktemp("tiles") / "adi-lym"
    for name, count in (("ADI", 4), ("LYM", 3)):
        (root / name).mkdir(parents=True)
        for path in sorted((source / name).iterdir())[:count]:
            shutil.copy(path, root / name / path.name)
    return root


def test_metric_text_says_why():
    assert metric_text(0.81234) == "0.812"
    assert metric_text(0.5, digits=2) == "0.50"
    assert metric_text(None, NO_KAPPA) == f"n/a ({NO_KAPPA})"
    assert metric_text(float("nan"), NO_SD) == f"n/a ({NO_SD})"
    # The undefined kappa is what sklearn gives for a one-class validation set.
    report = classification_report(np.zeros(5), np.zeros(5), None, ["ADI", "LYM"])
    assert report["cohen_kappa"] is None and report["balanced_accuracy"] == 1.0


def test_evaluate_names_the_folds_without_kappa(tiles, tmp_path, capsys):
    stores = str(tmp_path / "stores")
    args = ["evaluate", str(tiles), "--folds", "4", "--stores", stores, *FAST]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    kappas = [fold["cohen_kappa"] for fold in result["folds"]]
    assert None in kappas, kappas  # the data do hold a one-class fold
    assert main(args) == 0
    out = capsys.readouterr().out
    undefined = [str(f["fold"]) for f in result["folds"] if f["cohen_kappa"] is None]
    assert f"Cohen kappa is undefined in fold{'s' if len(undefined) > 1 else ''} " \
           f"{', '.join(undefined)} ({NO_KAPPA}" in out, out
    assert "cohen_kappa" in out and "Traceback" not in out


def test_undefined_kappa_and_sd_read_na_in_every_message(tiles, tmp_path):
    """A cross-validation whose kappa is undefined in every fold (as when each fold holds one
    class) reaches the train line, the panel, the ranking and its files as "n/a (why)"."""
    from napari_dfl._qt.metrics_view import assessment_html
    from napari_dfl.core.features.settings import Settings
    from napari_dfl.core.heads.assessment import assess, summary_line
    from napari_dfl.core.heads.selection import (
        markdown_table,
        probe_row,
        rank,
        write_results,
    )
    from napari_dfl.core.heads.validation import cross_validate, json_ready
    from napari_dfl.core.slides.sampling import Composition
    from napari_dfl.workflows.labelled import embed_labelled

    settings = Settings(composition=Composition(112, (0.5,), ("rgb",)), mpp=0.5,
                        store_dir=str(tmp_path / "stores"), device="cpu")
    data = embed_labelled([tiles], settings)
    result = cross_validate(data.embeddings, data.labels, data.groups, folds=4)
    one_class = [f["cohen_kappa"] for f in result["folds"] if f["cohen_kappa"] is None]
    assert one_class, [f["cohen_kappa"] for f in result["folds"]]
    # Every fold like the one-class fold: the mean and the sd have nothing to stand on.
    result.update(cohen_kappa=one_class[0], cohen_kappa_sd=None)
    row = probe_row("efficientnet-lite0", result, data.embeddings.shape[1])
    assert row["cohen_kappa"] is None and row["cohen_kappa_sd"] is None
    other = dict(row, backbone="second", balanced_accuracy=row["balanced_accuracy"],
                 cohen_kappa=0.5, cohen_kappa_sd=0.1)
    ranked = rank([row, other])
    if row["balanced_accuracy"] == other["balanced_accuracy"]:
        assert ranked[0]["backbone"] == "second"  # a defined kappa ranks above none
    table = markdown_table(ranked)
    assert f"n/a ({NO_KAPPA}) ± n/a ({NO_SD})" in table
    paths = write_results(ranked, tmp_path / "selection")
    assert paths["png"].stat().st_size > 0 and ",," in paths["csv"].read_text()

    assessment = json_ready(assess(data.embeddings, data.labels, data.groups, folds=4))
    assessment.update(judgeable=True, folds=4, n=7, ci=[0.5, 1.0], balanced_accuracy=1.0,
                      weighted_f1=1.0, cohen_kappa=one_class[0])
    line = summary_line(assessment)
    assert f"Cohen kappa n/a ({NO_KAPPA})" in line and "balanced accuracy 1.000" in line
    assert f"n/a ({NO_KAPPA})" in assessment_html(assessment)
