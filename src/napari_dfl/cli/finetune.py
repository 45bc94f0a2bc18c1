"""``napari-dfl finetune DATASET... --out FOLDER``: fine-tune a backbone on labelled patches."""

from __future__ import annotations

import argparse
import math

from napari_dfl.cli.options import (
    add_sub_command,
    bounded_float,
    bounded_int,
    path_text,
    positive_float,
    say,
    word_list,
)
from napari_dfl.cli.train import DATASETS_HELP


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(
        sub, "finetune", "fine-tune the last blocks of a backbone on labelled patches",
        "napari-dfl finetune slide.svs:slide.geojson --out crc-lite0 --epochs 4",
        "Train a linear head on the frozen backbone, then unfreeze its last blocks at a "
        "low learning rate with flips, quarter turns and H&E stain jitter; early stopping "
        "on a grouped validation split. The folder written is a backbone: pass it to "
        "--backbone of embed, train, evaluate and select-backbone; predict finds it "
        "through the head.")
    parser.add_argument("datasets", nargs="+", help=DATASETS_HELP)
    parser.add_argument("--out", type=path_text, required=True,
                        help="folder to write (the new backbone)")
    parser.add_argument("--name", help="name to load it by as finetuned:NAME (default: the "
                                       "folder's name)")
    parser.add_argument("--backbone", default="efficientnet-lite0",
                        help="backbone to start from (default: efficientnet-lite0)")
    parser.add_argument("--weights", help="local weights file of --backbone")
    parser.add_argument("--patch-size", type=bounded_int(16, 4096, "the patch size"),
                        default=224, help="patch side in px, 16 to 4096 (default 224)")
    parser.add_argument("--zoom", type=positive_float, default=0.5,
                        help="µm/px of the patches (default 0.5, i.e. x20)")
    parser.add_argument("--mpp", type=positive_float,
                        help="level-0 µm/px for images whose metadata has none")
    parser.add_argument("--classes", type=word_list,
                        help="comma-separated class names to accept")
    parser.add_argument("--blocks", type=bounded_int(1, 100, "blocks"), default=2,
                        help="last blocks to unfreeze (default 2)")
    parser.add_argument("--epochs", type=bounded_int(1, 1000, "epochs"), default=8,
                        help="maximum epochs (default 8)")
    parser.add_argument("--patience", type=bounded_int(1, 1000, "patience"), default=2,
                        help="epochs without a better validation loss before stopping "
                             "(default 2)")
    parser.add_argument("--lr", type=bounded_float(1e-8, 1.0, "the learning rate"),
                        default=1e-4, help="learning rate of the backbone (default 0.0001)")
    parser.add_argument("--batch-size", type=bounded_int(2, 4096, "the batch size"),
                        default=32, help="patches per step (default 32)")
    parser.add_argument("--stain", type=bounded_float(0.0, 1.0, "the stain jitter"),
                        default=0.05, help="H&E stain jitter strength, 0 for none "
                                           "(default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Cut the patches, fine-tune, write the backbone folder and print its card summary."""
    from napari_dfl.core.finetune.training import FinetuneConfig  # torch: not for --help
    from napari_dfl.workflows.finetune import finetune_datasets  # loads torch: not for --help

    config = FinetuneConfig(blocks=args.blocks, epochs=args.epochs, patience=args.patience,
                            lr=args.lr, batch_size=args.batch_size, stain=args.stain,
                            seed=args.seed, device=args.device)

    def loaded(patches: int, sources: int) -> None:
        say(f"{patches} patches from {sources} sources", err=True)

    def show(p) -> None:
        train = "-" if math.isnan(p.train_loss) else f"{p.train_loss:.4f}"
        what = "linear probe" if p.epoch == 0 else f"epoch {p.epoch}/{p.epochs}"
        say(f"  {what}: train loss {train}, val loss {p.val_loss:.4f}, val balanced "
            f"accuracy {p.val_balanced_accuracy:.3f} (best epoch {p.best_epoch}, "
            f"{p.seconds:.0f} s)", err=True)

    result, path = finetune_datasets(
        args.datasets, args.out, backbone=args.backbone, weights=args.weights,
        patch_size=args.patch_size, zoom=args.zoom, mpp=args.mpp, classes=args.classes,
        name=args.name, config=config, on_loaded=loaded, on_epoch=show)
    s = result.summary
    say(f"wrote {path}: {result.base['name']} tuned on {s['samples']} patches of "
        f"{len(s['classes'])} classes in {s['seconds']:.0f} s; best epoch {s['best_epoch']}, "
        f"validation balanced accuracy {s['validation']['balanced_accuracy']:.3f} (linear "
        f"probe {s['validation']['linear_probe_balanced_accuracy']:.3f})")
    say(f"use it with --backbone {path}")
    return 0
