"""Settings chosen on the user's own labels: embed with each candidate, probe, rank.

Each candidate backbone embeds the same labelled samples (into the shared stores, so a
rerun or a later ``train`` reuses them); a linear probe is cross-validated with grouped
folds; the ranking and its table, CSV and chart come from
:mod:`napari_dfl.core.heads.selection`. :func:`compare_settings` ranks backbones x fields of
view x {with, without x5 context} x {with, without grayscale}: one extraction per backbone
and field, the smaller compositions cut from it (:mod:`napari_dfl.core.features.parts`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace

from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.engine import EmbedProgress
from napari_dfl.core.features.parts import part_columns, sub_compositions
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.heads.selection import PROBE, candidate_name, probe_row, rank
from napari_dfl.core.heads.validation import cross_validate
from napari_dfl.workflows.labelled import embed_labelled

__all__ = ["compare_backbones", "compare_settings"]


def compare_backbones(specs: Sequence[str | os.PathLike], backbones: Sequence[str],
                      settings: Settings, *, folds: int = 5,
                      on_result: Callable[[dict], None] | None = None,
                      on_progress: Callable[[EmbedProgress], None] | None = None,
                      ) -> list[dict]:
    """Cross-validate a linear probe on each backbone's embeddings of the same samples.

    A backbone that cannot be loaded (no weights offline, say) is reported with its error
    and the others go on. ``on_progress`` is called with each source's extraction progress.

    Returns:
        One row per backbone, ranked best first: ``backbone``, ``status``, ``rank``, the
        mean and sd of each metric, ``folds`` and ``error``.

    """
    rows = []
    for name in backbones:
        try:
            data = embed_labelled(specs, settings.with_(backbone=name, weights=None),
                                  on_progress=on_progress)
            result = cross_validate(data.embeddings, data.labels, data.groups, PROBE,
                                    folds=folds)
            row = probe_row(name, result, data.embeddings.shape[1])
        except DFLError as exc:
            row = {"backbone": name, "status": "error", "error": str(exc)}
        rows.append(row)
        if on_result is not None:
            on_result(row)
    return rank(rows)


def compare_settings(specs: Sequence[str | os.PathLike], backbones: Sequence[str],
                     fields: Sequence[int], settings: Settings, *, folds: int = 5,
                     on_result: Callable[[dict], None] | None = None,
                     on_progress: Callable[[EmbedProgress], None] | None = None,
                     ) -> list[dict]:
    """Rank backbones x fields of view x context x grayscale by a grouped linear probe.

    Args:
        specs: labelled datasets (see :func:`~napari_dfl.workflows.labelled.embed_labelled`).
        backbones: backbone names.
        fields: fields of view, as patch sizes in pixels at the first zoom.
        settings: the rest (zooms and variants of the fullest candidate, input size, store
            folder, device).
        folds: grouped folds (no group on both sides).
        on_result: called with each row as it is ready.
        on_progress: called with each source's extraction progress.

    Returns:
        One row per candidate, ranked best first: ``candidate``, ``backbone``,
        ``composition`` (its JSON form), the probe's metrics (see
        :func:`~napari_dfl.core.heads.selection.probe_row`); a backbone that cannot be loaded
        is one ``error`` row, and the others go on.

    """
    rows = []
    for name in backbones:
        for field in fields:
            full = replace(settings.composition, patch_size=int(field))
            try:
                data = embed_labelled(specs, settings.with_(backbone=name, weights=None,
                                                            composition=full),
                                      on_progress=on_progress)
            except DFLError as exc:
                rows.append({"candidate": f"{name}, {field} px", "backbone": name,
                             "status": "error", "error": str(exc)})
                if on_result is not None:
                    on_result(rows[-1])
                continue
            resolved = data.extractor.composition  # the input size resolved
            part_dim = data.embeddings.shape[1] // resolved.n_parts
            for sub in sub_compositions(resolved):
                x = data.embeddings[:, part_columns(resolved, sub, part_dim)]
                result = cross_validate(x, data.labels, data.groups, PROBE, folds=folds)
                row = probe_row(name, result, x.shape[1])
                row.update(candidate=candidate_name(name, sub), composition=sub.to_dict())
                rows.append(row)
                if on_result is not None:
                    on_result(row)
    return rank(rows)
