"""Backbone selection on the user's own labels: embed with each candidate, probe, rank.

Each candidate backbone embeds the same labelled samples (into the shared stores, so a
rerun or a later ``train`` reuses them); a linear probe is cross-validated with grouped
folds; the ranking and its table, CSV and chart come from
:mod:`napari_dfl.core.heads.selection`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.heads.selection import PROBE, probe_row, rank
from napari_dfl.core.heads.validation import cross_validate
from napari_dfl.workflows.labelled import embed_labelled

__all__ = ["compare_backbones"]


def compare_backbones(specs: Sequence[str | os.PathLike], backbones: Sequence[str],
                      settings: Settings, *, folds: int = 5,
                      on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Cross-validate a linear probe on each backbone's embeddings of the same samples.

    A backbone that cannot be loaded (no weights offline, say) is reported with its error
    and the others go on.

    Returns:
        One row per backbone, ranked best first: ``backbone``, ``status``, ``rank``, the
        mean and sd of each metric, ``folds`` and ``error``.

    """
    rows = []
    for name in backbones:
        try:
            data = embed_labelled(specs, settings.with_(backbone=name, weights=None))
            result = cross_validate(data.embeddings, data.labels, data.groups, PROBE,
                                    folds=folds)
            row = probe_row(name, result, data.embeddings.shape[1])
        except DFLError as exc:
            row = {"backbone": name, "status": "error", "error": str(exc)}
        rows.append(row)
        if on_result is not None:
            on_result(row)
    return rank(rows)
