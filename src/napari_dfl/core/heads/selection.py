"""Backbone selection by a linear probe on the user's own labels (the paper's proxy task).

Each candidate backbone embeds the same labelled samples; a linear head is cross-validated
with grouped folds; candidates are ranked by mean balanced accuracy (then Cohen kappa).
Results are written as a Markdown table, a CSV and a bar chart.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from napari_dfl.core.errors import DFLError
from napari_dfl.workflows.cohort_embedding import EmbedConfig

METRICS = ("balanced_accuracy", "cohen_kappa", "weighted_f1")


def compare_backbones(
    specs: Sequence[str | os.PathLike],
    backbones: Sequence[str],
    config: EmbedConfig,
    *,
    folds: int = 5,
    store_dir: str | os.PathLike | None = None,
    on_result: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Cross-validate a linear probe on each backbone's embeddings of the same samples.

    A backbone that cannot be loaded (no weights offline, say) is reported with its error
    and the others go on.

    Returns:
        One row per backbone, ranked best first: ``backbone``, ``status``, ``rank``, the
        mean and sd of each metric, ``folds`` and ``error``.
    """
    from napari_dfl.core.heads.training import TrainConfig, cross_validate
    from napari_dfl.workflows.labelled import embed_labelled

    probe = TrainConfig(head="linear", noise=0.0, loss="ce", class_weights=True)
    rows = []
    for name in backbones:
        row: dict = {"backbone": name, "status": "error", "error": None}
        try:
            data = embed_labelled(specs, dataclasses.replace(config, backbone=name), store_dir)
            result = cross_validate(data.embeddings, data.labels, data.groups, probe,
                                    folds=folds)
            row.update(status="ok", folds=result["n_folds"], dim=int(data.embeddings.shape[1]))
            for metric in METRICS:
                row[metric] = float(result[metric])
                row[metric + "_sd"] = float(result[metric + "_sd"])
        except DFLError as exc:
            row["error"] = str(exc)
        rows.append(row)
        if on_result is not None:
            on_result(row)
    ranked = sorted((r for r in rows if r["status"] == "ok"),
                    key=lambda r: (-r["balanced_accuracy"], -r["cohen_kappa"]))
    for rank, row in enumerate(ranked, start=1):
        row["rank"] = rank
    return ranked + [r for r in rows if r["status"] != "ok"]


def markdown_table(rows: list[dict]) -> str:
    """The ranking as a Markdown table (mean +- sd)."""
    lines = ["| rank | backbone | balanced accuracy | Cohen kappa | weighted F1 |",
             "|---|---|---|---|---|"]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| - | {row['backbone']} | unavailable: {row['error']} | | |")
            continue
        cells = [f"{row[m]:.3f} ± {row[m + '_sd']:.3f}" for m in METRICS]
        lines.append(f"| {row['rank']} | {row['backbone']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``backbones.md``, ``backbones.csv`` and ``backbones.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "backbones.md", "csv": out / "backbones.csv",
             "png": out / "backbones.png"}
    paths["markdown"].write_text(markdown_table(rows))
    columns = ["rank", "backbone", "status", *[c for m in METRICS for c in (m, m + "_sd")],
               "folds", "error"]
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    _bar_chart([r for r in rows if r["status"] == "ok"], paths["png"])
    return paths


def _bar_chart(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5, 1.6 * len(rows) + 2), 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / len(METRICS)
    x = np.arange(len(rows))
    for k, metric in enumerate(METRICS):
        ax.bar(x + k * width, [r[metric] for r in rows], width,
               yerr=[r[metric + "_sd"] for r in rows], capsize=3,
               label=metric.replace("_", " "))
    ax.set_xticks(x + width, [r["backbone"] for r in rows], rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("linear probe, grouped CV")
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path)
