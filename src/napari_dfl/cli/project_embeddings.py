"""``napari-dfl project-embeddings STORE... --method pca|umap --out DIR``."""

from __future__ import annotations

import argparse

from napari_dfl.cli.options import add_sub_command, path_text, say


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(
        sub, "project-embeddings", "2-D PCA/UMAP of tile embeddings: coordinates + scatter PNG",
        "napari-dfl project-embeddings stores/*.dfl.zarr --method umap --out umap")
    parser.add_argument("stores", nargs="+", help="embedding store folders (*.dfl.zarr)")
    parser.add_argument("--method", default="pca", choices=["pca", "umap"],
                        help="pca (instant) or umap (default pca)")
    parser.add_argument("--head", help="colour by the class this head predicts (else by slide)")
    parser.add_argument("--out", type=path_text, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the projection "
                                                            "(default 0)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Project, then write ``<slide>.projection.csv`` per store and ``projection.png``."""
    from napari_dfl.workflows.explore import project_store_files  # not for --help

    if args.method == "umap":  # this process is ours: keep numba's compiled UMAP for the next
        from napari_dfl.core.explorer.numba_cache import keep_compiled_code
        from napari_dfl.workflows.projection_service import numba_cache_dir

        keep_compiled_code(numba_cache_dir())
    png = project_store_files(args.stores, args.method, args.out, head_path=args.head,
                              seed=args.seed)
    say(f"wrote {len(args.stores)} coordinate CSV files and {png}")
    return 0
