"""95 % intervals of the slide-level results a user reads: a proportion, a correlation, an AUC.

Closed-form intervals, cheap enough to show beside every number of a small cohort's
cross-validated results (``workflows.slide_level.results_text``): Wilson's for a recall,
Fisher's z for a Pearson r, Hanley & McNeil's standard error for a binary ROC AUC. Each is
None where it is undefined, never a made-up certainty.
"""

from __future__ import annotations

import math

__all__ = ["auc_interval", "pearson_interval", "wilson_interval"]

_Z95 = 1.959964


def wilson_interval(successes: int, n: int) -> tuple[float, float] | None:
    """95 % Wilson interval of a proportion ``successes / n`` (None when ``n`` is 0)."""
    if n <= 0:
        return None
    p, z2 = successes / n, _Z95 * _Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def pearson_interval(r: float | None, n: int) -> tuple[float, float] | None:
    """95 % interval of a Pearson r over ``n`` pairs (Fisher's z; None below 4 pairs)."""
    if r is None or n < 4 or not math.isfinite(r):
        return None
    z = math.atanh(max(min(r, 0.999999), -0.999999))
    half = _Z95 / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def auc_interval(auc: float | None, n_positive: int, n_negative: int
                 ) -> tuple[float, float] | None:
    """95 % interval of a binary ROC AUC (Hanley & McNeil 1982's standard error).

    None when undefined, and at an AUC of 0 or 1 (perfect separation), where that standard
    error is 0 and would claim a certainty a small cohort cannot give.
    """
    if (auc is None or n_positive < 1 or n_negative < 1 or not math.isfinite(auc)
            or auc <= 0.0 or auc >= 1.0):
        return None
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_positive - 1) * (q1 - auc * auc)
           + (n_negative - 1) * (q2 - auc * auc)) / (n_positive * n_negative)
    half = _Z95 * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)
