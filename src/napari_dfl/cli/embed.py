"""``napari-dfl embed SLIDE...``: embed the tissue tiles of slides, serially or on dask."""

from __future__ import annotations

import argparse
import json

from napari_dfl.cli.options import (
    add_extractor_options,
    add_run_options,
    add_sub_command,
    say,
    settings_from,
)
from napari_dfl.cli.progress import Progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(
        sub, "embed", "embed the tissue tiles of one or more slides",
        "napari-dfl embed slides/*.svs --scheduler local:2",
        "Embed every tile with enough tissue into one store per slide, in the store folder "
        "(default: the user cache, where train, predict and the napari panel find them). "
        "A rerun computes only what is missing.")
    parser.add_argument("slides", nargs="+", help="slide files")
    add_extractor_options(parser)
    add_run_options(parser, stores_alias="--out", min_tissue=True)
    parser.add_argument("--scheduler",
                        help="dask: local:N for a local cluster of N workers, or an address")
    parser.add_argument("--json", action="store_true", help="print one JSON report per slide")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Embed every slide; exit 1 when a slide failed or held nothing to embed."""
    from napari_dfl.workflows.slide_batch import embed_slides  # not for --help

    settings = settings_from(args)
    progress = Progress(enabled=not args.json)
    if not args.json:
        say(f"stores: {settings.stores}", err=True)
    finished = []

    def report(item: dict) -> None:
        progress.close()
        finished.append(item)
        if args.json:
            say(json.dumps({k: v for k, v in item.items() if k != "traceback"}))
        elif item["status"] == "ok":
            say(f"ok      {item['slide']}: {item['samples']} samples "
                f"({item['computed']} computed) in {item['seconds']:.1f} s -> {item['store']}")
        else:
            say(f"FAILED  {item['slide']}: {item['error']}", err=True)
        if args.scheduler is not None:  # workers report whole slides: a bar of slides
            progress.slides(len(finished), len(args.slides))

    if args.scheduler is not None:
        progress.slides(0, len(args.slides))
    try:
        reports = embed_slides(args.slides, settings, scheduler=args.scheduler,
                               on_report=report, on_progress=progress.embedding)
    finally:
        progress.close()
    bad = sum(r["status"] != "ok" for r in reports)
    if bad and not args.json and bad < len(reports):
        say(f"{bad} of {len(reports)} slides were not embedded; the others are done.",
            err=True)
    return 1 if bad else 0
