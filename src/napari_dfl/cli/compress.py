"""``napari-dfl compress STORE... --out DIR``: stores as compressed embedding grids."""

from __future__ import annotations

import argparse

from napari_dfl.cli.options import add_sub_command, path_text, say


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(
        sub, "compress", "compress stores into embedding grids (neural image compression)",
        "napari-dfl compress stores/*.dfl.zarr --out grids",
        "Place each store's tile embeddings on the slide's tile grid (one .npz per slide) "
        "with a PCA false-colour preview PNG.")
    parser.add_argument("stores", nargs="+", help="embedding store folders (*.dfl.zarr)")
    parser.add_argument("--out", type=path_text, required=True, help="output folder")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Compress each store; a store that fails is reported and the others go on."""
    from napari_dfl.workflows.slide_level import compress_stores  # not for --help

    def done(path: str, summary: dict | None, error: str | None) -> None:
        if error is not None:
            say(f"FAILED  {path}: {error}", err=True)
            return
        rows, cols, dim = summary["grid"]
        say(f"ok      {path}: {summary['tiles']} tiles on a {rows}x{cols}x{dim} grid "
            f"(tile {summary['tile_size']:g} px) -> {summary['file']}")

    return 1 if compress_stores(args.stores, args.out, on_done=done) else 0
