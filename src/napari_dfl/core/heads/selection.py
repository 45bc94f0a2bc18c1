"""Ranking candidate extractors by a linear probe on the user's own labels (the proxy task).

Each candidate embeds the same labelled samples; a linear head (:data:`PROBE`) is
cross-validated with grouped folds; candidates are ranked by mean balanced accuracy (then
Cohen kappa). Results are written as a Markdown table, a CSV and a bar chart. Embedding the
candidates is the workflow's part (:mod:`napari_dfl.workflows.select`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from napari_dfl.core.heads.config import TrainConfig
from napari_dfl.core.heads.metrics import NO_KAPPA, NO_SD, metric_text
from napari_dfl.core.slides.sampling import Composition

__all__ = ["METRICS", "PROBE", "candidate_name", "label", "markdown_table", "probe_row", "rank",
           "write_results"]

METRICS = ("balanced_accuracy", "cohen_kappa", "weighted_f1")

#: The cheap probe that ranks candidates: a linear head, no noise, cross-entropy.
PROBE = TrainConfig(head="linear", noise=0.0, loss="ce", class_weights=True)


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
           "dim": int(dim), "samples": int(sum(r["n_test"] for r in result["folds"]))}
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


def markdown_table(rows: list[dict]) -> str:
    """The ranking as a Markdown table (mean +- sd)."""
    what = "candidate" if any("candidate" in row for row in rows) else "backbone"
    lines = [f"| rank | {what} | balanced accuracy | Cohen kappa | weighted F1 |",
             "|---|---|---|---|---|"]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| - | {label(row)} | unavailable: {row['error']} | | |")
            continue
        cells = [f"{metric_text(row[m], NO_KAPPA if m == 'cohen_kappa' else 'undefined')} ± "
                 f"{metric_text(row[m + '_sd'], NO_SD)}" for m in METRICS]
        lines.append(f"| {row['rank']} | {label(row)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], out_dir: str | os.PathLike,
                  stem: str = "backbones") -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.csv`` and ``<stem>.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / f"{stem}.md", "csv": out / f"{stem}.csv",
             "png": out / f"{stem}.png"}
    paths["markdown"].write_text(markdown_table(rows))
    columns = ["rank", *(["candidate"] if any("candidate" in r for r in rows) else []),
               "backbone", "status", *[c for m in METRICS for c in (m, m + "_sd")],
               "folds", "error"]
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    _bar_chart([r for r in rows if r["status"] == "ok"], paths["png"])
    return paths


def _number(value: float | None, missing: float = float("nan")) -> float:
    """A value the chart can draw: an undefined metric is no bar (NaN), no error bar (0)."""
    return missing if value is None else float(value)


def _bar_chart(rows: list[dict], path: Path) -> None:
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
    ax.set_xticks(x + width, [label(r) for r in rows], rotation=20, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("linear probe, grouped CV")
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path)
