"""``napari-dfl select DATASET...``: choose backbone and composition on your own labels."""

from __future__ import annotations

import argparse
from dataclasses import replace

from napari_dfl.cli.options import (
    add_extractor_options,
    add_run_options,
    add_sub_command,
    bounded_int,
    path_text,
    say,
    settings_from,
    word_list,
)
from napari_dfl.cli.progress import Progress
from napari_dfl.cli.train import DATASETS_HELP

#: Fields of view compared by default: a nucleus (16 µm at x20), a few cells (32 µm) and a
#: tissue tile (112 µm).
DEFAULT_FIELDS = (32, 64, 224)


def _fields(text: str) -> tuple[int, ...]:
    parse = bounded_int(16, 4096, "a field of view")
    values = tuple(parse(part.strip()) for part in text.split(",") if part.strip())
    if not values:
        raise argparse.ArgumentTypeError("give at least one field of view, e.g. 64,224")
    return values


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(
        sub, "select", "rank backbones and compositions on your labels; --apply keeps the best",
        "napari-dfl select slide.svs:slide.geojson --backbones efficientnet-lite0,"
        "efficientnet-lite2 --fields 64,224 --apply",
        "Embed your labelled samples once per backbone and field of view (reusing every "
        "stored embedding), then cross-validate a linear probe on grouped folds for each "
        "candidate: backbone x field of view x (x20 alone, with x5 context) x (rgb, rgb + "
        "gray). Prints the ranking, writes a Markdown table, a CSV and a chart, and "
        "suggests one: the best, unless the settings train uses now are among the "
        "candidates and the best does not beat them by more than 2 standard errors over "
        "the same folds (then they stay). --apply makes the suggestion the default of "
        "train, evaluate, embed and the panel.")
    parser.add_argument("datasets", nargs="*", help=DATASETS_HELP)
    parser.add_argument("--backbones", type=word_list, default=("efficientnet-lite0",),
                        help="comma-separated backbone names (default efficientnet-lite0)")
    parser.add_argument("--fields", type=_fields, default=DEFAULT_FIELDS,
                        help="fields of view to compare, as patch sizes in pixels at the "
                             "first zoom (default 32,64,224: 16, 32 and 112 µm at x20)")
    parser.add_argument("--folds", type=bounded_int(2, 50, "folds"), default=5,
                        help="grouped folds, 2 to 50 (default 5)")
    parser.add_argument("--out", type=path_text, default="selection",
                        help="output folder (default selection)")
    parser.add_argument("--apply", action="store_true",
                        help="keep the suggested candidate as the default of train, "
                             "evaluate, embed and the panel")
    parser.add_argument("--reset", action="store_true",
                        help="forget a kept choice (back to the built-in defaults) and stop")
    add_extractor_options(parser, candidates=True)
    add_run_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Compare, print the table, write the files; keep the suggestion with ``--apply``."""
    from napari_dfl.core.features.preferred import clear_preferred, save_preferred
    from napari_dfl.core.heads.metrics import NO_SD, metric_text
    from napari_dfl.core.heads.selection import markdown_table, write_results
    from napari_dfl.workflows.select import (
        choice_record,
        compare_settings,
        current_extractor,
        kept_choice,
        pick_of,
    )

    if args.reset:
        say("the kept choice was removed: built-in defaults from now on" if clear_preferred()
            else "no choice was kept: the built-in defaults are in use")
        return 0
    if not args.datasets:
        say("give labelled datasets to select on (or --reset to forget a kept choice)",
            err=True)
        return 2

    progress = Progress()

    def show(row: dict) -> None:
        progress.close()  # the line goes below a finished bar, not through it
        state = (f"{row['balanced_accuracy']:.3f}" if row["status"] == "ok"
                 else f"unavailable ({row['error']})")
        say(f"  {row['candidate']}: {state}", err=True)

    current = current_extractor(args.datasets)
    settings = settings_from(args)
    # the candidates read the x5 context as the settings in use do (centred for points, the
    # nearest context for tissue, a kept choice's own), so those settings are among them
    settings = settings.with_(composition=replace(settings.composition,
                                                  context=current[1].context))
    try:
        rows = compare_settings(args.datasets, args.backbones, args.fields, settings,
                                folds=args.folds, on_result=show,
                                on_progress=progress.embedding)
    finally:
        progress.close()
    pick = pick_of(rows, settings.composition, current)
    paths = write_results(rows, args.out, stem="selection", pick=pick)
    say(markdown_table(rows, pick).rstrip())
    if pick is None:
        say("no candidate could be evaluated", err=True)
        return 1
    row = pick.row
    say(f"in use now: {current[0]}, {current[1].describe()} (what train would use)")
    say(f"suggested: {row['candidate']} (balanced accuracy {row['balanced_accuracy']:.3f} ± "
        f"{metric_text(row['balanced_accuracy_sd'], NO_SD)} over {row['folds']} folds, "
        f"{row['samples']} samples): {pick.reason()}")
    say(f"wrote {paths['markdown']}, {paths['csv']}, {paths['png']}")
    if args.apply:
        if pick.keeps_current:
            say("--apply: nothing to change; train, evaluate, embed and the panel keep "
                f"{current[0]}, {current[1].describe()}")
            return 0
        backbone, composition = kept_choice(row, settings.composition)
        path = save_preferred(backbone, composition,
                              choice_record(row, [str(d) for d in args.datasets]))
        say(f"kept as the default of train, evaluate, embed and the panel ({path}); "
            "napari-dfl select --reset forgets it")
    return 0
