"""``napari-dfl predict SLIDE... --head HEAD --out DIR``: whole-slide prediction."""

from __future__ import annotations

import argparse

from napari_dfl.cli.options import add_run_options, add_sub_command, path_text, say, settings_from
from napari_dfl.cli.progress import Progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(
        sub, "predict", "predict the tissue tiles of slides with a head",
        "napari-dfl predict slides/*.svs --head tumour.dflhead --out predictions",
        "Predict every tile with enough tissue; write per slide the arrays (.npz), the "
        "tiles as QuPath detections (.geojson), an overlay PNG and a JSON summary. The "
        "backbone and composition are the head's; stored embeddings are reused.")
    parser.add_argument("slides", nargs="+", help="slide files")
    parser.add_argument("--head", required=True, help="a head folder written by train")
    parser.add_argument("--out", type=path_text, required=True, help="output folder")
    parser.add_argument("--weights", help="the backbone's local weights file, if the head's "
                                          "backbone was loaded from one")
    add_run_options(parser, min_tissue=True)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Predict each slide; a slide that fails is reported and the others go on."""
    from napari_dfl.workflows.predict import predict_slide_files  # not for --help

    progress = Progress()

    def done(path: str, summary: dict | None, error: str | None) -> None:
        progress.close()
        if error is not None:
            say(f"FAILED  {path}: {error}", err=True)
        else:
            say(f"ok      {path}: {summary['predicted']} tiles {summary['counts']} -> "
                f"{summary['overlay']}")

    failed = predict_slide_files(args.slides, args.head, args.out,
                                 settings=settings_from(args, weights=args.weights),
                                 on_event=progress.event, on_done=done)
    return 1 if failed else 0
