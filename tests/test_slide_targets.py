"""Slide-level regression and multi-label targets: reading, training, baseline, files, CLI.

Cohorts are written to real stores on disk (structured random embeddings, D = 16): every
slide holds a share of tiles from a planted cluster, and the CSV's targets depend on that
share (numbers, a threshold) or are pure noise. The evidence on real tissue embeddings is in
``tests/test_mil.py``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from napari_dfl.core.features.extractor import Extractor
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.slide_level.config import MILConfig, MILError, TargetSpec
from napari_dfl.core.slide_level.targets import read_target_cohort, select_targets
from napari_dfl.core.slides.sampling import Composition

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("slide_level_bench", ROOT / "benchmarks" /
                                               "slide_level.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

EXTRACTOR = Extractor({"name": "random", "embed_dim": 16},
                      Composition(224, (0.5,), ("rgb",))).to_dict()


def _cohort(folder: Path, n: int = 16, seed: int = 0) -> tuple[Path, np.ndarray]:
    background, planted = bench._random_sources(16, seed)
    return bench.make_regression_cohort(folder, background, planted, EXTRACTOR, n, (6, 6),
                                        seed=seed)


def _rewrite(path: Path, edit) -> Path:
    """Rewrite a CSV with ``edit(rows)`` applied to its list of dict rows."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows, fields = list(reader), list(reader.fieldnames)
    rows, fields = edit(rows, fields)
    out = path.with_name(f"edited_{path.name}")
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_target_columns_are_read_with_their_kind_and_chosen_by_name_or_pattern(tmp_path):
    path, fractions = _cohort(tmp_path, n=8)
    cohort, problems = read_target_cohort(path, tmp_path, "planted_up,planted_mut",
                                          pattern="noise_*")
    assert problems == []
    assert cohort.names == ["planted_up", "planted_mut", "noise_a", "noise_b", "noise_mut"]
    assert [t.kind for t in cohort.targets] == ["numeric", "binary", "numeric", "numeric",
                                                "binary"]
    assert cohort.values.shape == (8, 5) and cohort.entries[0].name == "synth_000.svs"
    np.testing.assert_array_equal(cohort.values[:, 1], fractions > np.median(fractions))
    # true/false words are binary too; columns with other numbers are numeric
    words = _rewrite(path, lambda rows, f: ([{**r, "planted_mut": ["false", "TRUE"][int(
        r["planted_mut"])]} for r in rows], f))
    again, _ = read_target_cohort(words, tmp_path, ["planted_mut"])
    np.testing.assert_array_equal(again.values[:, 0], cohort.values[:, 1])
    assert select_targets(["slide", "a1", "b", "a2"], None, "a*") == ["a1", "a2"]
    with pytest.raises(MILError, match=r"unknown target column.*GENE9.*planted_up"):
        read_target_cohort(path, tmp_path, "planted_up,GENE9")
    with pytest.raises(MILError, match="no column of the CSV matches 'gene_"):
        read_target_cohort(path, tmp_path, pattern="gene_*")
    with pytest.raises(MILError, match="no targets chosen"):
        read_target_cohort(path, tmp_path)
    with pytest.raises(MILError, match="slide cannot be a target"):
        select_targets(["slide", "x"], "slide")


def test_bad_target_columns_are_refused_with_one_clear_message(tmp_path):
    path, _ = _cohort(tmp_path, n=8)

    def text_in(rows, fields):
        rows[2]["planted_up"] = "high"
        rows[5]["planted_up"] = "inf"
        return rows, fields

    with pytest.raises(MILError, match=r"'planted_up' holds text.*'high' on line 4, 'inf' on "
                                       r"line 7.*2 cell\(s\)"):
        read_target_cohort(_rewrite(path, text_in), tmp_path, "planted_up")

    def all_equal(rows, fields):
        for row in rows:
            row["noise_a"] = "2.5"
        return rows, fields

    with pytest.raises(MILError, match=r"'noise_a' has the same value \(2\.5\) on every one"):
        read_target_cohort(_rewrite(path, all_equal), tmp_path, "noise_a")

    def gaps(rows, fields):
        rows[1]["noise_b"] = ""
        rows[6]["noise_b"] = "NA"
        return rows, fields

    gappy = _rewrite(path, gaps)
    cohort, problems = read_target_cohort(gappy, tmp_path, "noise_b,planted_up")
    assert len(problems) == 1
    assert "'noise_b' has no value on CSV line(s) 3, 8 (slide(s) synth_001.svs, " \
           "synth_006.svs)" in problems[0] and "left out of 'noise_b' only" in problems[0]
    assert np.isnan(cohort.values[[1, 6], 0]).all() and np.isfinite(cohort.values[:, 1]).all()
    with pytest.raises(MILError, match=r"no value on CSV line.*--missing drop"):
        read_target_cohort(gappy, tmp_path, "noise_b", missing="refuse")

    def few(rows, fields):
        for row in rows[3:]:
            row["noise_a"] = ""
        return rows, fields

    with pytest.raises(MILError, match="'noise_a' has a value on only 3 slide"):
        read_target_cohort(_rewrite(path, few), tmp_path, "noise_a")


def test_slides_without_stores_are_named_and_a_cohort_without_any_is_refused(tmp_path):
    path, _ = _cohort(tmp_path / "stores", n=6)
    extra = _rewrite(path, lambda rows, f: ([*rows, {**rows[0], "slide": "ghost.svs"}], f))
    cohort, problems = read_target_cohort(extra, tmp_path / "stores", "planted_up")
    assert len(cohort.entries) == 6
    assert problems == [f"ghost.svs: no store in {tmp_path / 'stores'} (embed it with "
                        "napari-dfl embed --out there), skipped."]
    (tmp_path / "empty").mkdir()
    with pytest.raises(MILError, match=r"none of the 7 slides of .* has a usable store in"):
        read_target_cohort(extra, tmp_path / "empty", "planted_up")
    twice = _rewrite(path, lambda rows, f: ([*rows, rows[0]], f))
    with pytest.raises(MILError, match=r"lists the slide 'synth_000\.svs' twice"):
        read_target_cohort(twice, tmp_path / "stores", "planted_up")


def test_metrics_and_the_paired_comparison_of_two_runs():
    from napari_dfl.core.slide_level.regression_metrics import compare_runs, target_metrics

    truth = np.array([0.0, 1.0, 2.0, 3.0, np.nan, 5.0])
    perfect = target_metrics(truth, truth * 2 + 1, "numeric")
    assert perfect["n"] == 5 and perfect["pearson_r"] == 1.0 and perfect["spearman_rho"] == 1.0
    assert perfect["r2"] < 0  # r2 scores the values, not only their order
    assert target_metrics(truth, np.ones(6), "numeric")["pearson_r"] is None
    binary = target_metrics(np.array([0, 0, 1, 1, 1.0]), np.array([0.1, 0.6, 0.4, 0.8, 0.9]),
                            "binary")
    assert binary["auc"] == pytest.approx(5 / 6) and binary["n_positive"] == 3
    assert binary["balanced_accuracy"] == pytest.approx(((1 / 2) + (2 / 3)) / 2)

    before = {f"g{i}": ("numeric", 0.1 * i) for i in range(10)}
    after = {f"g{i}": ("numeric", 0.1 * i + 0.01 * (i + 1)) for i in range(10)}
    after["g3"] = ("numeric", 0.2)  # worse
    before["only_a"], after["only_b"] = ("binary", 0.6), ("binary", 0.7)
    result = compare_runs(before, after)
    assert result["n_targets"] == 10 and result["n_improved"] == 9 and result["n_worse"] == 1
    assert result["only_before"] == ["only_a"] and result["only_after"] == ["only_b"]
    # signed ranks: g3 (-0.1) has the largest |difference|, rank 10; W- = 10 of 55
    assert 0.01 < result["wilcoxon_p"] < 0.1
    all_up = compare_runs(before, {t: (k, v + 0.05 + 0.001 * i) for i, (t, (k, v))
                                   in enumerate(before.items())})
    assert all_up["n_improved"] == 11 and all_up["wilcoxon_p"] < 0.002
    with pytest.raises(MILError, match="numeric in one run and binary in the other"):
        compare_runs({"g": ("numeric", 0.5)}, {"g": ("binary", 0.5)})
    with pytest.raises(MILError, match="share no scored target"):
        compare_runs({"a": ("numeric", 0.5)}, {"b": ("numeric", 0.5)})


def test_grouped_folds_keep_patients_whole_and_balance_slides():
    from napari_dfl.core.slide_level.baseline import grouped_folds

    groups = np.array(["p1", "p1", "p2", "p3", "p3", "p3", "p4", "p5", "p6", "p7", "p8"])
    splits = grouped_folds(groups, 3, seed=0)
    tests = [set(test.tolist()) for _, test in splits]
    assert sorted(i for t in tests for i in t) == list(range(11))  # each slide tested once
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
        assert len(train) + len(test) == 11
    assert sorted(len(t) for t in tests) == [3, 4, 4]
    assert [t.tolist() for _, t in grouped_folds(groups, 3, seed=0)] == \
        [t.tolist() for _, t in splits]
    assert [t.tolist() for _, t in grouped_folds(groups, 3, seed=1)] != \
        [t.tolist() for _, t in splits]


def test_pooled_baseline_finds_planted_targets_and_not_noise(tmp_path):
    from napari_dfl.core.slide_level.baseline import (
        baseline_predictions,
        grouped_folds,
        pooled_embeddings,
    )
    from napari_dfl.core.slide_level.regression_metrics import metrics_rows

    path, _ = _cohort(tmp_path, n=40, seed=3)
    cohort, _ = read_target_cohort(path, tmp_path, pattern="*")
    x = pooled_embeddings([e.store for e in cohort.entries])
    assert x.shape == (40, 16)
    np.testing.assert_allclose(x[0], EmbeddingStore.open(cohort.entries[0].store)
                               .embeddings().mean(0), rtol=1e-5, atol=1e-5)
    assert pooled_embeddings([cohort.entries[0].store], with_max=True).shape == (1, 32)
    groups = np.array([e.group for e in cohort.entries])
    splits = grouped_folds(groups, 4, 0)
    predicted, penalties = baseline_predictions(x, cohort.values, cohort.targets, groups,
                                                splits)
    assert all(len(v) == 4 for v in penalties.values())
    rows = {r["target"]: r for r in metrics_rows(cohort.targets, cohort.values, predicted,
                                                 "baseline")}
    assert rows["planted_up"]["pearson_r"] > 0.8 and rows["planted_down"]["pearson_r"] > 0.8
    assert rows["planted_mut"]["auc"] > 0.85
    assert abs(rows["noise_a"]["pearson_r"]) < 0.45 and abs(rows["noise_b"]["pearson_r"]) < 0.45


def test_multi_target_model_trains_saves_loads_and_predicts_per_target(tmp_path):
    from napari_dfl.core.slide_level.model_files import (
        load_any_slide_model,
        load_slide_model,
        save_slide_model,
    )
    from napari_dfl.core.slide_level.target_training import fit_targets, train_target_model

    path, _ = _cohort(tmp_path / "stores", n=12, seed=1)
    cohort, _ = read_target_cohort(path, tmp_path / "stores", "planted_up,planted_mut")
    config = MILConfig(epochs=3, seed=4, val_fraction=0.25, patience=2)
    a = fit_targets(cohort.entries, cohort.values, cohort.targets, config)
    b = fit_targets(cohort.entries, cohort.values, cohort.targets, config)
    for (name, wa), wb in zip(a.model.state_dict().items(), b.model.state_dict().values(),
                              strict=True):
        assert np.array_equal(wa.numpy(), wb.numpy()), name
    up = a.targets[0]
    # standardised with the training slides' values (validation slides held out)
    assert up.kind == "numeric" and 0 < up.std < 1
    assert abs(up.mean - np.mean(cohort.values[:, 0])) < 0.1
    assert a.targets[1] == TargetSpec("planted_mut", "binary", 0.0, 1.0)
    store = EmbeddingStore.open(cohort.entries[0].store)
    values, attention = a.predict_store(store)
    assert values.shape == (2,) and 0 < values[1] < 1
    assert attention.shape == (2, 36) and np.allclose(attention.sum(1), 1, atol=1e-5)

    assert "fewer than 10" in a.early_stopping["reason"]  # 12 slides: no early stopping
    assert a.early_stopping["epochs_run"] == 3
    model, oof = train_target_model(cohort, config, folds=3)
    assert oof["mil"].shape == (12, 2) and np.isfinite(oof["mil"]).all()
    assert np.isfinite(oof["baseline"]).all()
    rows = model.metrics["rows"]
    assert [(r["target"], r["method"]) for r in rows] == [
        ("planted_up", "mil"), ("planted_mut", "mil"), ("planted_up", "baseline"),
        ("planted_mut", "baseline")]
    assert sum(model.metrics["wins"].values()) == 2
    folder = save_slide_model(model, tmp_path / "m.dflslide")
    card = json.loads((folder / "model_card.json").read_text())
    assert card["architecture"]["model"] == "gated_attention_mil_targets"
    assert [t["name"] for t in card["targets"]] == ["planted_up", "planted_mut"]
    assert card["targets"][0]["kind"] == "numeric" and card["targets"][0]["std"] > 0
    positives = card["data_summary"]["targets"]["planted_mut"]["n_positive"]
    assert positives == int(cohort.values[:, 1].sum()) and 0 < positives < 12
    loaded = load_any_slide_model(folder)
    np.testing.assert_allclose(loaded.predict_store(store)[0], model.predict_store(store)[0],
                               rtol=1e-6)
    assert loaded.targets == model.targets and loaded.metrics["rows"] == rows
    with pytest.raises(MILError, match=r"multi-target slide model .*predict-slides"):
        load_slide_model(folder)
    card["targets"][1]["std"] = -1
    (folder / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(MILError, match="standardisation"):
        load_any_slide_model(folder)


def test_cli_trains_targets_reports_both_methods_and_predicts_values(tmp_path, capsys):
    from napari_dfl.cli import main

    stores = tmp_path / "stores"
    path, _ = _cohort(stores, n=12, seed=2)
    gappy = _rewrite(path, lambda rows, f: ([{**r, "noise_a": "" if i == 4 else r["noise_a"]}
                                             for i, r in enumerate(rows)], f))
    model = tmp_path / "genes.dflslide"
    assert main(["train-slides", str(gappy), "--stores", str(stores), "--out", str(model),
                 "--targets", "planted_up,noise_a", "--targets-from", "*_mut", "--folds", "3",
                 "--epochs", "2", "--numeric-loss", "mse"]) == 0
    captured = capsys.readouterr()
    assert "SKIPPED target 'noise_a' has no value on CSV line(s) 6" in captured.err
    out = captured.out
    assert "4 target(s): planted_up (numeric), noise_a (numeric), planted_mut (binary), " \
           "noise_mut (binary)" in out
    assert "baseline: mean Pearson r" in out and "mil: mean Pearson r" in out
    assert "per target: MIL better on" in out
    with open(model / "cv_metrics.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 8 and {r["method"] for r in table} == {"mil", "baseline"}
    noise_row = next(r for r in table if r["target"] == "noise_a")
    assert noise_row["n"] == "11" and noise_row["auc"] == ""
    assert (model / "cv_metrics.png").read_bytes()[:4] == b"\x89PNG"
    with open(model / "cv_predictions.csv") as handle:
        oof = list(csv.DictReader(handle))
    assert len(oof) == 12 and oof[4]["noise_a"] == "" and oof[4]["noise_a_mil"] != ""
    card = json.loads((model / "model_card.json").read_text())
    assert card["training"]["numeric_loss"] == "mse"

    out_dir = tmp_path / "pred"
    stores_list = sorted(str(p) for p in stores.glob("synth_*"))
    assert main(["predict-slides", *stores_list[:3], "--model", str(model),
                 "--out", str(out_dir)]) == 0
    assert "ok      synth_000.svs: planted_up=" in capsys.readouterr().out
    with open(out_dir / "predictions.csv") as handle:
        predicted = list(csv.DictReader(handle))
    assert list(predicted[0]) == ["slide", "store", "n_tiles", "planted_up", "noise_a",
                                  "planted_mut", "noise_mut"]
    assert 0 <= float(predicted[0]["planted_mut"]) <= 1
    att = np.load(out_dir / "attention" / "synth_000.npz", allow_pickle=False)
    assert att["grid"].shape == (4, 6, 6) and att["attention"].shape == (4, 36)
    assert list(att["targets"]) == ["planted_up", "noise_a", "planted_mut", "noise_mut"]
    np.testing.assert_allclose(np.nansum(att["grid"], axis=(1, 2)), 1, atol=1e-5)

    # a second run compared with the first: same targets, paired
    again = tmp_path / "again.dflslide"
    assert main(["train-slides", str(gappy), "--stores", str(stores), "--out", str(again),
                 "--targets-from", "*", "--folds", "3", "--epochs", "2", "--seed", "1",
                 "--no-baseline", "--compare-with", str(model / "cv_metrics.csv")]) == 0
    out = capsys.readouterr().out
    assert "against " in out and " of 4 target(s) improved" in out and "paired Wilcoxon" in out


def test_bad_targets_on_the_cli_are_one_line_and_keep_the_previous_model(tmp_path, capsys):
    from napari_dfl.cli import main

    stores = tmp_path / "stores"
    path, _ = _cohort(stores, n=8, seed=5)
    model = tmp_path / "m.dflslide"
    assert main(["train-slides", str(path), "--stores", str(stores), "--out", str(model),
                 "--targets", "planted_up", "--folds", "0", "--epochs", "1"]) == 0
    before = (model / "weights.safetensors").read_bytes()
    capsys.readouterr()
    texty = _rewrite(path, lambda rows, f: ([{**r, "planted_up": "x"} for r in rows], f))
    for args, message in (
            ([str(texty), "--targets", "planted_up"], "holds text"),
            ([str(path), "--targets", "GENE1"], "unknown target column(s) GENE1"),
            ([str(path), "--targets", "planted_up", "--compare-with", str(tmp_path)],
             "is not a multi-target run's results"),
            ([str(path), "--targets", "planted_up", "--folds", "9"],
             "9-fold cross-validation needs 2 <= folds <= 8")):
        assert main(["train-slides", *args, "--stores", str(stores), "--out", str(model),
                     "--epochs", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert (model / "weights.safetensors").read_bytes() == before


def test_target_early_stopping_on_unpredictable_targets_keeps_the_best_epoch(tmp_path):
    from napari_dfl.core.slide_level.target_training import fit_targets

    path, _ = _cohort(tmp_path, n=40, seed=6)
    cohort, _ = read_target_cohort(path, tmp_path, "noise_a,noise_mut")
    config = MILConfig(epochs=40, patience=2, val_fraction=0.25, noise=0.0, lr=5e-3, seed=1)
    stop = fit_targets(cohort.entries, cohort.values, cohort.targets, config).early_stopping
    assert stop["validation"] and stop["reason"] is None, stop
    assert stop["n_val_slides"] == 10 and stop["n_train_slides"] == 30
    assert stop["stopped_early"] and stop["epochs_run"] == stop["best_epoch"] + 2 < 40
    assert stop["best_val_loss"] == min(stop["val_loss"])
    assert len(stop["val_loss"]) == stop["epochs_run"]
