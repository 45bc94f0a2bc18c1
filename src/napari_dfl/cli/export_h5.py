"""``napari-dfl export-h5`` / ``import-h5``: TRIDENT/CLAM h5 feature files."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register both sub-commands."""
    export = sub.add_parser("export-h5", help="write a store as a TRIDENT/CLAM features h5")
    export.add_argument("store", help="an embedding store folder (*.dfl.zarr)")
    export.add_argument("out", help="the .h5 file to write")
    export.set_defaults(handler=run_export)
    imported = sub.add_parser("import-h5", help="turn a TRIDENT/CLAM features h5 into a store")
    imported.add_argument("h5", help="the .h5 file (datasets features and coords)")
    imported.add_argument("store", help="the store folder to create")
    imported.set_defaults(handler=run_import)


def run_export(args: argparse.Namespace) -> int:
    """Export a store."""
    from napari_dfl.core.features.h5 import export_h5
    from napari_dfl.core.features.store import EmbeddingStore

    store = EmbeddingStore.open(args.store)
    path = export_h5(store, args.out)
    print(f"wrote {len(store)} features of dimension {store.dim} to {path}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Import an h5 file."""
    from napari_dfl.core.features.h5 import import_h5

    store = import_h5(args.h5, args.store)
    print(f"imported {len(store)} features of dimension {store.dim} into {store.path}")
    return 0
