"""``napari-dfl export-h5 STORE OUT.h5``: a store as a TRIDENT/CLAM features h5 file."""

from __future__ import annotations

import argparse

from napari_dfl.cli.options import add_sub_command, say


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(sub, "export-h5", "write a store as a TRIDENT/CLAM features h5",
                             "napari-dfl export-h5 slide__lite0__ab12.dfl.zarr slide.h5")
    parser.add_argument("store", help="an embedding store folder (*.dfl.zarr)")
    parser.add_argument("out", help="the .h5 file to write")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Export a store."""
    # the store stack (zarr) is loaded when the command runs: --help stays fast
    from napari_dfl.core.features.h5 import export_h5
    from napari_dfl.core.features.store import EmbeddingStore

    store = EmbeddingStore.open(args.store)
    path = export_h5(store, args.out)
    say(f"wrote {len(store)} features of dimension {store.dim} to {path}")
    return 0
