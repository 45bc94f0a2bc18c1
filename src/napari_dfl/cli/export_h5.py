"""``napari-dfl export-h5 STORE OUT.h5``: a store as a TRIDENT/CLAM features h5 file."""

from __future__ import annotations

import argparse

from napari_dfl.cli.options import add_sub_command, positive_float, say


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(
        sub, "export-h5", "write a store as a TRIDENT/CLAM features h5",
        "napari-dfl export-h5 slide__lite0__ab12.dfl.zarr slide.h5 --part '0.5um/px rgb'\n"
        "  napari-dfl export-h5 slide__lite0__ab12.dfl.zarr clam_features --clam",
        "Writes features (N, D) and coords (N, 2) with the coords attributes TRIDENT reads "
        "(patch_size, patch_size_level0, level0_magnification, target_magnification, name). "
        "A store's vector is the concatenation of its composition's parts; --part keeps "
        "one (what a slide encoder expects).")
    parser.add_argument("store", help="an embedding store folder (*.dfl.zarr)")
    parser.add_argument("out", help="the .h5 file to write (with --clam: CLAM's features "
                                    "folder, given h5_files/ and pt_files/)")
    parser.add_argument("--part", help="export one composition part, e.g. '0.5um/px rgb', "
                                       "'x20 rgb' or its position 0, 1, ...")
    parser.add_argument("--clam", action="store_true",
                        help="write CLAM's layout in OUT: h5_files/<slide>.h5 and "
                             "pt_files/<slide>.pt (torch.save of the feature tensor)")
    parser.add_argument("--patch-size-level0", type=positive_float,
                        help="patch side in level-0 pixels, if the store does not record it")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Export a store."""
    # the store stack (zarr) is loaded when the command runs: --help stays fast
    from napari_dfl.core.features.h5 import export_clam, export_h5, part_columns_of
    from napari_dfl.core.features.store import EmbeddingStore

    store = EmbeddingStore.open(args.store)
    dim = store.dim if args.part is None else len(part_columns_of(store, args.part))
    what = f"{len(store)} features of dimension {dim}"
    if args.part is not None:
        what += f" (part {args.part!r} of {store.dim})"
    size = None if args.patch_size_level0 is None else round(args.patch_size_level0)
    if args.clam:
        paths = export_clam(store, args.out, patch_size_level0=size, part=args.part)
        say(f"wrote {what} to {paths['h5']} and {paths['pt']}")
    else:
        path = export_h5(store, args.out, patch_size_level0=size, part=args.part)
        say(f"wrote {what} to {path}")
    return 0
