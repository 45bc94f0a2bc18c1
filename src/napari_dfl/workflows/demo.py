"""The main job on the bundled sample slide, end to end (``napari-dfl demo``).

Embeds the tiles under the shipped demo annotations (epidermis, dermis, background on the
CMU-1 small region), measures a head by grouped cross-validation, trains the final head on
everything, predicts the slide's tissue tiles, and writes the overlay PNG, the metrics
(JSON and PNG), the head folder and ``report.json``. Embeddings go to the default store
folder, where the panel finds them when the sample is opened in napari.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from napari_dfl.core.features.settings import Settings
from napari_dfl.core.heads.assessment import assess
from napari_dfl.core.heads.config import TrainConfig
from napari_dfl.core.heads.head_files import save_head
from napari_dfl.core.heads.metrics import classification_report
from napari_dfl.core.heads.plots import save_report_plots
from napari_dfl.core.heads.prediction_files import save_prediction
from napari_dfl.core.heads.training import fit
from napari_dfl.core.heads.validation import json_ready
from napari_dfl.core.project.folder import geojson_colors
from napari_dfl.core.slides.sample_slide import (
    SAMPLE_ANNOTATIONS,
    SAMPLE_COMPOSITION,
    SAMPLE_PATCH,
    SAMPLE_SLIDE,
)
from napari_dfl.core.slides.tiff import Slide
from napari_dfl.core.util.atomic import write_json
from napari_dfl.core.util.palette import class_colors
from napari_dfl.workflows.embedding.local import LocalEmbedder
from napari_dfl.workflows.jobs import run
from napari_dfl.workflows.labelled import embed_labelled
from napari_dfl.workflows.predict import predict_tiles, prediction_grid

__all__ = ["DEMO_PATCH", "demo_settings", "run_demo"]

#: The demo's tile side (112 px at x20; see :data:`SAMPLE_COMPOSITION`).
DEMO_PATCH = SAMPLE_PATCH


def demo_settings(device: str | None = None, store_dir: str | None = None) -> Settings:
    """The settings of the demo (the panel offers the same for the sample slide)."""
    return Settings(composition=SAMPLE_COMPOSITION, device=device, store_dir=store_dir)


def run_demo(out: Path, folds: int = 3, device: str | None = None,
             store_dir: str | None = None,
             on_event: Callable[[str, object], None] | None = None) -> dict:
    """Run the demo and write its files into ``out``; returns the report it writes."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = demo_settings(device, store_dir)
    embedder = LocalEmbedder(settings)
    times: dict[str, float] = {}
    start = time.perf_counter()
    data = embed_labelled([f"{SAMPLE_SLIDE}:{SAMPLE_ANNOTATIONS}"], settings, embedder=embedder)
    times["embed_labelled"] = time.perf_counter() - start

    tick = time.perf_counter()
    config = TrainConfig()
    evaluation = assess(data.embeddings, data.labels, data.groups, config, folds=folds)
    assessment = json_ready(evaluation)
    metrics_path = write_json(out / "metrics.json", assessment)
    if "out_of_fold" in evaluation:
        oof = evaluation["out_of_fold"]
        report = classification_report(oof["y_true"], oof["proba"].argmax(1), oof["proba"],
                                       evaluation["classes"])
        save_report_plots(report, oof["proba"], oof["y_true"], evaluation["classes"],
                          out / "metrics.png")
    head = fit(data.embeddings, data.labels, data.groups, config)
    # the bundled annotations' colours: the panel shows the same (H&E-safe) ones
    colors = class_colors(sorted(head.classes), geojson_colors(SAMPLE_ANNOTATIONS))
    head_path = save_head(head, out / "demo.dflhead", extractor=data.extractor,
                          data_summary=data.summary(), colors=colors, assessment=assessment)
    times["train"] = time.perf_counter() - tick

    tick = time.perf_counter()
    with Slide(SAMPLE_SLIDE) as slide:
        grid = prediction_grid(slide, settings)
        prediction = run(predict_tiles(slide, head, grid, embedder), on_event)
        files = save_prediction(prediction, slide, out, colors=colors)
    times["predict"] = time.perf_counter() - tick
    times["total"] = time.perf_counter() - start

    report = {
        "slide": str(SAMPLE_SLIDE),
        "annotations": str(SAMPLE_ANNOTATIONS),
        "composition": settings.composition.to_dict(),
        "backbone": data.extractor.backbone,
        "stores": str(settings.stores),
        "samples": len(data.labels),
        "data": data.summary(),
        "folds": assessment["folds"],
        "validation": assessment,
        "prediction": {"tiles": len(grid), "predicted": int(prediction.predicted.sum()),
                       "counts": prediction.counts()},
        "seconds": {k: round(v, 2) for k, v in times.items()},
        "files": {**files, "head": str(head_path), "metrics": str(metrics_path),
                  "metrics_png": str(out / "metrics.png"), "report": str(out / "report.json")},
    }
    write_json(out / "report.json", report)
    return report
