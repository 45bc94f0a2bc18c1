"""``napari-dfl info SLIDE``: format, levels, mpp, objective power, tissue fraction."""

from __future__ import annotations

import argparse
import json

from napari_dfl.cli.options import add_sub_command, positive_float, say


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(sub, "info", "describe a slide: format, levels, mpp, tissue",
                             "napari-dfl info slide.svs --json")
    parser.add_argument("slide", help="an SVS / TIFF / OME-TIFF / NDPI slide, or an image")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--mpp", type=positive_float,
                        help="microns per pixel at level 0, for slides whose file has none")
    parser.add_argument("--no-tissue", action="store_true", help="skip tissue detection")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the slide summary."""
    from napari_dfl.workflows.slide_info import describe_slide  # not for --help

    summary = describe_slide(args.slide, mpp=args.mpp, tissue=not args.no_tissue)
    if args.json:
        say(json.dumps(summary))
    else:
        _print_summary(summary)
    return 0


def _print_summary(summary: dict) -> None:
    mpp = summary["mpp"]
    power = summary["objective_power"]
    say(f"{summary['path']}")
    say(f"  format           {summary['format']}")
    say(f"  size             {summary['width']} x {summary['height']} px")
    say(f"  mpp              {mpp if mpp is not None else 'unknown'}"
        + (f" (from {summary['mpp_source']})" if mpp is not None else ""))
    say(f"  objective power  {power if power is not None else 'unknown'}")
    icc = summary.get("icc_profile")
    if icc is not None:
        say(f"  colour profile   embedded ICC ({icc['name'] or 'unnamed'}, {icc['bytes']} "
            "bytes): reported, not applied; pixels are used as stored")
    if summary["tissue_fraction"] is not None:
        say(f"  tissue fraction  {summary['tissue_fraction']:.1%}")
    say("  levels           width x height  downsample")
    for i, level in enumerate(summary["levels"]):
        note = "  (computed)" if level["computed"] else ""
        size = f"{level['width']:>8} x {level['height']:<8}"
        say(f"    {i}  {size} {level['downsample']:>8.3f}{note}")
    for text in summary["warnings"]:
        say(f"  note: {text}")
