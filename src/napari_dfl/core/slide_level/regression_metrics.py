"""Metrics of slide-level targets: per target, as a table and a plot, and two runs compared.

Numeric targets are scored by Pearson r, Spearman rho and R2 (of the predictions in the
target's units against the truth); binary ones by ROC AUC and balanced accuracy (threshold
0.5 on the probability). Slides without a value for a target are left out of that target.

:func:`compare_runs` compares two runs over their common targets, e.g. two extractors on the
same cohort (the fine-tuning paper's "139 of 171 genes improved"): how many targets
improved, and a paired Wilcoxon signed-rank test of the differences of each target's
headline metric (r for numbers, AUC for binary targets).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np

from napari_dfl.core.slide_level.config import MILError, TargetSpec
from napari_dfl.core.util.atomic import atomic_path

__all__ = [
    "METRIC_COLUMNS",
    "compare_runs",
    "format_table",
    "headline",
    "metrics_rows",
    "read_run_metrics",
    "save_metrics_plot",
    "target_metrics",
    "write_metrics_csv",
]

#: Columns of the metrics table (one row per target and method).
METRIC_COLUMNS = ["target", "kind", "method", "n", "n_positive", "pearson_r", "spearman_rho",
                  "r2", "auc", "balanced_accuracy"]


def _num(value: float) -> float | None:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def target_metrics(truth: np.ndarray, predicted: np.ndarray, kind: str) -> dict:
    """Metrics of one target over the slides with a value (NaN truth is left out).

    Args:
        truth: ``(N,)`` true values (0/1 for binary targets), NaN where missing.
        predicted: ``(N,)`` predictions (target units, or probabilities of 1).
        kind: ``"numeric"`` or ``"binary"``.

    Returns:
        numeric: ``n``, ``pearson_r``, ``spearman_rho``, ``r2``; binary: ``n``,
        ``n_positive``, ``auc``, ``balanced_accuracy``. A metric that is undefined (a
        constant prediction, one class only) is None.

    """
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import balanced_accuracy_score, r2_score, roc_auc_score

    truth, predicted = np.asarray(truth, float), np.asarray(predicted, float)
    keep = np.isfinite(truth) & np.isfinite(predicted)
    y, p = truth[keep], predicted[keep]
    out: dict = {"n": int(keep.sum())}
    if kind == "numeric":
        varied = len(y) >= 3 and np.ptp(y) > 0 and np.ptp(p) > 0
        out["pearson_r"] = _num(pearsonr(y, p)[0]) if varied else None
        out["spearman_rho"] = _num(spearmanr(y, p)[0]) if varied else None
        out["r2"] = _num(r2_score(y, p)) if len(y) >= 2 and np.ptp(y) > 0 else None
        return out
    labels = y.astype(int)
    out["n_positive"] = int(labels.sum())
    both = 0 < labels.sum() < len(labels)
    out["auc"] = _num(roc_auc_score(labels, p)) if both else None
    out["balanced_accuracy"] = (_num(balanced_accuracy_score(labels, (p >= 0.5).astype(int)))
                                if both else None)
    return out


def headline(row: dict) -> float | None:
    """A target's headline metric: Pearson r (numeric) or AUC (binary)."""
    return row.get("pearson_r") if row.get("kind") == "numeric" else row.get("auc")


def metrics_rows(targets: list[TargetSpec], truth: np.ndarray, predicted: np.ndarray,
                 method: str) -> list[dict]:
    """One metrics row per target (:data:`METRIC_COLUMNS`) for ``(N, T)`` predictions."""
    rows = []
    for t, spec in enumerate(targets):
        row = {"target": spec.name, "kind": spec.kind, "method": method}
        row.update(target_metrics(truth[:, t], predicted[:, t], spec.kind))
        rows.append({c: row.get(c) for c in METRIC_COLUMNS})
    return rows


def format_table(rows: list[dict]) -> str:
    """The metrics rows as a fixed-width text table (``n/a`` for undefined metrics)."""
    shown = ["target", "kind", "method", "n", "pearson_r", "spearman_rho", "r2", "auc",
             "balanced_accuracy"]
    heads = ["target", "kind", "method", "n", "r", "rho", "R2", "AUC", "bal.acc"]

    def cell(value) -> str:
        if value is None:
            return "n/a"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    table = [heads] + [[cell(r.get(c)) for c in shown] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(heads))]
    return "\n".join("  ".join(v.ljust(w) if i < 3 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(line, widths, strict=True)))
                     for line in table)


def write_metrics_csv(rows: list[dict], path: str | os.PathLike) -> Path:
    """Write the metrics rows as CSV (empty cells for undefined metrics), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row[c] for c in METRIC_COLUMNS})
    return path


def save_metrics_plot(rows: list[dict], truth: np.ndarray, predicted: np.ndarray,
                      targets: list[TargetSpec], path_png: str | os.PathLike,
                      methods: tuple[str, str] = ("mil", "baseline")) -> Path:
    """Draw the cross-validated results into a PNG (matplotlib's Agg canvas, atomic write).

    Left: each target's headline metric (r or AUC) of the two ``methods`` against each
    other, the diagonal marking a tie. Right: out-of-fold predictions against the truth for
    the numeric target the first method predicts best (or the binary target with the best
    AUC, as a strip per class).

    Args:
        rows: metrics rows of both methods (see :func:`metrics_rows`).
        truth: ``(N, T)`` true values (NaN where missing).
        predicted: ``(N, T)`` out-of-fold predictions of ``methods[0]``.
        targets: the targets in column order.
        path_png: where to write.
        methods: the methods on the x and y axes of the left panel.

    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path_png)
    fig = Figure(figsize=(11, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_cmp, ax_fit = fig.subplots(1, 2)
    by = {(r["target"], r["method"]): r for r in rows}
    for kind, marker, colour in (("numeric", "o", "tab:blue"), ("binary", "s", "tab:orange")):
        pairs = [(headline(by[(t.name, methods[0])]), headline(by[(t.name, methods[1])]))
                 for t in targets if t.kind == kind and (t.name, methods[1]) in by]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        if pairs:
            xs, ys = zip(*pairs, strict=True)
            label = "numeric: Pearson r" if kind == "numeric" else "binary: AUC"
            ax_cmp.scatter(ys, xs, marker=marker, color=colour, alpha=0.7, label=label)
    ax_cmp.plot([-1, 1], [-1, 1], color="grey", lw=0.8, ls="--")
    ax_cmp.set_xlim(-1.05, 1.05)
    ax_cmp.set_ylim(-1.05, 1.05)
    ax_cmp.set_xlabel(f"{methods[1]} (cross-validated)")
    ax_cmp.set_ylabel(f"{methods[0]} (cross-validated)")
    ax_cmp.set_title(f"{len(targets)} target(s): above the diagonal, {methods[0]} wins")
    if ax_cmp.get_legend_handles_labels()[0]:
        ax_cmp.legend(loc="lower right")
    scored = [(headline(by[(t.name, methods[0])]), i) for i, t in enumerate(targets)]
    scored = [(v, i) for v, i in scored if v is not None]
    numeric = [(v, i) for v, i in scored if targets[i].kind == "numeric"]
    best = max(numeric or scored, default=None)
    if best is None:
        ax_fit.text(0.5, 0.5, "no target could be scored", ha="center", va="center")
    else:
        t = best[1]
        keep = np.isfinite(truth[:, t])
        if targets[t].kind == "numeric":
            ax_fit.scatter(truth[keep, t], predicted[keep, t], s=14, alpha=0.7)
            low, high = np.nanmin(truth[keep, t]), np.nanmax(truth[keep, t])
            ax_fit.plot([low, high], [low, high], color="grey", lw=0.8, ls="--")
            ax_fit.set_xlabel(f"true {targets[t].name}")
            ax_fit.set_ylabel(f"predicted {targets[t].name} ({methods[0]}, out of fold)")
            ax_fit.set_title(f"{targets[t].name}: r = {best[0]:.3f}")
        else:
            jitter = np.random.default_rng(0).uniform(-0.15, 0.15, keep.sum())
            ax_fit.scatter(truth[keep, t] + jitter, predicted[keep, t], s=14, alpha=0.7)
            ax_fit.set_xticks([0, 1], ["0", "1"])
            ax_fit.set_xlabel(f"true {targets[t].name}")
            ax_fit.set_ylabel(f"P({targets[t].name} = 1) ({methods[0]}, out of fold)")
            ax_fit.set_title(f"{targets[t].name}: AUC = {best[0]:.3f}")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def read_run_metrics(path: str | os.PathLike, method: str = "mil") -> dict[str, tuple[str, float]]:
    """A run's headline metric per target: ``{target: (kind, r or AUC)}``.

    Args:
        path: a multi-target slide model folder (its card's cross-validation metrics), its
            ``cv_metrics.csv``, or any CSV with :data:`METRIC_COLUMNS`.
        method: which method's rows (``"mil"`` or ``"baseline"``).

    Raises:
        MILError: the file is not such a run, or holds no row of ``method``.

    """
    path = Path(path)
    rows: list[dict] = []
    try:
        if path.is_dir():
            card = json.loads((path / "model_card.json").read_text(encoding="utf-8"))
            rows = list(((card.get("metrics") or {}).get("rows")) or [])
        else:
            with open(path, newline="", encoding="utf-8") as handle:
                for row in csv.DictReader(handle):
                    row = dict(row)
                    for key in METRIC_COLUMNS[3:]:
                        row[key] = float(row[key]) if row.get(key) not in (None, "") else None
                    rows.append(row)
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise MILError(f"{path} is not a multi-target run's results ({exc}): give a model "
                       "folder written by train-slides --targets or its cv_metrics.csv.") from None
    found = {}
    for row in rows:
        if isinstance(row, dict) and row.get("method") == method and row.get("target"):
            value = headline(row)
            found[str(row["target"])] = (str(row.get("kind")),
                                         float("nan") if value is None else float(value))
    if not found:
        raise MILError(f"{path} holds no cross-validated {method!r} metrics: train with "
                       "--targets and --folds >= 2, then compare.")
    return found


def compare_runs(before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]]
                 ) -> dict:
    """Compare two runs over their common targets (e.g. extractor A, then extractor B).

    Args:
        before: ``{target: (kind, headline metric)}`` of the reference run.
        after: the same for the other run (see :func:`read_run_metrics`).

    Returns:
        ``n_targets`` (common, both scored), ``n_improved``, ``n_worse``, ``n_equal``,
        ``mean_difference`` and ``median_difference`` (after - before), ``wilcoxon_p``
        (two-sided paired Wilcoxon signed-rank test; None with fewer than 2 nonzero
        differences), ``only_before`` / ``only_after`` (targets in one run only) and
        ``per_target`` ``{target: [before, after]}``.

    Raises:
        MILError: no common target, or a target that is numeric in one run and binary in
            the other.

    """
    from scipy.stats import wilcoxon

    common = [t for t in before if t in after]
    clash = [t for t in common if before[t][0] != after[t][0]]
    if clash:
        raise MILError(f"target(s) {', '.join(clash)} are numeric in one run and binary in the "
                       "other: compare runs of the same cohort CSV.")
    pairs = {t: (before[t][1], after[t][1]) for t in common
             if math.isfinite(before[t][1]) and math.isfinite(after[t][1])}
    if not pairs:
        raise MILError("the two runs share no scored target: compare runs of the same cohort "
                       "and targets.")
    diff = np.array([b - a for a, b in pairs.values()])
    nonzero = diff[np.abs(diff) > 1e-12]
    p = float(wilcoxon(nonzero).pvalue) if len(nonzero) >= 2 else None
    return {"n_targets": len(pairs), "n_improved": int((diff > 1e-12).sum()),
            "n_worse": int((diff < -1e-12).sum()),
            "n_equal": int((np.abs(diff) <= 1e-12).sum()),
            "mean_difference": round(float(diff.mean()), 6),
            "median_difference": round(float(np.median(diff)), 6),
            "wilcoxon_p": None if p is None else round(p, 6),
            "only_before": sorted(set(before) - set(after)),
            "only_after": sorted(set(after) - set(before)),
            "per_target": {t: [round(a, 6), round(b, 6)] for t, (a, b) in pairs.items()}}
