"""``napari-dfl predict SLIDE... --head HEAD --out DIR``: whole-slide prediction."""

from __future__ import annotations

import argparse

from napari_dfl.cli.options import add_run_options, add_sub_command, path_text, say, settings_from
from napari_dfl.cli.progress import Progress
from napari_dfl.core.errors import DFLError


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
    parser.add_argument("--ome-zarr", nargs="?", const="", metavar="DIR", type=str,
                        help="also write each prediction as OME-Zarr (NGFF 0.4: class "
                             "probabilities and a class-map label image at the slide's "
                             "scale) as <slide>.prediction.ome.zarr in DIR (default: --out)")
    add_run_options(parser, min_tissue=True)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Predict each slide; a slide that fails is reported and the others go on."""
    from napari_dfl.workflows.predict import predict_slide_files  # not for --help

    progress = Progress()
    failed_ome = []

    def done(path: str, summary: dict | None, error: str | None) -> None:
        progress.close()
        if error is None and args.ome_zarr is not None:
            try:
                summary = {**summary, "overlay": f"{summary['overlay']}, "
                                                  f"{_write_ome_zarr(args, summary)}"}
            except (DFLError, OSError) as exc:
                error = f"the prediction was written but not its OME-Zarr: {exc}"
                failed_ome.append(path)
        if error is not None:
            say(f"FAILED  {path}: {error}", err=True)
        else:
            say(f"ok      {path}: {summary['predicted']} tiles {summary['counts']} -> "
                f"{summary['overlay']}")

    failed = predict_slide_files(args.slides, args.head, args.out,
                                 settings=settings_from(args, weights=args.weights),
                                 on_event=progress.event, on_done=done)
    return 1 if failed or failed_ome else 0


def _write_ome_zarr(args: argparse.Namespace, summary: dict) -> str:
    """Write the OME-Zarr of one slide's prediction beside (or in --ome-zarr) its arrays."""
    from pathlib import Path

    from napari_dfl.core.heads.head_files import load_head
    from napari_dfl.core.heads.ome_zarr import write_ome_zarr
    from napari_dfl.core.heads.prediction_files import load_arrays

    arrays = Path(summary["arrays"])
    folder = Path(args.ome_zarr) if args.ome_zarr else arrays.parent
    stem = arrays.name.removesuffix(".npz")
    _, card = load_head(args.head)
    return str(write_ome_zarr(load_arrays(arrays), folder / f"{stem}.ome.zarr",
                              colors=card.get("colors"), name=stem))
