"""``napari-dfl train-slides COHORT.csv --stores DIR --out MODEL``: a slide classifier."""

from __future__ import annotations

import argparse

from napari_dfl.cli.options import add_sub_command, bounded_float, bounded_int, path_text, say


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(
        sub, "train-slides", "train a slide classifier (gated attention MIL) from one label "
                             "per slide",
        "napari-dfl train-slides cohort.csv --stores stores --out msi.dflslide",
        "The cohort CSV has columns slide,label (optionally group, the patient); each slide "
        "is matched with its store in --stores. Cross-validated by groups, then trained on "
        "every slide with early stopping.")
    parser.add_argument("cohort", help="CSV with columns slide,label (optional group)")
    parser.add_argument("--stores", type=path_text, required=True,
                        help="folder holding the slides' stores")
    parser.add_argument("--out", type=path_text, required=True, help="model folder to write")
    parser.add_argument("--folds", type=bounded_int(0, 50, "folds"), default=5,
                        help="cross-validation folds, 0 for none (default 5)")
    parser.add_argument("--epochs", type=bounded_int(1, 10000, "epochs"), default=20,
                        help="maximum epochs (default 20)")
    parser.add_argument("--noise", type=bounded_float(0.0, 100.0, "the noise"), default=0.5,
                        help="sigma of the embedding noise (default 0.5)")
    parser.add_argument("--loss", default="focal", choices=["focal", "ce"],
                        help="focal loss or cross-entropy (default focal)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--val-fraction", type=bounded_float(0.0, 0.5, "the validation share"),
                        default=0.2, help="share of groups held out for early stopping, "
                                          "0 for none (default 0.2)")
    parser.add_argument("--patience", type=bounded_int(1, 1000, "patience"), default=5,
                        help="epochs without validation improvement before stopping "
                             "(default 5)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Read the cohort, cross-validate, train on every slide and write the model folder."""
    from napari_dfl.core.slide_level.config import MILConfig  # loaded when the command runs
    from napari_dfl.workflows.slide_level import train_cohort, write_slide_model

    config = MILConfig(epochs=args.epochs, noise=args.noise, loss=args.loss, seed=args.seed,
                       val_fraction=args.val_fraction, patience=args.patience)
    model = train_cohort(args.cohort, args.stores, config, folds=args.folds,
                         on_skipped=lambda text: say(f"SKIPPED {text}", err=True))
    path = write_slide_model(model, args.out)
    say(f"wrote {path}: {model.summary.get('n_slides', '?')} slides, classes {model.classes}")
    stop = model.early_stopping
    if stop.get("validation"):
        say(f"early stopping: best epoch {stop['best_epoch']} of {stop['epochs_run']} run "
            f"({stop['n_val_slides']} validation slides)")
    else:
        say(f"no early stopping ({stop.get('reason')}): trained {stop.get('epochs_run')} "
            "epochs")
    if model.metrics:
        m = model.metrics
        auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
        say(f"cross-validation ({m['n_folds']} folds): AUC {auc}, balanced accuracy "
            f"{m['balanced_accuracy']:.3f}")
    return 0
