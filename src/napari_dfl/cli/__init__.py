"""Command-line interface: ``napari-dfl <command> ...``, the same workflows as the panel.

Parsing only: each sub-command module declares its options and calls a workflow of
:mod:`napari_dfl.workflows`. Every error prints one line on stderr and exits non-zero;
``--debug`` shows the traceback. Warnings print once each, as one line
(``napari-dfl: warning: ...``), without Python's source line. Heavy modules are imported by
the command that runs, so ``napari-dfl --help`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from napari_dfl._version import __version__
from napari_dfl.cli.options import COMMAND_MODULES
from napari_dfl.core.errors import DFLError, MissingMppWarning

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of all sub-commands."""
    parser = argparse.ArgumentParser(
        prog="napari-dfl",
        description="Deep Feature Learning on histopathology whole-slide images: embed "
                    "slides with a frozen backbone, train a small head on your labels, "
                    "predict whole slides.",
        epilog="example:\n  napari-dfl demo --out out/demo\n"
               "  napari-dfl COMMAND --help   (each command's options and an example)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"napari-dfl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"napari_dfl.cli.{name}").add_parser(sub)
    return parser


@contextmanager
def one_line_warnings(debug: bool = False) -> Iterator[None]:
    """Within the block, each distinct warning prints once, as one line on stderr.

    ``debug`` keeps Python's own format (category, file and line).
    """
    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        if text in shown:
            return
        shown.add(text)
        out = file if file is not None else sys.stderr
        if debug:
            out.write(warnings.formatwarning(message, category, filename, lineno, line))
        elif "tqdm" in sys.modules:  # a progress bar may be drawn: print above it
            from tqdm import tqdm

            tqdm.write(f"napari-dfl: warning: {text}", file=out)
        else:
            out.write(f"napari-dfl: warning: {text}\n")

    with warnings.catch_warnings():
        warnings.simplefilter("always")  # deduplicated by text above, across call sites
        if not debug:  # library housekeeping, not the user's business
            for noisy in (DeprecationWarning, PendingDeprecationWarning, ResourceWarning):
                warnings.simplefilter("ignore", noisy)
        # said again by the error of whatever needs the pixel size, with what to do; info
        # records it itself
        warnings.simplefilter("ignore", MissingMppWarning)
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with one_line_warnings(args.debug):
            return args.handler(args)
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
        print(f"napari-dfl: error: {' '.join(message.split())}", file=sys.stderr)
        return EXIT_ERROR
