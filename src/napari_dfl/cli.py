"""Command-line interface: ``napari-dfl <command> ...``, the same core calls as the GUI.

Every error prints one line on stderr and exits non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence

from napari_dfl.core.errors import DFLError, MissingMppWarning

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable:
    """Register a function as the handler of a sub-command."""

    def register(function: Callable[[argparse.Namespace], int]) -> Callable:
        _COMMANDS[name] = function
        return function

    return register


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of all sub-commands."""
    parser = argparse.ArgumentParser(
        prog="napari-dfl",
        description="Deep Feature Learning on histopathology whole-slide images.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="describe a slide: format, levels, mpp, tissue")
    info.add_argument("slide", help="path of an SVS / TIFF / OME-TIFF / NDPI slide")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--mpp", type=_positive_float, help="microns per pixel, if the file has none")
    info.add_argument("--no-tissue", action="store_true", help="skip tissue detection")
    return parser


@command("info")
def _info(args: argparse.Namespace) -> int:
    from napari_dfl.core.slide import Slide
    from napari_dfl.core.tissue import detect_tissue

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MissingMppWarning)
        slide = Slide(args.slide, mpp=args.mpp)
    with slide:
        summary = slide.describe()
        summary["tissue_fraction"] = None if args.no_tissue else round(
            detect_tissue(slide).fraction, 4
        )
        summary["warnings"] = [str(w.message) for w in caught]
    if args.json:
        print(json.dumps(summary))
        return 0
    _print_info(summary)
    return 0


def _print_info(summary: dict) -> None:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("napari-dfl: interrupted; finished work is kept, run again to resume.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # one line for the user, the traceback only on request
        if args.debug:
            traceback.print_exc()
        message = str(exc) if isinstance(exc, DFLError | OSError) else (
            f"unexpected {type(exc).__name__}: {exc} (run with --debug and report it)"
        )
        print(f"napari-dfl: error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
