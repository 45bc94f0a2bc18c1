"""``napari-dfl evaluate DATASET...``: grouped k-fold cross-validation of a head."""

from __future__ import annotations

import argparse
import json

from napari_dfl.cli.options import (
    add_extractor_options,
    add_run_options,
    add_sub_command,
    add_training_options,
    bounded_int,
    say,
    settings_from,
    train_config_from,
)
from napari_dfl.cli.progress import Progress
from napari_dfl.cli.train import DATASETS_HELP


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(
        sub, "evaluate", "grouped k-fold cross-validation of a head on labelled data",
        "napari-dfl evaluate nuclei.csv --folds 5 --zooms 0.5 --variants rgb")
    parser.add_argument("datasets", nargs="+", help=DATASETS_HELP)
    parser.add_argument("--folds", type=bounded_int(2, 50, "folds"), default=5,
                        help="folds, 2 to 50; no group (slide, region, image) is on both "
                             "sides (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_extractor_options(parser)
    add_run_options(parser)
    add_training_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Cross-validate and print the means over folds (and the pooled figures)."""
    from napari_dfl.core.heads.metrics import NO_KAPPA, NO_SD, metric_text
    from napari_dfl.core.heads.validation import json_ready  # torch: not for --help
    from napari_dfl.workflows.train import evaluate_datasets  # not for --help

    progress = Progress(enabled=not args.json)
    try:
        result, data = evaluate_datasets(args.datasets, settings_from(args),
                                         train_config_from(args), folds=args.folds,
                                         classes=args.classes, on_progress=progress.embedding)
    finally:
        progress.close()
    if args.json:
        say(json.dumps(json_ready(result)))
        return 0
    summary = data.summary()
    say(f"{summary['samples']} samples in {summary['groups']} groups, {result['n_folds']} folds")
    for key in ("balanced_accuracy", "cohen_kappa", "weighted_f1"):
        mean = metric_text(result[key], f"{NO_KAPPA} in every fold" if key == "cohen_kappa"
                           else "no fold gave a value")
        say(f"{key:18} {mean} +- {metric_text(result[key + '_sd'], NO_SD)} (mean +- sd over "
            f"folds)")
    undefined = [r["fold"] for r in result["folds"] if r["cohen_kappa"] is None]
    if undefined:
        say(f"Cohen kappa is undefined in fold{'s' if len(undefined) > 1 else ''} "
            f"{', '.join(map(str, undefined))} ({NO_KAPPA}, every sample predicted as it); "
            "the mean is over the other folds")
    return 0
