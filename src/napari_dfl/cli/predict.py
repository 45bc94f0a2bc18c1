"""``napari-dfl predict SLIDE... --head HEAD --out DIR``: whole-slide prediction."""

from __future__ import annotations

import argparse
import sys

from napari_dfl.cli.options import positive_float


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = sub.add_parser("predict", help="predict the tissue tiles of slides with a head")
    parser.add_argument("slides", nargs="+")
    parser.add_argument("--head", required=True, help="a head folder written by train")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--weights", help="the backbone's local weights file, if the head's "
                        "backbone was loaded from one")
    parser.add_argument("--stores", help="folder of embedding stores (default: user cache)")
    parser.add_argument("--min-tissue", type=float, default=0.5)
    parser.add_argument("--mpp", type=positive_float, help="level-0 um/px if the slide has none")
    parser.add_argument("--device")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Predict each slide; a slide that fails is reported and the others go on."""
    from napari_dfl.core.errors import DFLError
    from napari_dfl.core.heads.head_files import load_head

    head, card = load_head(args.head)
    failed = 0
    for path in args.slides:
        try:
            summary = predict_file(path, head, card, args)
        except DFLError as exc:
            failed += 1
            print(f"FAILED  {path}: {exc}", file=sys.stderr)
            continue
        print(f"ok      {path}: {summary['predicted']} tiles {summary['counts']} -> "
              f"{summary['overlay']}")
    return 1 if failed else 0


def predict_file(path: str, head, card: dict, args: argparse.Namespace) -> dict:
    """Predict one slide file and write its outputs."""
    from napari_dfl.core.backbones.backbone import load_backbone
    from napari_dfl.core.features.engine import extractor_description, open_store_for
    from napari_dfl.core.heads.head_files import check_compatible
    from napari_dfl.core.heads.prediction_files import save_prediction
    from napari_dfl.core.heads.tile_prediction import predict_slide
    from napari_dfl.core.slides.image import open_slide
    from napari_dfl.core.slides.sampling import Composition
    from napari_dfl.core.slides.tissue import tile_grid
    from napari_dfl.workflows.labelled import default_store_dir

    extractor = card["extractor"]
    composition = Composition.from_dict(extractor["composition"])
    backbone = load_backbone(extractor["backbone"]["name"], weights=args.weights,
                             device=args.device)
    check_compatible(card, extractor_description(backbone, composition))
    with open_slide(path, mpp=args.mpp) as slide:
        grid = tile_grid(slide, composition.patch_size, composition.zooms[0],
                         min_tissue=args.min_tissue)
        store = open_store_for(slide, backbone, composition, args.stores or default_store_dir())
        prediction = run_prediction(predict_slide(slide, head, backbone, composition, store,
                                                  grid))
        files = save_prediction(prediction, slide, args.out, colors=card.get("colors"))
    return {"predicted": int(prediction.predicted.sum()), "counts": prediction.counts(),
            **files}


def run_prediction(generator):
    """Drive a prediction generator to its end, with a progress line on stderr."""
    from napari_dfl.core.util.progress import drive

    def show(progress) -> None:
        end = "\n" if progress.done == progress.total else ""
        print(f"\r  predicted {progress.done}/{progress.total} tiles", end=end, file=sys.stderr)

    return drive(generator, show)
