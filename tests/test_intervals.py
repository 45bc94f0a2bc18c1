"""The 95 % intervals shown beside slide-level results, against values worked by hand."""

from __future__ import annotations

import math

from napari_dfl.core.slide_level.intervals import auc_interval, pearson_interval, wilson_interval


def test_wilson_interval_of_a_proportion():
    low, high = wilson_interval(4, 5)  # Wilson 95 % of 4/5: 0.376-0.964
    assert (round(low, 3), round(high, 3)) == (0.376, 0.964)
    low, high = wilson_interval(0, 10)  # never below 0, and not a zero-width interval
    assert low == 0.0 and 0.25 < high < 0.35
    assert wilson_interval(0, 0) is None


def test_pearson_interval_by_fishers_z():
    low, high = pearson_interval(0.5, 28)  # tanh(0.549 -+ 1.96 / 5)
    assert (round(low, 3), round(high, 3)) == (0.156, 0.736)
    assert pearson_interval(0.5, 3) is None and pearson_interval(None, 30) is None
    assert pearson_interval(math.nan, 30) is None
    low, high = pearson_interval(1.0, 30)  # clamped, finite
    assert math.isfinite(low) and low > 0.99 and high <= 1.0


def test_auc_interval_by_hanley_and_mcneil():
    low, high = auc_interval(0.8, 10, 10)  # standard error 0.1020
    assert abs((high - low) / 2 - 1.96 * 0.1020) < 1e-3 and high <= 1.0
    assert auc_interval(1.0, 10, 10) is None  # perfect separation claims no certainty
    assert auc_interval(0.7, 0, 10) is None and auc_interval(None, 5, 5) is None
