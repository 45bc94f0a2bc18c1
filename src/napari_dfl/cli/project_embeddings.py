"""``napari-dfl project-embeddings STORE... --method pca|umap --out DIR``."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = sub.add_parser("project-embeddings",
                            help="2-D PCA/UMAP of tile embeddings: coordinates + scatter PNG")
    parser.add_argument("stores", nargs="+", help="embedding store folders (*.dfl.zarr)")
    parser.add_argument("--method", default="pca", choices=["pca", "umap"])
    parser.add_argument("--head", help="colour by the class this head predicts (else by slide)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Project, then write ``<store>.projection.csv`` per store and ``projection.png``."""
    import numpy as np

    from napari_dfl.core.explorer.projection import project_stores, save_scatter
    from napari_dfl.core.features.store import EmbeddingStore

    stores = [EmbeddingStore.open(path) for path in args.stores]
    parts = project_stores(stores, args.method, args.seed)
    head = None
    if args.head:
        from napari_dfl.core.heads.head_files import check_compatible, load_head

        head, card = load_head(args.head)
        for store in stores:
            check_compatible(card, {k: v for k, v in store.identity.items() if k != "slide"})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = []
    for store, xy in zip(stores, parts, strict=True):
        name = store.identity.get("slide", {}).get("name", Path(store.path).stem)
        names = (np.asarray(head.classes)[head.predict(store.embeddings())] if head
                 else np.full(len(store), name))
        labels.append(names)
        with open(out / f"{Path(name).stem}.projection.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["x", "y", f"{args.method}_1", f"{args.method}_2", "label"])
            for (x, y), (u, v), label in zip(store.coords, xy, names, strict=True):
                writer.writerow([int(x), int(y), f"{u:.5f}", f"{v:.5f}", label])
    png = save_scatter(np.concatenate(parts), np.concatenate(labels), out / "projection.png",
                       title=f"{args.method.upper()} of {sum(map(len, stores))} tiles")
    print(f"wrote {len(stores)} coordinate CSV files and {png}")
    return 0
