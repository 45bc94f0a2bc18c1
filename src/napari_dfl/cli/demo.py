"""``napari-dfl demo --out DIR``: the main job on the bundled sample slide, end to end.

Embeds the tiles under the shipped demo annotations (epidermis, dermis, background on the
CMU-1 small region), measures a head by grouped out-of-fold validation, trains the final
head on everything, predicts the slide's tissue tiles, and writes the overlay PNG, the
metrics (JSON and PNG), the head folder and ``report.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

#: The demo's composition: 112 px at x20 with the x5 context, RGB and gray. The sample is a
#: small region (2220 x 2967 px), so tiles are smaller than the 224 px default.
DEMO_PATCH = 112


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = sub.add_parser("demo", help="run the whole method on the bundled sample slide")
    parser.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    parser.add_argument("--folds", type=int, default=3, help="grouped folds for the metrics")
    parser.add_argument("--device")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print where everything went."""
    report = run_demo(Path(args.out), folds=args.folds, device=args.device)
    m = report["validation"]
    print(f"demo: {report['samples']} labelled samples, out-of-fold balanced accuracy "
          f"{m['balanced_accuracy']:.3f}, Cohen kappa {m['cohen_kappa']:.3f}, weighted F1 "
          f"{m['weighted_f1']:.3f} ({report['folds']} grouped folds)")
    print(f"demo: predicted {report['prediction']['predicted']} tissue tiles "
          f"{report['prediction']['counts']} in {report['seconds']['total']:.1f} s")
    print(f"demo: overlay {report['files']['overlay']}; report {report['files']['report']}")
    return 0


def run_demo(out: Path, folds: int = 3, device: str | None = None) -> dict:
    """The demo as a function (tests call it); returns the report it writes."""
    from napari_dfl._sample_data import SAMPLE_ANNOTATIONS, SAMPLE_SLIDE
    from napari_dfl.cli.predict import run_prediction
    from napari_dfl.core.annotations.geojson import write_json_atomic
    from napari_dfl.core.features.engine import open_store_for
    from napari_dfl.core.heads.head_files import save_head
    from napari_dfl.core.heads.metrics import save_report_plots
    from napari_dfl.core.heads.prediction_files import save_prediction
    from napari_dfl.core.heads.tile_prediction import predict_slide
    from napari_dfl.core.heads.training import TrainConfig, fit
    from napari_dfl.core.slides.sampling import Composition
    from napari_dfl.core.slides.tiff import Slide
    from napari_dfl.core.slides.tissue import tile_grid
    from napari_dfl.workflows.cohort_embedding import EmbedConfig, cached_backbone
    from napari_dfl.workflows.labelled import embed_labelled, out_of_fold

    out.mkdir(parents=True, exist_ok=True)
    stores = out / "embeddings"
    times: dict[str, float] = {}
    start = time.perf_counter()
    config = EmbedConfig(composition=Composition(DEMO_PATCH), device=device)
    data = embed_labelled([f"{SAMPLE_SLIDE}:{SAMPLE_ANNOTATIONS}"], config, stores)
    times["embed_labelled"] = time.perf_counter() - start

    tick = time.perf_counter()
    train_config = TrainConfig()
    evaluation = out_of_fold(data, train_config, folds=folds)
    metrics_path = out / "metrics.json"
    write_json_atomic(evaluation["report"], metrics_path)
    save_report_plots(evaluation["report"], evaluation["proba"], evaluation["y_true"],
                      evaluation["classes"], out / "metrics.png")
    head = fit(data.embeddings, data.labels, data.groups, train_config)
    colors = {"epidermis": "#7828a0", "dermis": "#e678a0", "background": "#c8c8c8"}
    head_path = save_head(head, out / "demo.dflhead", extractor=data.extractor,
                          data_summary=data.summary(), colors=colors)
    times["train"] = time.perf_counter() - tick

    tick = time.perf_counter()
    with Slide(SAMPLE_SLIDE) as slide:
        grid = tile_grid(slide, DEMO_PATCH, config.composition.zooms[0], min_tissue=0.5)
        store = open_store_for(slide, cached_backbone(config), config.composition, stores)
        prediction = run_prediction(predict_slide(slide, head, cached_backbone(config),
                                                  config.composition, store, grid))
        files = save_prediction(prediction, slide, out, colors=colors)
    times["predict"] = time.perf_counter() - tick
    times["total"] = time.perf_counter() - start

    report = {
        "slide": str(SAMPLE_SLIDE),
        "annotations": str(SAMPLE_ANNOTATIONS),
        "composition": config.composition.to_dict(),
        "backbone": data.extractor["backbone"],
        "samples": len(data.labels),
        "data": data.summary(),
        "folds": evaluation["folds"],
        "validation": {k: evaluation["report"][k]
                       for k in ("balanced_accuracy", "cohen_kappa", "weighted_f1")},
        "prediction": {"tiles": len(grid), "predicted": int(prediction.predicted.sum()),
                       "counts": prediction.counts()},
        "seconds": {k: round(v, 2) for k, v in times.items()},
        "files": {**files, "head": str(head_path), "metrics": str(metrics_path),
                  "metrics_png": str(out / "metrics.png"), "report": str(out / "report.json")},
    }
    write_json_atomic(report, out / "report.json")
    return report
