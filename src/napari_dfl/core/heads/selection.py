"""Ranking candidate extractors by a linear probe on the user's own labels (the proxy task).

Each candidate embeds the same labelled samples; a linear head (:data:`PROBE`) is
cross-validated with grouped folds; candidates are ranked by mean balanced accuracy (then
Cohen kappa). Results are written as a Markdown table, a CSV and a bar chart. Embedding the
candidates is the workflow's part (:mod:`napari_dfl.workflows.select`).

:func:`choose` turns the ranking into a suggestion: the probe's best, unless the settings in
use are among the candidates and the best beats them by no more than the folds can tell
(:data:`SWITCH_MARGIN` standard errors of the paired fold differences); then they stay. A
probe tie says nothing about the head trained afterwards, and the defaults were chosen on
more data than one user's labels (``docs/selection.md``).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_dfl.core.heads.config import TrainConfig
from napari_dfl.core.heads.metrics import NO_KAPPA, NO_SD, metric_text
from napari_dfl.core.slides.sampling import Composition

__all__ = ["METRICS", "PROBE", "SWITCH_MARGIN", "Pick", "candidate_name", "choose", "label",
           "markdown_table", "marked", "paired_gain", "probe_row", "rank", "same_folds",
           "write_results"]

METRICS = ("balanced_accuracy", "cohen_kappa", "weighted_f1")

#: The cheap probe that ranks candidates: a linear head, no noise, cross-entropy.
PROBE = TrainConfig(head="linear", noise=0.0, loss="ce", class_weights=True)
#: A candidate replaces the settings in use only when its probe beats theirs by more than this
#: many standard errors of the paired fold differences (about a one-sided 5 % test).
SWITCH_MARGIN = 2.0


def candidate_name(backbone: str, composition: Composition) -> str:
    """``efficientnet-lite0, 64 px (32 µm), x20 + x5, rgb + gray``: a candidate in words."""
    zooms = " + ".join(f"x{10 / z:g}" for z in composition.zooms)
    return (f"{backbone}, {composition.patch_size} px ({composition.fields_um()[0]:g} µm), "
            f"{zooms}, {' + '.join(composition.variants)}")


def label(row: dict) -> str:
    """What a row ranks: its candidate's name, else its backbone's."""
    return str(row.get("candidate") or row["backbone"])


def probe_row(candidate: str, result: dict, dim: int) -> dict:
    """One ranking row from a :func:`~napari_dfl.core.heads.validation.cross_validate` result."""
    row = {"backbone": candidate, "status": "ok", "error": None, "folds": result["n_folds"],
           "dim": int(dim), "samples": int(sum(r["n_test"] for r in result["folds"])),
           # per fold, so that two candidates on the same folds compare pairwise
           "fold_scores": [float(r["balanced_accuracy"]) for r in result["folds"]],
           "fold_sizes": [int(r["n_test"]) for r in result["folds"]]}
    for metric in METRICS:  # None stays None: kappa of one-class folds, sd of one value
        for key in (metric, metric + "_sd"):
            row[key] = None if result[key] is None else float(result[key])
    return row


def _descending(value: float | None) -> float:
    """Sort key: higher first, an undefined value after every defined one."""
    return float("inf") if value is None else -value


def rank(rows: list[dict]) -> list[dict]:
    """Rows ranked best first (balanced accuracy, then kappa); failed rows last, unranked."""
    ranked = sorted((r for r in rows if r["status"] == "ok"),
                    key=lambda r: (_descending(r["balanced_accuracy"]),
                                   _descending(r["cohen_kappa"])))
    for position, row in enumerate(ranked, start=1):
        row["rank"] = position
    return ranked + [r for r in rows if r["status"] != "ok"]


def same_folds(a: dict, b: dict) -> bool:
    """True when two rows were scored fold by fold on the same test sets (same sizes)."""
    sa, sb = a.get("fold_scores"), b.get("fold_scores")
    return bool(sa and sb and len(sa) == len(sb) > 1
                and a.get("fold_sizes") == b.get("fold_sizes"))


def paired_gain(a: dict, b: dict) -> tuple[float, float]:
    """Row ``a``'s balanced accuracy minus ``b``'s, and the standard error of that difference.

    Paired over folds when both rows were scored on the same folds (the same test-set sizes
    fold by fold: the same samples and seed); otherwise the means' difference with the two
    standard errors combined.
    """
    if same_folds(a, b):
        diff = np.asarray(a["fold_scores"], float) - np.asarray(b["fold_scores"], float)
        return float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(len(diff)))
    gain = float(a["balanced_accuracy"] - b["balanced_accuracy"])
    variance = sum((row["balanced_accuracy_sd"] or 0.0) ** 2 / max(1, row["folds"])
                   for row in (a, b))
    return gain, math.sqrt(variance)


@dataclass(frozen=True)
class Pick:
    """What :func:`choose` suggests, and the figures that decided it.

    Attributes:
        row: the suggested candidate's row.
        top: the probe's best row (``row`` unless the settings in use were kept).
        current: the row of the settings in use, None when they were not among the
            candidates.
        gain: ``top`` minus ``current`` in balanced accuracy (paired over folds); None
            without ``current``.
        gain_se: the standard error of ``gain``.

    """

    row: dict
    top: dict
    current: dict | None = None
    gain: float | None = None
    gain_se: float | None = None

    @property
    def keeps_current(self) -> bool:
        """True when the suggestion is the settings in use (nothing to change)."""
        return self.current is not None and self.row is self.current

    def reason(self) -> str:
        """One sentence: why this row, with the figures."""
        if self.current is None:
            return ("the probe's best; the settings in use were not among the candidates, so "
                    "there was nothing to weigh it against.")
        if self.current is self.top:
            return "the settings in use, and the probe's best."
        folds = ("over the same folds" if same_folds(self.top, self.current)
                 else "on different samples")
        figures = f"{self.gain:+.3f} ± {self.gain_se:.3f} (s.e.)"
        if self.keeps_current:
            return (f"the settings in use stay: the probe's best, {label(self.top)}, scores "
                    f"{figures} against them {folds}, within what the folds can tell (a "
                    f"change needs more than {SWITCH_MARGIN:g} s.e.).")
        return (f"a change: {label(self.top)} scores {figures} against the settings in use "
                f"{folds}, more than {SWITCH_MARGIN:g} s.e.")


def choose(rows: list[dict], is_current: Callable[[dict], bool] | None = None) -> Pick | None:
    """The suggestion from ranked rows (:func:`rank`); None when no row was evaluated.

    Args:
        rows: candidates ranked best first.
        is_current: tells the row of the settings in use. When one is found and the best row
            does not beat it by more than :data:`SWITCH_MARGIN` standard errors
            (:func:`paired_gain`), the settings in use are suggested.

    """
    ok = [row for row in rows if row["status"] == "ok"]
    if not ok:
        return None
    top = ok[0]
    current = next((row for row in ok if is_current(row)), None) if is_current else None
    if current is None:
        return Pick(top, top)
    if current is top:
        return Pick(top, top, current, 0.0, 0.0)
    gain, se = paired_gain(top, current)
    switch = gain > 0 and gain > SWITCH_MARGIN * se
    return Pick(top if switch else current, top, current, gain, se)


def marked(row: dict, pick: Pick | None, name: str | None = None) -> str:
    """A row's label, ★ when it is ``pick``'s suggestion, "(in use)" for the settings in use.

    ``name`` replaces the label (the panel shows candidates without their backbone).
    """
    name = label(row) if name is None else name
    if pick is not None and row is pick.current:
        name += " (in use)"
    return f"★ {name}" if pick is not None and row is pick.row else name


def markdown_table(rows: list[dict], pick: Pick | None = None) -> str:
    """The ranking as a Markdown table (mean +- sd).

    With ``pick``, its row is marked ★ and the settings in use "(in use)".
    """
    what = "candidate" if any("candidate" in row for row in rows) else "backbone"
    lines = [f"| rank | {what} | balanced accuracy | Cohen kappa | weighted F1 |",
             "|---|---|---|---|---|"]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| - | {label(row)} | unavailable: {row['error']} | | |")
            continue
        cells = [f"{metric_text(row[m], NO_KAPPA if m == 'cohen_kappa' else 'undefined')} ± "
                 f"{metric_text(row[m + '_sd'], NO_SD)}" for m in METRICS]
        lines.append(f"| {row['rank']} | {marked(row, pick)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], out_dir: str | os.PathLike,
                  stem: str = "backbones", pick: Pick | None = None) -> dict[str, Path]:
    """Write ``<stem>.md`` (with ``pick`` marked), ``<stem>.csv`` and ``<stem>.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / f"{stem}.md", "csv": out / f"{stem}.csv",
             "png": out / f"{stem}.png"}
    paths["markdown"].write_text(markdown_table(rows, pick))
    columns = ["rank", *(["candidate"] if any("candidate" in r for r in rows) else []),
               "backbone", "status", *[c for m in METRICS for c in (m, m + "_sd")],
               "folds", "error"]
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    _bar_chart([r for r in rows if r["status"] == "ok"], paths["png"], pick)
    return paths


def _number(value: float | None, missing: float = float("nan")) -> float:
    """A value the chart can draw: an undefined metric is no bar (NaN), no error bar (0)."""
    return missing if value is None else float(value)


def _bar_chart(rows: list[dict], path: Path, pick: Pick | None = None) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(24, max(5, 1.6 * len(rows) + 2)), 4.5), dpi=100,
                 layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / len(METRICS)
    x = np.arange(len(rows))
    for k, metric in enumerate(METRICS):
        ax.bar(x + k * width, [_number(r[metric]) for r in rows], width,
               yerr=[_number(r[metric + "_sd"], 0.0) for r in rows], capsize=3,
               label=metric.replace("_", " "))
    ax.set_xticks(x + width, [marked(r, pick) for r in rows], rotation=20, ha="right",
                  fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("linear probe, grouped CV")
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path)
