"""The figure a user is shown for a head: grouped, with its interval, silent when too thin."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dfl.core.heads.assessment import (
    MIN_SAMPLES,
    assess,
    grouped_bootstrap,
    summary_line,
)
from napari_dfl.core.heads.config import TrainConfig
from napari_dfl.core.heads.validation import json_ready

FAST = TrainConfig(max_epochs=40, patience=5)


def regions(n_regions: int, per_region: int, classes=("tumour", "stroma"), shift=4.0,
            seed=0):
    """Embeddings of annotated regions: one class per region, samples of a region alike."""
    rng = np.random.default_rng(seed)
    x, y, g = [], [], []
    for r in range(n_regions):
        name = classes[r % len(classes)]
        centre = rng.normal(0, 1, 16) + shift * (classes.index(name) - 0.5)
        x.append(centre + rng.normal(0, 0.5, (per_region, 16)))
        y += [name] * per_region
        g += [f"region-{r}"] * per_region
    return np.concatenate(x).astype(np.float32), np.array(y), np.array(g)


def test_group_bootstrap_is_wider_than_pretending_tiles_are_independent():
    # Ten regions of 20 tiles; the head gets whole regions right or wrong together.
    y_true = np.repeat(np.arange(10) % 2, 20)
    right = np.repeat(np.array([1, 1, 1, 0, 1, 1, 1, 1, 0, 1], bool), 20)
    y_pred = np.where(right, y_true, 1 - y_true)
    groups = np.repeat(np.arange(10), 20)
    low, high = grouped_bootstrap(y_true, y_pred, groups)
    tile_low, tile_high = grouped_bootstrap(y_true, y_pred, np.arange(200))
    point = np.mean([np.mean(y_pred[y_true == c] == c) for c in (0, 1)])
    assert low <= point <= high
    assert high - low > 2 * (tile_high - tile_low)
    # The same inputs and seed give the same interval.
    assert grouped_bootstrap(y_true, y_pred, groups) == (low, high)


def test_four_samples_give_no_figure():
    x, y, g = regions(4, 1)
    result = assess(x, y, g, FAST)
    assert not result["judgeable"]
    assert result["reason"].startswith("too few to judge: 4 samples")
    assert result["n_groups"] == 4 and "balanced_accuracy" not in result
    line = summary_line(result)
    assert line.startswith("no figure: too few to judge") and "%" not in line


def test_a_class_in_one_region_is_named_not_validated():
    x, y, g = regions(12, 6, classes=("tumour", "stroma", "fat"))
    fat = y == "fat"
    g[fat] = "one-fat-region"
    result = assess(x, y, g, FAST)
    assert result["not_validated"] == ["fat"]
    assert result["per_class"]["fat"] == {"samples": int(fat.sum()), "groups": 1}
    assert result["classes"] == ["stroma", "tumour"]
    assert result["n"] == int((~fat).sum())
    assert "not validated: fat" in summary_line(result)


def test_one_class_per_region_only_cannot_be_validated():
    x, y, g = regions(2, 20)
    result = assess(x, y, g, FAST)
    assert not result["judgeable"] and result["folds"] == 0
    assert "at least two regions" in result["reason"]
    assert "balanced_accuracy" not in result


def test_enough_regions_give_a_figure_with_its_interval():
    x, y, g = regions(10, 8)
    result = json_ready(assess(x, y, g, FAST))
    assert result["judgeable"] and result["reason"] is None
    assert result["n"] == 80 >= MIN_SAMPLES and result["folds"] == 5
    low, high = result["ci"]
    assert 0.0 <= low <= result["balanced_accuracy"] <= high <= 1.0
    assert result["balanced_accuracy"] > 0.9  # the two classes are far apart
    assert sum(map(sum, result["confusion_matrix"])) == 80
    assert "out_of_fold" not in result
    line = summary_line(result)
    assert "80 samples in 10 regions" in line and "95% interval" in line
    # Deterministic: the panel and the CLI show the same figure for the same data.
    assert json_ready(assess(x, y, g, FAST)) == result


def test_assessment_can_be_cancelled():
    from napari_dfl.core.heads.training import TrainingCancelled

    x, y, g = regions(10, 8)
    with pytest.raises(TrainingCancelled):
        assess(x, y, g, FAST, cancel=lambda: True)
