"""``napari-dfl select-backbone DATASET... --backbones A,B,C``: rank backbones on your labels."""

from __future__ import annotations

import argparse
import sys

from napari_dfl.cli.embed import add_composition_arguments, embed_config
from napari_dfl.cli.options import word_list


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = sub.add_parser("select-backbone",
                            help="rank backbones by a grouped linear probe on labelled data")
    parser.add_argument("datasets", nargs="+")
    parser.add_argument("--backbones", type=word_list,
                        default=("efficientnet-lite0", "efficientnet-lite1",
                                 "efficientnet-lite2"),
                        help="comma-separated backbone names (default: the offline presets)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--out", default="backbone-selection", help="output folder")
    parser.add_argument("--stores", help="folder of embedding stores (default: user cache)")
    add_composition_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Compare, print the table, write Markdown, CSV and PNG."""
    from napari_dfl.core.heads.selection import compare_backbones, markdown_table, write_results

    def show(row: dict) -> None:
        state = "ok" if row["status"] == "ok" else f"unavailable ({row['error']})"
        print(f"  {row['backbone']}: {state}", file=sys.stderr)

    rows = compare_backbones(args.datasets, args.backbones, embed_config(args),
                             folds=args.folds, store_dir=args.stores, on_result=show)
    paths = write_results(rows, args.out)
    print(markdown_table(rows))
    ranked = [r["backbone"] for r in rows if r["status"] == "ok"]
    print("ranking: " + (" > ".join(ranked) if ranked else "no backbone could be evaluated"))
    print(f"wrote {paths['markdown']}, {paths['csv']}, {paths['png']}")
    return 0 if ranked else 1
