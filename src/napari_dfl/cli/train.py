"""``napari-dfl train DATASET... --out HEAD``: train a head on labelled datasets."""

from __future__ import annotations

import argparse

from napari_dfl.cli.options import (
    add_extractor_options,
    add_run_options,
    add_sub_command,
    add_training_options,
    path_text,
    say,
    settings_from,
    train_config_from,
)
from napari_dfl.cli.progress import Progress

DATASETS_HELP = "SLIDE[:ANNOTATIONS.geojson], a folder of class subfolders, or a CSV " \
                "image,x,y,label"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(
        sub, "train", "train a head on labelled datasets",
        "napari-dfl train slide.svs:slide.geojson --out tumour.dflhead",
        "Embed the labelled samples (what the stores lack), train a small head with a "
        "grouped validation split, and write the head folder with its model card.")
    parser.add_argument("datasets", nargs="+", help=DATASETS_HELP)
    parser.add_argument("--out", type=path_text, required=True,
                        help="head folder to write (e.g. x.dflhead)")
    add_extractor_options(parser)
    add_run_options(parser)
    add_training_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Embed, train, write the head folder with its model card and validation plot."""
    from napari_dfl.core.heads.assessment import summary_line  # not for --help
    from napari_dfl.workflows.train import train_datasets, write_head

    progress = Progress()
    try:
        result = train_datasets(args.datasets, settings_from(args), train_config_from(args),
                                classes=args.classes, on_progress=progress.embedding)
    finally:
        progress.close()
    path = write_head(result, args.out)
    head, summary = result.head, result.data.summary()
    say(f"wrote {path}: {len(head.classes)} classes {head.classes}, {summary['samples']} "
        f"samples in {summary['groups']} groups")
    say(f"validation: {summary_line(result.assessment)}")
    return 0
