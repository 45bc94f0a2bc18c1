"""What ``select`` suggests from its ranking: the probe's best, or the settings in use.

The rule (``core.heads.selection.choose``): a candidate replaces the settings in use only
when it beats them by more than ``SWITCH_MARGIN`` standard errors of the paired fold
differences. The rows here are built by hand so that each case is exact; the CLI and the
panel tests run the same rule on rows measured on the sample slide.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_dfl.core.heads.selection import (
    SWITCH_MARGIN,
    choose,
    markdown_table,
    paired_gain,
    rank,
)

SIZES = [40, 41, 39, 40, 40]


def row(name: str, scores, sizes=SIZES) -> dict:
    """A ranking row as ``probe_row`` makes it, from per-fold balanced accuracies."""
    scores = [float(s) for s in scores]
    return {"candidate": name, "backbone": "b", "status": "ok", "error": None,
            "folds": len(scores), "samples": sum(sizes), "fold_scores": scores,
            "fold_sizes": list(sizes), "balanced_accuracy": float(np.mean(scores)),
            "balanced_accuracy_sd": float(np.std(scores, ddof=1)), "cohen_kappa": 0.5,
            "cohen_kappa_sd": 0.1, "weighted_f1": 0.5, "weighted_f1_sd": 0.1}


BASE = np.array([0.60, 0.66, 0.58, 0.70, 0.64])  # folds differ much more than candidates
#: Fold differences swinging either way, +0.002 on average: noise.
TIE = np.array([0.02, -0.015, 0.01, -0.02, 0.015])
#: Fold differences all well above zero, +0.044 on average.
GAIN = np.array([0.03, 0.05, 0.04, 0.06, 0.04])


def named(name: str):
    return lambda r: r["candidate"] == name


def test_without_settings_in_use_the_best_is_suggested():
    rows = rank([row("a", BASE), row("b", BASE + 0.01)])
    pick = choose(rows)
    assert pick.row["candidate"] == "b" and pick.current is None and not pick.keeps_current
    assert "not among the candidates" in pick.reason()
    # in use but not compared (another field, say): the same
    assert choose(rows, named("elsewhere")).row["candidate"] == "b"


def test_a_tie_with_the_settings_in_use_keeps_them():
    rows = rank([row("in use", BASE), row("other", BASE + TIE)])
    assert rows[0]["candidate"] == "other"  # the probe ranks it first ...
    pick = choose(rows, named("in use"))
    assert pick.keeps_current and pick.row["candidate"] == "in use"  # ... it is not suggested
    assert pick.top["candidate"] == "other"
    assert pick.gain == pytest.approx(0.002)
    assert pick.gain_se == pytest.approx(TIE.std(ddof=1) / math.sqrt(5))
    assert pick.reason() == (
        "the settings in use stay: the probe's best, other, scores +0.002 ± 0.008 (s.e.) "
        "against them over the same folds, within what the folds can tell (a change needs "
        f"more than {SWITCH_MARGIN:g} s.e.).")


def test_a_clear_gain_over_the_settings_in_use_is_suggested():
    rows = rank([row("in use", BASE), row("better", BASE + GAIN)])
    pick = choose(rows, named("in use"))
    assert pick.row["candidate"] == "better" and not pick.keeps_current
    assert pick.current["candidate"] == "in use"
    assert pick.gain == pytest.approx(0.044) and pick.gain > SWITCH_MARGIN * pick.gain_se
    assert pick.reason().startswith("a change: better scores +0.044")


def test_the_same_gain_on_every_fold_is_a_change():
    # no spread at all: a standard error of 0, and a gain that is real on every fold
    rows = rank([row("in use", BASE), row("better", BASE + 0.01)])
    pick = choose(rows, named("in use"))
    assert pick.row["candidate"] == "better" and pick.gain_se == pytest.approx(0, abs=1e-12)


def test_the_settings_in_use_ranked_first_are_kept():
    rows = rank([row("in use", BASE + 0.02), row("other", BASE)])
    pick = choose(rows, named("in use"))
    assert pick.keeps_current and pick.top is pick.row and pick.gain == 0
    assert pick.reason() == "the settings in use, and the probe's best."


def test_rows_on_different_folds_compare_by_their_standard_errors():
    a = row("in use", BASE)
    b = row("other", BASE + 0.01, sizes=[38, 41, 39, 40, 40])  # another sample set
    gain, se = paired_gain(b, a)
    assert gain == pytest.approx(0.01)
    assert se == pytest.approx(math.sqrt(2 * np.std(BASE, ddof=1) ** 2 / 5))
    pick = choose(rank([a, b]), named("in use"))
    assert pick.keeps_current and "against them on different samples" in pick.reason()
    far = row("far", BASE + 0.2, sizes=[38, 41, 39, 40, 40])
    assert choose(rank([a, far]), named("in use")).row is far


def test_failed_rows_are_never_suggested_and_none_evaluated_is_none():
    failed = {"candidate": "x", "backbone": "x", "status": "error", "error": "no weights"}
    assert choose(rank([dict(failed)])) is None
    rows = rank([dict(failed), row("a", BASE)])
    assert choose(rows, named("x")).row["candidate"] == "a"


def test_the_table_marks_the_suggestion_and_the_settings_in_use():
    rows = rank([row("in use", BASE), row("other", BASE + TIE)])
    table = markdown_table(rows, choose(rows, named("in use")))
    assert "| 1 | other |" in table and "| 2 | ★ in use (in use) |" in table
    assert "★" not in markdown_table(rows)  # no pick, no marks
