"""``napari-dfl demo``: the whole method on the bundled sample slide, end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_dfl.cli.options import add_sub_command, bounded_int, path_text, say
from napari_dfl.cli.progress import Progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(
        sub, "demo", "run the whole method on the bundled sample slide",
        "napari-dfl demo --out out/demo",
        "Embed the tiles under the demo annotations of the bundled CC0 slide, measure a "
        "head by grouped cross-validation, train it, predict the slide and write the "
        "overlay PNG, metrics (JSON, PNG), head folder and report.json.")
    parser.add_argument("--out", type=path_text, default="out/demo",
                        help="output folder (default out/demo)")
    parser.add_argument("--folds", type=bounded_int(2, 10, "folds"), default=3,
                        help="grouped cross-validation folds, 2 to 10 (default 3)")
    parser.add_argument("--stores", type=path_text, metavar="DIR",
                        help="folder of the embedding stores (default: the user cache)")
    parser.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print where everything went."""
    from napari_dfl.core.heads.assessment import summary_line  # loads torch: not for --help
    from napari_dfl.workflows.demo import run_demo

    progress = Progress()
    try:
        report = run_demo(Path(args.out), folds=args.folds, device=args.device,
                          store_dir=args.stores, on_event=progress.event)
    finally:
        progress.close()
    validation = report["validation"]
    counts = "" if validation.get("judgeable") else \
        f"{report['samples']} labelled samples in {report['data']['groups']} regions; "
    say(f"demo: {counts}{summary_line(validation)}")
    say(f"demo: predicted {report['prediction']['predicted']} tissue tiles "
        f"{report['prediction']['counts']} in {report['seconds']['predict']:.1f} s "
        f"({report['seconds']['total']:.1f} s in all); embeddings in {report['stores']}")
    say(f"demo: overlay {report['files']['overlay']}; report {report['files']['report']}")
    return 0
