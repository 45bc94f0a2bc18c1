"""``napari-dfl train-slides COHORT.csv --stores DIR --out MODEL``: a slide-level model.

With a ``label`` column: a slide classifier. With ``--targets A,B`` or ``--targets-from
'PREFIX*'``: one model with one output per target column (numeric: regression; 0/1:
binary), cross-validated beside a pooled-embedding baseline, with a metrics table and plot.
"""

from __future__ import annotations

import argparse

from napari_dfl.cli.options import add_sub_command, bounded_float, bounded_int, path_text, say
from napari_dfl.cli.progress import Progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(
        sub, "train-slides", "train a slide classifier, or a model of numeric and binary "
                             "slide targets (gated attention MIL)",
        "napari-dfl train-slides cohort.csv --stores stores --out msi.dflslide\n"
        "  napari-dfl train-slides genes.csv --stores stores --out genes.dflslide "
        "--targets-from 'GENE_*'",
        "The cohort CSV has columns slide,label (optionally group, the patient); each slide "
        "is matched with its store in --stores. Cross-validated by groups, then trained on "
        "every slide with early stopping. With --targets or --targets-from the CSV's target "
        "columns are learnt instead of the label: numbers by regression (Huber or MSE loss "
        "on standardised values), 0/1 or true/false columns by binary cross-entropy, all in "
        "one model; a mean-pooling + ridge/logistic baseline is cross-validated on the same "
        "folds and the model folder gets cv_metrics.csv, cv_metrics.png and "
        "cv_predictions.csv.")
    parser.add_argument("cohort", help="CSV with columns slide,label (optional group) or "
                                       "slide[,group] and target columns")
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
                        help="classifier: focal loss or cross-entropy (default focal)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--val-fraction", type=bounded_float(0.0, 0.5, "the validation share"),
                        default=0.2, help="share of groups held out for early stopping, "
                                          "0 for none (default 0.2)")
    parser.add_argument("--patience", type=bounded_int(1, 1000, "patience"), default=5,
                        help="epochs without validation improvement before stopping "
                             "(default 5)")
    targets = parser.add_argument_group("slide targets (regression and multi-label)")
    targets.add_argument("--targets", metavar="NAME[,NAME...]",
                         help="target columns of the CSV, comma-separated")
    targets.add_argument("--targets-from", metavar="PATTERN",
                         help="target columns by shell pattern, e.g. 'GENE_*' (quote it)")
    targets.add_argument("--numeric-loss", choices=["huber", "mse"], default="huber",
                         help="loss of numeric targets (default huber)")
    targets.add_argument("--missing", choices=["drop", "refuse"], default="drop",
                         help="a slide without a value: left out of that target only "
                              "(drop, default) or stop (refuse)")
    targets.add_argument("--no-baseline", action="store_true",
                         help="skip the mean-pooling + ridge/logistic baseline")
    targets.add_argument("--baseline-max", action="store_true",
                         help="baseline slide embedding: mean and max of the tiles")
    targets.add_argument("--compare-with", metavar="RUN",
                         help="another run (its model folder or cv_metrics.csv), e.g. of "
                              "another extractor: count the targets this run improves, with "
                              "a paired Wilcoxon test")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Read the cohort, cross-validate, train on every slide and write the model folder."""
    from napari_dfl.core.slide_level.config import MILConfig  # loaded when the command runs

    config = MILConfig(epochs=args.epochs, noise=args.noise, loss=args.loss, seed=args.seed,
                       val_fraction=args.val_fraction, patience=args.patience,
                       numeric_loss=args.numeric_loss)
    if args.targets or args.targets_from:
        return _run_targets(args, config)
    from napari_dfl.workflows.slide_level import train_cohort, write_slide_model

    progress = Progress()
    try:
        model = train_cohort(args.cohort, args.stores, config, folds=args.folds,
                             on_skipped=lambda text: say(f"SKIPPED {text}", err=True),
                             progress=progress.fit)
    finally:
        progress.close()
    path = write_slide_model(model, args.out)
    say(f"wrote {path}: {model.summary.get('n_slides', '?')} slides, classes {model.classes}")
    _say_early_stopping(model.early_stopping)
    if model.metrics:
        m = model.metrics
        auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
        say(f"cross-validation ({m['n_folds']} folds): AUC {auc}, balanced accuracy "
            f"{m['balanced_accuracy']:.3f}")
    return 0


def _say_early_stopping(stop: dict) -> None:
    if stop.get("validation"):
        say(f"early stopping: best epoch {stop['best_epoch']} of {stop['epochs_run']} run "
            f"({stop['n_val_slides']} validation slides)")
    else:
        say(f"no early stopping ({stop.get('reason')}): trained {stop.get('epochs_run')} "
            "epochs")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _run_targets(args: argparse.Namespace, config) -> int:
    """Train a multi-target model, print its table, write its folder, compare if asked."""
    from napari_dfl.core.slide_level.regression_metrics import format_table
    from napari_dfl.workflows.slide_level import (
        compare_target_runs,
        train_target_cohort,
        write_target_model,
    )

    if args.compare_with:  # a bad reference run is said before the training, not after
        from napari_dfl.core.slide_level.regression_metrics import read_run_metrics

        read_run_metrics(args.compare_with)
    progress = Progress()
    try:
        model, oof, cohort = train_target_cohort(
            args.cohort, args.stores, config, targets=args.targets, pattern=args.targets_from,
            missing=args.missing, folds=args.folds, baseline=not args.no_baseline,
            with_max=args.baseline_max,
            on_skipped=lambda text: say(f"SKIPPED {text}", err=True), progress=progress.fit)
    finally:
        progress.close()
    written = write_target_model(model, args.out, cohort, oof)
    kinds = [f"{t.name} ({t.kind})" for t in model.targets]
    say(f"wrote {written['model']}: {model.summary.get('n_slides', '?')} slides, "
        f"{len(kinds)} target(s): {', '.join(kinds[:10])}{' ...' if len(kinds) > 10 else ''}")
    _say_early_stopping(model.early_stopping)
    if not model.metrics:
        return 0
    m = model.metrics
    say(f"cross-validation ({m['n_folds']} grouped folds, held-out slides):")
    say(format_table(m["rows"]))
    for method, summary in m["summary"].items():
        say(f"{method}: mean Pearson r {_fmt(summary['mean_pearson_r'])} over "
            f"{summary['n_numeric']} numeric target(s), mean AUC {_fmt(summary['mean_auc'])} "
            f"over {summary['n_binary']} binary target(s)")
    if "wins" in m:
        w = m["wins"]
        say(f"per target: MIL better on {w['mil']}, baseline better on {w['baseline']}, "
            f"tied or unscored {w['tie']}")
    say(f"wrote {written['metrics_csv']}, {written['plot']} and {written['predictions_csv']}")
    if args.compare_with:
        c = compare_target_runs(args.compare_with, written["model"])
        p = "n/a (fewer than 2 differences)" if c["wilcoxon_p"] is None \
            else f"{c['wilcoxon_p']:.3g}"
        say(f"against {args.compare_with}: {c['n_improved']} of {c['n_targets']} target(s) "
            f"improved, {c['n_worse']} worse (median difference {c['median_difference']:+.3f}"
            f"; paired Wilcoxon p = {p})")
    return 0
