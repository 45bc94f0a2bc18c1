"""``napari-dfl info SLIDE``: format, levels, mpp, objective power, tissue fraction."""

from __future__ import annotations

import argparse
import json
import warnings

from napari_dfl.cli.options import positive_float
from napari_dfl.core.errors import MissingMppWarning


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = sub.add_parser("info", help="describe a slide: format, levels, mpp, tissue")
    parser.add_argument("slide", help="path of an SVS / TIFF / OME-TIFF / NDPI slide")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--mpp", type=positive_float,
                        help="microns per pixel at level 0, for slides whose file has none")
    parser.add_argument("--no-tissue", action="store_true", help="skip tissue detection")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the slide summary."""
    from napari_dfl.core.slides.image import open_slide
    from napari_dfl.core.slides.tissue import detect_tissue

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MissingMppWarning)
        slide = open_slide(args.slide, mpp=args.mpp)
    with slide:
        summary = slide.describe()
        summary["tissue_fraction"] = None if args.no_tissue else round(
            detect_tissue(slide).fraction, 4
        )
        summary["warnings"] = [str(w.message) for w in caught]
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(summary)
    return 0


def _print_summary(summary: dict) -> None:
    mpp = summary["mpp"]
    power = summary["objective_power"]
    print(f"{summary['path']}")
    print(f"  format           {summary['format']}")
    print(f"  size             {summary['width']} x {summary['height']} px")
    print(f"  mpp              {mpp if mpp is not None else 'unknown'}"
          + (f" (from {summary['mpp_source']})" if mpp is not None else ""))
    print(f"  objective power  {power if power is not None else 'unknown'}")
    if summary["tissue_fraction"] is not None:
        print(f"  tissue fraction  {summary['tissue_fraction']:.1%}")
    print("  levels           width x height  downsample")
    for i, level in enumerate(summary["levels"]):
        note = "  (computed)" if level["computed"] else ""
        size = f"{level['width']:>8} x {level['height']:<8}"
        print(f"    {i}  {size} {level['downsample']:>8.3f}{note}")
    for text in summary["warnings"]:
        print(f"  warning: {text}")
