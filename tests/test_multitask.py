"""A multitask encoder: one backbone fine-tuned for several tasks, each its own classes and head.

Real data: the bundled sample slide's tissue regions (3 classes, 112 px patches) and the
Kather CRC-VAL-HE-7K tiles (8 tissue classes, 224 px) from ``../shared/data``.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from conftest import shared_file
from napari_dfl.core.backbones.backbone import load_backbone
from napari_dfl.core.backbones.finetuned import read_card, register_finetuned
from napari_dfl.core.finetune.task_specs import TaskSpec, parse_task_options, read_task_file
from napari_dfl.core.finetune.training import (
    FinetuneConfig,
    FinetuneError,
    LabelledPatches,
    alternating_batches,
    finetune_tasks,
)
from napari_dfl.core.util.progress import drive

KATHER = "kather_tiles/crc_val_he_7k"


class _Split:
    def __init__(self, n: int, offset: int = 0) -> None:
        self.train_idx = np.arange(offset, offset + n)


def test_tasks_take_turns_and_a_small_task_is_not_drowned():
    small, large = _Split(10), _Split(100, offset=1000)
    batches = alternating_batches([small, large], np.random.default_rng(0), 16)
    tasks = [k for k, _ in batches]
    assert tasks == [0, 1] * 7  # ceil(100 / 16) = 7 batches each, alternating
    large_rows = np.concatenate([rows for k, rows in batches if k == 1])
    assert sorted(large_rows.tolist()) == list(range(1000, 1100))  # one pass, each once
    small_rows = np.concatenate([rows for k, rows in batches if k == 0])
    # the small task (one batch of 10 per pass) goes through its patches 7 times, reshuffled
    assert np.bincount(small_rows).tolist() == [7] * 10
    assert len({tuple(rows) for k, rows in batches if k == 0}) > 1
    # one task: a single shuffled pass, the order fixed by the seed
    again = alternating_batches([large], np.random.default_rng(3), 16)
    order = np.random.default_rng(3).permutation(np.arange(1000, 1100))
    np.testing.assert_array_equal(np.concatenate([rows for _, rows in again]), order)


def test_task_specs_from_options_and_a_json_file(tmp_path):
    specs = parse_task_options(["nuclei=a.csv", "tissue=s.svs:s.geojson", "nuclei=b.csv"])
    assert specs == [TaskSpec("nuclei", ("a.csv", "b.csv")),
                     TaskSpec("tissue", ("s.svs:s.geojson",))]
    file = tmp_path / "tasks.json"
    file.write_text(json.dumps([
        {"name": "nuclei", "datasets": ["crc.csv"], "patch_size": 32, "weight": 2},
        {"name": "tissue", "datasets": ["/abs/s.svs:s.geojson"], "zoom": 1.0,
         "classes": ["tumour", "stroma"]}]))
    nuclei, tissue = read_task_file(file)
    assert nuclei.datasets == (str(tmp_path / "crc.csv"),) and nuclei.patch_size == 32
    assert nuclei.weight == 2.0 and nuclei.zoom is None
    assert tissue.datasets == (f"/abs/s.svs:{tmp_path / 's.geojson'}",)
    assert tissue.classes == ("tumour", "stroma") and tissue.zoom == 1.0


@pytest.mark.parametrize(("content", "says"), [
    ("not json", "not readable JSON"),
    ('{"name": "x"}', "JSON list of task objects"),
    ('[{"name": "x", "datasets": ["a.csv"], "epochs": 3}]', "unknown key(s) ['epochs']"),
    ('[{"name": "x", "datasets": ["a.csv"], "patch_size": "big"}]', "'patch_size' must be int"),
    ('[{"name": "x", "datasets": []}]', "task 'x' has no dataset"),
    ('[{"name": "a b", "datasets": ["a.csv"]}]', "invalid task name 'a b'"),
    ('[{"name": "x", "datasets": ["a.csv"], "weight": 0}]', "weight must be a positive"),
    ('[{"name": "x", "datasets": ["a.csv"]}, {"name": "x", "datasets": ["b.csv"]}]',
     "task names must differ"),
])
def test_a_bad_task_file_is_refused_with_what_to_fix(tmp_path, content, says):
    file = tmp_path / "tasks.json"
    file.write_text(content)
    with pytest.raises(FinetuneError) as caught:
        read_task_file(file)
    assert says in str(caught.value)
    with pytest.raises(FinetuneError, match="NAME=DATASET"):
        parse_task_options(["nuclei:crc.csv"])


def _subsample(data: dict, per_class: int) -> LabelledPatches:
    rng = np.random.default_rng(0)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(data["labels"] == c))
                                   [:per_class] for c in np.unique(data["labels"])]))
    return data["patches"][keep], data["labels"][keep], data["groups"][keep]


@pytest.fixture(scope="module")
def two_tasks(sample_slide_path):
    """Tissue regions of the sample slide (112 px) and Kather tissue tiles (224 px)."""
    from napari_dfl.core.finetune.patches import load_patches
    from napari_dfl.core.slides.sampling import Composition

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the tiles record no pixel size
        skin = load_patches([sample_slide_path], Composition(112, (0.5,), ("rgb",)))
        kather = load_patches([shared_file(KATHER)], Composition(224, (0.5,), ("rgb",)),
                              mpp=0.5)
    # Kather tiles: one group per tile (each is its own image), 4 per class
    return [LabelledPatches("skin", *_subsample(skin, 12)),
            LabelledPatches("kather", *_subsample(kather, 4), weight=2.0)]


def test_one_backbone_is_tuned_for_two_tasks_and_its_card_lists_them(two_tasks, tmp_path):
    from napari_dfl.core.finetune.folder import save_finetuned

    config = FinetuneConfig(blocks=1, epochs=1, patience=1, batch_size=8, lr=1e-3,
                            restore_best=False)
    epochs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = drive(finetune_tasks(two_tasks, config=config), epochs.append)
    assert [p.epoch for p in epochs] == [0, 1]
    assert set(epochs[1].tasks) == {"skin", "kather"}
    summary = result.summary
    assert summary["tasks"]["skin"]["classes"] == ["background", "dermis", "epidermis"]
    assert len(summary["tasks"]["kather"]["classes"]) == 8
    assert summary["tasks"]["kather"]["weight"] == 2.0
    assert summary["samples"] == sum(len(t.labels) for t in two_tasks)
    assert "skin:dermis" in summary["classes"] and "kather:TUM" in summary["classes"]
    for task in two_tasks:
        facts = summary["tasks"][task.name]
        assert facts["train_samples"] + facts["validation_samples"] == len(task.labels)
        assert 0.0 <= facts["validation"]["balanced_accuracy"] <= 1.0
    # the stopping criterion is the mean of the tasks' losses relative to chance
    rows = epochs[1].tasks
    expected = np.mean([rows["skin"]["val_loss"] / np.log(3),
                        rows["kather"]["val_loss"] / np.log(8)])
    assert epochs[1].val_loss == pytest.approx(expected)
    # only the last block (and what follows) moved
    base = dict(load_backbone(fuse=False, precision="fp32").model.named_parameters())
    changed = {n for n, p in result.backbone.model.named_parameters()
               if not np.array_equal(p.detach().numpy(), base[n].detach().numpy())}
    assert changed and changed <= set(result.trainable)
    # each task keeps its head; predicting needs the task's name
    proba = result.predict_proba(two_tasks[1].patches[:3], task="kather")
    assert proba.shape == (3, 8)
    with pytest.raises(FinetuneError, match="name the task"):
        result.predict_proba(two_tasks[1].patches[:3])
    folder = save_finetuned(result, tmp_path / "multi", config=config,
                            dataset={"tasks": {t.name: {} for t in two_tasks}})
    card = read_card(folder)
    assert set(card["tasks"]) == {"skin", "kather"}
    assert card["tasks"]["kather"]["per_class"]["TUM"] == 4
    assert card["history"][1]["tasks"]["skin"]["val_balanced_accuracy"] >= 0.0
    tuned = load_backbone(register_finetuned(folder))
    assert tuned.embed(two_tasks[0].patches[:2]).shape == (2, 1280)


def test_bad_tasks_are_refused_before_any_work(two_tasks):
    skin, kather = two_tasks
    same = LabelledPatches("skin", kather.patches, kather.labels, kather.groups)
    with pytest.raises(FinetuneError, match="distinct, non-empty names"):
        drive(finetune_tasks([skin, same]))
    one_class = LabelledPatches("mono", skin.patches[:4], np.array(["a"] * 4),
                                np.array(["g1", "g1", "g2", "g2"]))
    with pytest.raises(FinetuneError, match="two classes \\(task 'mono'\\)"):
        drive(finetune_tasks([skin, one_class]))
    with pytest.raises(FinetuneError, match="no task"):
        drive(finetune_tasks([]))


def test_cli_refuses_a_mix_of_one_task_and_tasks(sample_slide_path, capsys):
    from napari_dfl.cli import main

    code = main(["finetune", str(sample_slide_path), "--task", f"skin={sample_slide_path}",
                 "--out", "x"])
    assert code != 0
    assert "not a mix" in capsys.readouterr().err
