"""``napari-dfl select-backbone DATASET... --backbones A,B,C``: rank backbones on your labels."""

from __future__ import annotations

import argparse

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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(
        sub, "select-backbone", "rank backbones by a grouped linear probe on labelled data",
        "napari-dfl select-backbone slide.svs:slide.geojson --out selection",
        "Embed the same labelled samples with each backbone, cross-validate a linear probe "
        "on grouped folds and rank by balanced accuracy (then Cohen kappa); writes a "
        "Markdown table, a CSV and a bar chart.")
    parser.add_argument("datasets", nargs="+", help=DATASETS_HELP)
    parser.add_argument("--backbones", type=word_list,
                        default=("efficientnet-lite0", "efficientnet-lite1",
                                 "efficientnet-lite2"),
                        help="comma-separated backbone names (default: the offline presets)")
    parser.add_argument("--folds", type=bounded_int(2, 50, "folds"), default=5,
                        help="grouped folds, 2 to 50 (default 5)")
    parser.add_argument("--out", type=path_text, default="backbone-selection",
                        help="output folder (default backbone-selection)")
    add_extractor_options(parser)
    add_run_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Compare, print the table, write Markdown, CSV and PNG."""
    from napari_dfl.core.heads.selection import markdown_table, write_results  # when run
    from napari_dfl.workflows.select import compare_backbones  # not for --help

    progress = Progress()

    def show(row: dict) -> None:
        progress.close()  # the line goes below a finished bar, not through it
        state = "ok" if row["status"] == "ok" else f"unavailable ({row['error']})"
        say(f"  {row['backbone']}: {state}", err=True)

    try:
        rows = compare_backbones(args.datasets, args.backbones, settings_from(args),
                                 folds=args.folds, on_result=show,
                                 on_progress=progress.embedding)
    finally:
        progress.close()
    paths = write_results(rows, args.out)
    say(markdown_table(rows).rstrip())
    ranked = [r["backbone"] for r in rows if r["status"] == "ok"]
    say("ranking: " + (" > ".join(ranked) if ranked else "no backbone could be evaluated"))
    say(f"wrote {paths['markdown']}, {paths['csv']}, {paths['png']}")
    return 0 if ranked else 1
