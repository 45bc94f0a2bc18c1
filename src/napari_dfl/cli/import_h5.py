"""``napari-dfl import-h5 IN.h5 STORE``: a TRIDENT/CLAM features h5 file as a store."""

from __future__ import annotations

import argparse

from napari_dfl.cli.options import add_sub_command, say


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(sub, "import-h5", "turn a TRIDENT/CLAM features h5 into a store",
                             "napari-dfl import-h5 slide.h5 slide.dfl.zarr")
    parser.add_argument("h5", help="the .h5 file (datasets features and coords)")
    parser.add_argument("store", help="the store folder to create")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Import an h5 file."""
    from napari_dfl.core.features.h5 import import_h5  # zarr, h5py: not for --help

    store = import_h5(args.h5, args.store)
    say(f"imported {len(store)} features of dimension {store.dim} into {store.path}")
    return 0
