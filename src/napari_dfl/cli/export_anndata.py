"""``napari-dfl export-anndata STORE --out X.h5ad``: a store as an AnnData file for scanpy."""

from __future__ import annotations

import argparse

from napari_dfl.cli.options import add_sub_command, path_text, say


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(
        sub, "export-anndata", "write a store as an AnnData .h5ad file (scanpy)",
        "napari-dfl export-anndata slide__lite0__ab12.dfl.zarr --out slide.h5ad "
        "--head tumour.dflhead --annotations slide.geojson",
        "Embeddings in X, level-0 (x, y) of each sample in obsm['spatial'], predicted class "
        "and class probabilities (--head, --prediction) and annotation classes "
        "(--annotations) in obs, the extractor card in uns['napari_dfl']. Needs "
        "pip install napari-dfl[anndata].")
    parser.add_argument("store", help="an embedding store folder (*.dfl.zarr)")
    parser.add_argument("--out", type=path_text, required=True, help="the .h5ad file to write")
    parser.add_argument("--head", help="a head folder: predict every sample with it")
    parser.add_argument("--prediction", help="a .prediction.npz written by predict for this "
                                             "slide: its tiles' classes and probabilities")
    parser.add_argument("--annotations", help="a GeoJSON of annotations on this slide: the "
                                              "class each sample falls in")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Export a store."""
    # zarr, anndata, torch: loaded when the command runs, --help stays fast
    from napari_dfl.core.annotations.annotation import read_geojson
    from napari_dfl.core.features.anndata_export import export_anndata, require_anndata
    from napari_dfl.core.features.store import EmbeddingStore
    from napari_dfl.core.heads.store_predictions import prediction_columns

    require_anndata()  # the missing extra is said before any work
    store = EmbeddingStore.open(args.store)
    obs = prediction_columns(store, head=args.head, prediction=args.prediction)
    annotations = None if args.annotations is None else read_geojson(args.annotations)
    path = export_anndata(store, args.out, obs=obs, annotations=annotations)
    columns = sorted(obs) + ([] if annotations is None else ["annotation"])
    say(f"wrote {len(store)} samples x {store.dim} features to {path}"
        + (f" (obs: {', '.join(columns)})" if columns else ""))
    return 0
