"""``napari-dfl predict-slides STORE... --model MODEL --out DIR``: slide-level predictions.

A classifier gives a class and its probabilities per slide; a multi-target model one value
per target (numbers in the target's units, the probability of 1 for binary targets) and one
attention map per target.
"""

from __future__ import annotations

import argparse

from napari_dfl.cli.options import add_sub_command, path_text, say


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(
        sub, "predict-slides", "predict slides with a slide classifier or target model",
        "napari-dfl predict-slides stores/*.dfl.zarr --model msi.dflslide --out slides",
        "Write predictions.csv and predictions.json (one row per slide: one probability "
        "per class, or one column per target of a model trained with --targets) and "
        "attention/<slide>.npz (each tile's attention, on the tile grid; one map per "
        "target for a target model).")
    parser.add_argument("stores", nargs="+", help="embedding store folders (*.dfl.zarr)")
    parser.add_argument("--model", required=True, help="a folder written by train-slides")
    parser.add_argument("--out", type=path_text, required=True, help="output folder")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Predict each store's slide; a store that fails is reported and the others go on."""
    from napari_dfl.core.slide_level.model_files import load_any_slide_model  # torch
    from napari_dfl.workflows.slide_level import predict_stores  # loads torch: not for --help

    model = load_any_slide_model(args.model)
    names = [t.name for t in getattr(model, "targets", [])]

    def done(path: str, row: dict | None, error: str | None) -> None:
        if error is not None:
            say(f"FAILED  {path}: {error}", err=True)
            return
        if names:
            values = list(row.values())[3:]  # slide, store, n_tiles, then one per target
            shown = " ".join(f"{n}={v:.4g}" for n, v in zip(names[:8], values, strict=False))
            say(f"ok      {row['slide']}: {shown}{' ...' if len(names) > 8 else ''}")
            return
        probabilities = " ".join(f"{c}={row[f'p_{c}']:.3f}" for c in model.classes)
        say(f"ok      {row['slide']}: {row['prediction']} {probabilities}")

    return 1 if predict_stores(model, args.stores, args.out, on_done=done) else 0
