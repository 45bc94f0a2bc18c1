"""The main job end to end on the real sample slide: demo, train, evaluate, predict."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from napari_dfl import Slide, detect_tissue, tile_grid
from napari_dfl.cli import main
from napari_dfl.core.annotations.annotation import read_geojson
from napari_dfl.core.features.parts import sub_compositions
from napari_dfl.core.features.preferred import save_preferred
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.heads.head_files import load_head
from napari_dfl.core.heads.selection import candidate_name
from napari_dfl.core.slides.sample_slide import SAMPLE_ANNOTATIONS, SAMPLE_SLIDE
from napari_dfl.core.slides.sampling import TISSUE_COMPOSITION
from napari_dfl.workflows.demo import DEMO_PATCH, run_demo

pytestmark = pytest.mark.slow


def demo_store_path(out):
    """The demo's own store (other tests add stores of other compositions beside it)."""
    for path in sorted((out / "embeddings").glob("*.dfl.zarr")):
        if EmbeddingStore.open(path).identity["composition"]["variants"] == ["rgb", "gray"]:
            return path
    raise AssertionError("the demo store is missing")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, folds=3, store_dir=str(out / "embeddings"))


def test_demo_report_and_files(demo):
    out, report = demo
    assert json.loads((out / "report.json").read_text()) == report
    assert report["stores"] == str(out / "embeddings")
    assert report["samples"] > 90 and set(report["data"]["per_class"]) == {
        "background", "dermis", "epidermis"}
    # Grouped out-of-fold validation beats chance (1/3) clearly.
    validation = report["validation"]
    assert validation["judgeable"] and validation["n"] == report["samples"]
    assert validation["balanced_accuracy"] > 0.5 and validation["cohen_kappa"] > 0.3
    assert validation["ci"][0] <= validation["balanced_accuracy"] <= validation["ci"][1]
    counts = report["prediction"]["counts"]
    assert report["prediction"]["predicted"] == report["prediction"]["tiles"] > 100
    assert counts["epidermis"] > 20 and counts["dermis"] > 20
    for key in ("overlay", "metrics_png", "geojson", "arrays", "head", "metrics"):
        assert Path(report["files"][key]).exists(), key


def test_prediction_geojson_opens_again_and_sits_on_tissue(demo):
    _, report = demo
    tiles = read_geojson(report["files"]["geojson"])
    assert len(tiles) == report["prediction"]["predicted"]
    assert all(t.properties["measurements"] for t in tiles[:5])
    with Slide(SAMPLE_SLIDE) as slide:
        mask = detect_tissue(slide)
    centres = np.array([[t.geometry.centroid.x, t.geometry.centroid.y] for t in tiles])
    cells = (centres / mask.downsample).astype(int)
    on_tissue = mask.mask[cells[:, 1], cells[:, 0]]
    assert on_tissue.mean() > 0.9


def test_arrays_load_without_pickle(demo):
    _, report = demo
    with np.load(report["files"]["arrays"], allow_pickle=False) as arrays:
        assert list(arrays["classes"]) == ["background", "dermis", "epidermis"]
        class_map = arrays["class_map"]
        tile_size = float(arrays["tile_size"])
        assert class_map.shape == (int(2967 // tile_size), int(2220 // tile_size))
        assert (class_map >= 0).sum() == report["prediction"]["predicted"]


def test_saved_head_reloads_with_identical_predictions(demo):
    out, report = demo
    head, card = load_head(report["files"]["head"])
    assert card["extractor"]["composition"]["patch_size"] == DEMO_PATCH
    store_path = demo_store_path(out)
    store = EmbeddingStore.open(store_path)
    x = store.embeddings(slice(0, 50))
    again, _ = load_head(report["files"]["head"])
    np.testing.assert_array_equal(head.predict_proba(x), again.predict_proba(x))


def test_cli_predict_glass_is_background(demo, tmp_path, capsys):
    out, report = demo
    # The same slide in two folders: outputs told apart by folder, embeddings computed once.
    copies = []
    for case in ("caseA", "caseB"):
        (tmp_path / case).mkdir()
        copies.append(tmp_path / case / SAMPLE_SLIDE.name)
        copies[-1].symlink_to(SAMPLE_SLIDE)
    code = main(["predict", *map(str, copies), "--head", report["files"]["head"],
                 "--out", str(tmp_path / "out"), "--stores", str(out / "embeddings"),
                 "--min-tissue", "0"])
    assert code == 0, capsys.readouterr().err
    with np.load(tmp_path / "out" / "caseA_CMU-1-Small-Region.prediction.npz",
                 allow_pickle=False) as arrays:
        labels = arrays["proba"].argmax(axis=1)
        coords = arrays["coords"]
        with np.load(tmp_path / "out" / "caseB_CMU-1-Small-Region.prediction.npz",
                     allow_pickle=False) as other:
            np.testing.assert_array_equal(other["proba"], arrays["proba"])
    with Slide(SAMPLE_SLIDE) as slide:
        grid = tile_grid(slide, DEMO_PATCH, 0.5, min_tissue=0, mask=detect_tissue(slide))
    glass = {tuple(c) for c, f in zip(grid.coords, grid.tissue_fraction, strict=True) if f < 0.01}
    is_glass = np.array([tuple(c) in glass for c in coords])
    assert is_glass.sum() > 100
    background = ["background", "dermis", "epidermis"].index("background")
    assert (labels[is_glass] == background).mean() > 0.9


def test_output_names_are_the_slides_and_unique(tmp_path):
    from napari_dfl.core.heads.prediction_files import output_stems

    dicom = tmp_path / "CASE-7"
    dicom.mkdir()
    (dicom / "1.2.840.99.dcm").write_bytes(b"")
    assert output_stems([tmp_path / "a" / "s1.svs", tmp_path / "s2.tiff", dicom,
                         dicom / "1.2.840.99.dcm"]) == ["s1", "s2", "CASE-7", "CASE-7"]
    assert output_stems([tmp_path / "x" / "p" / "s.svs", tmp_path / "y" / "p" / "s.svs",
                         tmp_path / "t.svs"]) == ["x_p_s", "y_p_s", "t"]
    assert output_stems(["same.svs", "same.svs"]) == ["same", "same"]  # one slide, once


def test_cli_train_and_evaluate(demo, tmp_path, capsys):
    out, _ = demo
    dataset = f"{SAMPLE_SLIDE}:{SAMPLE_ANNOTATIONS}"
    common = ["--patch-size", str(DEMO_PATCH), "--stores", str(out / "embeddings")]
    assert main(["train", dataset, "--out", str(tmp_path / "h.dflhead"), "--head", "linear",
                 *common]) == 0
    printed = capsys.readouterr().out
    head, card = load_head(tmp_path / "h.dflhead")
    assert card["training"]["head"] == "linear" and head.config.head == "linear"
    # The printed figure is the card's assessment: grouped, with its sample size and interval.
    assessment = card["assessment"]
    assert assessment["judgeable"] and assessment["n_groups"] == 10
    low, high = assessment["ci"]
    assert (f"{assessment['n']} samples in 10 regions: balanced accuracy "
            f"{assessment['balanced_accuracy']:.3f} (95% interval {low:.3f}-{high:.3f})"
            in printed), printed
    from PIL import Image

    figure = Image.open(tmp_path / "h.dflhead" / "validation.png")
    assert figure.size[0] > 2.5 * figure.size[1]  # confusion, PR curves, learning curve
    assert main(["evaluate", dataset, "--folds", "3", "--json", *common]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["folds"]) == 3
    assert {"balanced_accuracy", "cohen_kappa", "weighted_f1"} <= set(result)


def test_cli_predict_refuses_head_of_another_composition(demo, tmp_path, capsys):
    out, _ = demo
    head_dir = tmp_path / "other.dflhead"
    dataset = f"{SAMPLE_SLIDE}:{SAMPLE_ANNOTATIONS}"
    assert main(["train", dataset, "--out", str(head_dir), "--patch-size", str(DEMO_PATCH),
                 "--variants", "rgb", "--stores", str(out / "embeddings")]) == 0
    card = json.loads((head_dir / "model_card.json").read_text())
    card["extractor"]["composition"]["variants"] = ["rgb", "gray"]
    (head_dir / "model_card.json").write_text(json.dumps(card))
    capsys.readouterr()
    code = main(["predict", str(SAMPLE_SLIDE), "--head", str(head_dir), "--out",
                 str(tmp_path / "p")])
    assert code != 0
    assert "composition" in capsys.readouterr().err


def test_cli_select_backbone_ranks_and_reports_unavailable(demo, tmp_path, capsys):
    out, _ = demo
    code = main(["select-backbone", f"{SAMPLE_SLIDE}:{SAMPLE_ANNOTATIONS}", "--backbones",
                 "efficientnet-lite0,uni", "--folds", "3", "--patch-size", str(DEMO_PATCH),
                 "--stores", str(out / "embeddings"), "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ranking: efficientnet-lite0" in printed and "unavailable" in printed
    table = (tmp_path / "backbones.md").read_text()
    assert "| 1 | efficientnet-lite0 |" in table
    rows = (tmp_path / "backbones.csv").read_text().splitlines()
    assert rows[0].startswith("rank,backbone,status") and len(rows) == 3
    from PIL import Image

    assert Image.open(tmp_path / "backbones.png").size[0] > 300


def test_cli_project_embeddings_with_head_and_cache(demo, tmp_path, capsys):
    out, report = demo
    store_path = demo_store_path(out)
    args = ["project-embeddings", str(store_path), "--head", report["files"]["head"],
            "--out", str(tmp_path)]
    assert main(args) == 0, capsys.readouterr().err
    store = EmbeddingStore.open(store_path)  # the cached projection does not upset the store
    rows = (tmp_path / "CMU-1-Small-Region.projection.csv").read_text().splitlines()
    assert rows[0] == "x,y,pca_1,pca_2,label" and len(rows) == len(store) + 1
    assert {r.split(",")[-1] for r in rows[1:]} <= {"background", "dermis", "epidermis"}
    assert (store_path / "projection_pca.npz").exists()
    first = rows
    assert main(args) == 0
    assert (tmp_path / "CMU-1-Small-Region.projection.csv").read_text().splitlines() == first
    from PIL import Image

    assert Image.open(tmp_path / "projection.png").size[0] >= 500


def test_pca_projection_separates_distinct_tissues():
    from napari_dfl.core.explorer.projection import project

    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (60, 32)) + 5
    b = rng.normal(0, 1, (60, 32)) - 5
    xy = project(np.concatenate([a, b]), "pca")
    assert xy.shape == (120, 2)
    assert np.sign(xy[:60, 0]).mean() * np.sign(xy[60:, 0]).mean() < -0.9


def test_cli_select_ranks_compositions_and_applies_the_best(demo, tmp_path, capsys):
    out, _ = demo
    dataset = f"{SAMPLE_SLIDE}:{SAMPLE_ANNOTATIONS}"
    stores = ["--stores", str(out / "embeddings")]
    code = main(["select", dataset, "--fields", str(DEMO_PATCH), "--folds", "3",
                 "--out", str(tmp_path / "sel"), "--apply", *stores])
    assert code == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "sel" / "selection.csv").read_text().splitlines()))
    # x20 alone or with x5, rgb alone or with gray: four candidates from one extraction
    assert len(rows) == 4 and [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    scores = [float(r["balanced_accuracy"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
    # the regions' default (224 px) is not among the candidates: the best is suggested
    assert (f"suggested: {rows[0]['candidate']} (balanced accuracy {scores[0]:.3f} ±"
            in printed)
    assert "105 samples): the probe's best; the settings in use were not among" in printed
    assert f"in use now: efficientnet-lite0, {TISSUE_COMPOSITION.describe()}" in printed
    assert f"| 1 | ★ {rows[0]['candidate']} |" in printed
    kept = json.loads((tmp_path / "user-config" / "extractor.json").read_text())
    assert kept["backbone"] == "efficientnet-lite0"
    assert kept["composition"]["patch_size"] == DEMO_PATCH
    assert kept["composition"]["input_size"] is None  # the backbone's own size, as asked
    # train with no extractor option starts from the kept choice, and says so
    assert main(["train", dataset, "--out", str(tmp_path / "h.dflhead"), *stores]) == 0
    assert "using the extractor chosen by napari-dfl select" in capsys.readouterr().err
    card = json.loads((tmp_path / "h.dflhead" / "model_card.json").read_text())
    trained = card["extractor"]["composition"]
    assert (trained["zooms"], trained["variants"]) == (kept["composition"]["zooms"],
                                                      kept["composition"]["variants"])
    # Again, with that choice in use: it is the suggestion, and --apply changes nothing.
    kept_file = tmp_path / "user-config" / "extractor.json"
    before = kept_file.read_text()
    again = ["select", dataset, "--fields", str(DEMO_PATCH), "--folds", "3", "--out",
             str(tmp_path / "sel2"), "--apply", *stores]
    assert main(again) == 0
    printed = capsys.readouterr().out
    assert f"| 1 | ★ {rows[0]['candidate']} (in use) |" in printed
    assert "the settings in use, and the probe's best." in printed
    assert "--apply: nothing to change" in printed and kept_file.read_text() == before
    # With another candidate in use, the table marks it and the suggestion says why.
    other = next(c for c in sub_compositions(replace(TISSUE_COMPOSITION, patch_size=DEMO_PATCH))
                 if candidate_name("efficientnet-lite0", c) != rows[0]["candidate"])
    save_preferred("efficientnet-lite0", other)
    assert main(again) == 0
    printed = capsys.readouterr().out
    name = candidate_name("efficientnet-lite0", other)
    assert f" {name} (in use) |" in printed
    if f"★ {name} (in use) |" in printed:  # kept: the best does not beat it by 2 s.e.
        assert f"suggested: {name} (" in printed and "the settings in use stay: " in printed
        assert "--apply: nothing to change" in printed
    else:  # the best beats it by more than 2 s.e.: a change, kept by --apply
        assert f"| 1 | ★ {rows[0]['candidate']} |" in printed
        assert f"suggested: {rows[0]['candidate']} (" in printed and "a change: " in printed
        assert "kept as the default" in printed
    # a damaged choice is ignored with a message; --reset forgets it
    (tmp_path / "user-config" / "extractor.json").write_text("{not json")
    assert main(["evaluate", dataset, "--folds", "3", "--json", "--patch-size",
                 str(DEMO_PATCH), *stores]) == 0
    assert "select --reset" in capsys.readouterr().err
    assert main(["select", "--reset"]) == 0
    assert not (tmp_path / "user-config" / "extractor.json").exists()


def test_cli_select_refuses_more_folds_than_regions(demo, tmp_path, capsys):
    out, _ = demo
    code = main(["select", f"{SAMPLE_SLIDE}:{SAMPLE_ANNOTATIONS}", "--fields",
                 str(DEMO_PATCH), "--folds", "20", "--out", str(tmp_path / "sel"),
                 "--stores", str(out / "embeddings")])
    assert code != 0
    assert "20 folds need at least 20 groups" in capsys.readouterr().err
    assert not (tmp_path / "sel").exists()  # nothing written half


def test_cli_points_only_get_cell_sized_fields(tmp_path, capsys):
    from napari_dfl.core.annotations.annotation import Annotation, write_geojson
    from napari_dfl.core.annotations.datasets import annotation_kinds

    regions = read_geojson(SAMPLE_ANNOTATIONS)
    points = [Annotation(region.geometry.representative_point(), region.label)
              for region in regions]
    geojson = tmp_path / "points.geojson"
    write_geojson(points, geojson)
    dataset = f"{SAMPLE_SLIDE}:{geojson}"
    assert annotation_kinds([dataset]) == {"point"}
    assert annotation_kinds([f"{SAMPLE_SLIDE}:{SAMPLE_ANNOTATIONS}"]) == {"region"}
    assert annotation_kinds([tmp_path / "missing.csv", tmp_path]) == {"tile"}
    assert main(["train", dataset, "--out", str(tmp_path / "h.dflhead"), "--variants", "rgb",
                 "--zooms", "0.5", "--stores", str(tmp_path / "stores")]) == 0
    assert "points only: cell-sized fields of 32 px (16 µm" in capsys.readouterr().err
    card = json.loads((tmp_path / "h.dflhead" / "model_card.json").read_text())
    assert card["extractor"]["composition"]["patch_size"] == 32
    assert card["extractor"]["composition"]["input_size"] == 224
