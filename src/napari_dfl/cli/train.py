"""``napari-dfl train`` and ``napari-dfl evaluate``: heads from labelled datasets."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_dfl.cli.embed import add_composition_arguments, embed_config


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the head and its training."""
    group = parser.add_argument_group("head")
    group.add_argument("--head", default="mlp", choices=["linear", "mlp"])
    group.add_argument("--noise", type=float, help="sigma of the embedding noise (default: "
                       "the measured default, see docs/heads.md)")
    group.add_argument("--loss", default="focal", choices=["focal", "ce"])
    group.add_argument("--gamma", type=float, default=2.0, help="focal loss gamma (2)")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--stores", help="folder of embedding stores (default: user cache)")
    group.add_argument("--classes", help="comma-separated class names to accept")


def train_config(args: argparse.Namespace):
    """A :class:`TrainConfig` from parsed arguments (defaults where not given)."""
    from napari_dfl.core.heads.training import TrainConfig

    values = {"head": args.head, "loss": args.loss, "gamma": args.gamma, "seed": args.seed}
    if args.noise is not None:
        values["noise"] = args.noise
    return TrainConfig(**values)


def _embed(args: argparse.Namespace):
    from napari_dfl.workflows.labelled import embed_labelled

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    return embed_labelled(args.datasets, embed_config(args), args.stores, classes=classes,
                          on_progress=_progress_printer())


def _progress_printer():
    last = {}

    def show(progress) -> None:
        if progress.done == progress.total or last.get(progress.slide, -1) < 0:
            print(f"  embeddings {progress.slide}: {progress.done}/{progress.total}",
                  file=sys.stderr)
        last[progress.slide] = progress.done

    return show


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``train`` and ``evaluate``."""
    train = sub.add_parser("train", help="train a head on labelled datasets")
    train.add_argument("datasets", nargs="+",
                       help="SLIDE[:ANNOTATIONS.geojson], a folder of class subfolders, or a CSV")
    train.add_argument("--out", required=True, help="head folder to write (e.g. tumour.dflhead)")
    add_composition_arguments(train)
    add_training_arguments(train)
    train.set_defaults(handler=run_train)

    evaluate = sub.add_parser("evaluate", help="grouped k-fold cross-validation of a head")
    evaluate.add_argument("datasets", nargs="+")
    evaluate.add_argument("--folds", type=int, default=5)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    add_composition_arguments(evaluate)
    add_training_arguments(evaluate)
    evaluate.set_defaults(handler=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    """Embed, train, write the head folder with its model card and metric plots."""
    import numpy as np

    from napari_dfl.core.heads.head_files import save_head
    from napari_dfl.core.heads.metrics import save_report_plots
    from napari_dfl.core.heads.training import fit

    data = _embed(args)
    config = train_config(args)
    head = fit(data.embeddings, data.labels, data.groups, config)
    path = save_head(head, args.out, extractor=data.extractor, data_summary=data.summary())
    if head.metrics:
        # The confusion matrix; PR curves need the validation probabilities, not kept.
        save_report_plots(head.metrics, None, np.empty(0, np.int64), head.classes,
                          Path(path) / "validation.png")
    print(f"wrote {path}: {len(head.classes)} classes {head.classes}, "
          f"{len(data.labels)} samples in {data.summary()['groups']} groups")
    if head.metrics:
        m = head.metrics
        print(f"validation: balanced accuracy {m['balanced_accuracy']:.3f}, "
              f"Cohen kappa {m['cohen_kappa']:.3f}, weighted F1 {m['weighted_f1']:.3f}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Cross-validate and print the means (and per-fold values)."""
    from napari_dfl.core.heads.training import cross_validate

    data = _embed(args)
    result = cross_validate(data.embeddings, data.labels, data.groups, train_config(args),
                            folds=args.folds)
    keys = ("balanced_accuracy", "cohen_kappa", "weighted_f1")
    if args.json:
        print(json.dumps(result))
        return 0
    for key in keys:
        print(f"{key:18} {result[key]:.3f} +- {result[key + '_sd']:.3f}")
    return 0
