"""``napari-dfl finetune DATASET... --out FOLDER``: fine-tune a backbone on labelled patches."""

from __future__ import annotations

import argparse
import math
import sys

from napari_dfl.cli.options import positive_float


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    from napari_dfl.core.finetune.training import FinetuneConfig

    defaults = FinetuneConfig()
    parser = sub.add_parser(
        "finetune", help="fine-tune the last blocks of a backbone on labelled patches",
        description="Train a linear head on the frozen backbone, then unfreeze its last "
                    "blocks at a low learning rate with flips, quarter turns and H&E stain "
                    "jitter; early stopping on a grouped validation split. The folder "
                    "written is a backbone: pass it to --backbone of embed, train, evaluate "
                    "and select-backbone; predict finds it through the head.")
    parser.add_argument("datasets", nargs="+",
                        help="SLIDE[:ANNOTATIONS.geojson], a folder of class subfolders, or a CSV")
    parser.add_argument("--out", required=True, help="folder to write (the new backbone)")
    parser.add_argument("--name", help="name to load it by as finetuned:NAME (default: the "
                                       "folder's name)")
    parser.add_argument("--backbone", default="efficientnet-lite0",
                        help="backbone to start from (default: efficientnet-lite0)")
    parser.add_argument("--weights", help="local weights file of --backbone")
    parser.add_argument("--patch-size", type=int, default=224, help="patch side in px (224)")
    parser.add_argument("--zoom", type=positive_float, default=0.5,
                        help="um/px of the patches (0.5, i.e. x20)")
    parser.add_argument("--mpp", type=positive_float,
                        help="level-0 um/px for images whose metadata has none")
    parser.add_argument("--classes", help="comma-separated class names to accept")
    parser.add_argument("--blocks", type=int, default=defaults.blocks,
                        help=f"last blocks to unfreeze ({defaults.blocks})")
    parser.add_argument("--epochs", type=int, default=defaults.epochs,
                        help=f"maximum epochs ({defaults.epochs})")
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument("--lr", type=float, default=defaults.lr,
                        help=f"learning rate of the backbone ({defaults.lr:g})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--stain", type=float, default=defaults.stain,
                        help=f"H&E stain jitter strength, 0 for none ({defaults.stain:g})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Cut the patches, fine-tune, write the backbone folder and print its card summary."""
    from napari_dfl.core.finetune.training import (
        FinetuneConfig,
        finetune_patches,
        load_patches,
        save_finetuned,
    )
    from napari_dfl.core.slides.sampling import Composition

    config = FinetuneConfig(blocks=args.blocks, epochs=args.epochs, patience=args.patience,
                            lr=args.lr, batch_size=args.batch_size, stain=args.stain,
                            seed=args.seed, device=args.device)
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    data = load_patches(args.datasets, Composition(args.patch_size, (args.zoom,), ("rgb",)),
                        mpp=args.mpp, classes=classes)
    print(f"{len(data['labels'])} patches from {len(data['sources'])} sources", file=sys.stderr)

    def show(p) -> None:
        train = "-" if math.isnan(p.train_loss) else f"{p.train_loss:.4f}"
        what = "linear probe" if p.epoch == 0 else f"epoch {p.epoch}/{p.epochs}"
        print(f"  {what}: train loss {train}, val loss {p.val_loss:.4f}, val balanced "
              f"accuracy {p.val_balanced_accuracy:.3f} (best epoch {p.best_epoch}, "
              f"{p.seconds:.0f} s)", file=sys.stderr)

    result = finetune_patches(data["patches"], data["labels"], data["groups"], args.backbone,
                              args.weights, config, progress=show)
    dataset = {"sources": data["sources"], "patch": data["patch"]}
    path = save_finetuned(result, args.out, name=args.name, config=config, dataset=dataset)
    s = result.summary
    print(f"wrote {path}: {result.base['name']} tuned "
          f"on {s['samples']} patches of {len(s['classes'])} classes in {s['seconds']:.0f} s; "
          f"best epoch {s['best_epoch']}, validation balanced accuracy "
          f"{s['validation']['balanced_accuracy']:.3f} (linear probe "
          f"{s['validation']['linear_probe_balanced_accuracy']:.3f})")
    print(f"use it with --backbone {path}")
    return 0
