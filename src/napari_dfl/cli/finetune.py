"""``napari-dfl finetune DATASET... --out FOLDER``: fine-tune a backbone on labelled patches.

With ``--task NAME=DATASET`` (repeated) or ``--tasks FILE.json``, one backbone is tuned for
several tasks at once, each with its own classes and head (a multitask encoder).
"""

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
        "through the head. Several tasks at once (a multitask encoder: one backbone, one "
        "head per task, the tasks' batches taking turns): --task nuclei=crc.csv --task "
        "tissue=slide.svs, or --tasks tasks.json to give each task its own patch size, zoom, "
        "classes and weight (see docs/finetune.md).")
    parser.add_argument("datasets", nargs="*", help=DATASETS_HELP + " (one task)")
    parser.add_argument("--task", action="append", default=[], metavar="NAME=DATASET",
                        help="a task of a multitask fine-tuning and one of its datasets; "
                             "repeat for more tasks or datasets")
    parser.add_argument("--tasks", type=path_text, metavar="FILE.json",
                        help="a JSON list of tasks: name, datasets and optionally "
                             "patch_size, zoom, classes, weight")
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


def _task_specs(args: argparse.Namespace) -> list | None:
    """The tasks of a multitask run, or None for one task; refuses a mix of the forms."""
    from napari_dfl.core.finetune.task_head import FinetuneError
    from napari_dfl.core.finetune.task_specs import parse_task_options, read_task_file

    forms = [bool(args.datasets), bool(args.task), args.tasks is not None]
    if sum(forms) != 1:
        raise FinetuneError("give DATASET... (one task), or "
                         "--task NAME=DATASET (repeated), or --tasks FILE.json; not a mix.")
    if args.datasets:
        return None
    specs = parse_task_options(args.task) if args.task else read_task_file(args.tasks)
    if args.classes and specs:
        raise FinetuneError("--classes applies to one task; give "
                         "each task its classes in --tasks FILE.json.")
    return specs


def run(args: argparse.Namespace) -> int:
    """Cut the patches, fine-tune, write the backbone folder and print its card summary."""
    from napari_dfl.core.finetune.training import FinetuneConfig  # torch: not for --help
    from napari_dfl.workflows.finetune import (  # loads torch: not for --help
        finetune_datasets,
        finetune_task_specs,
    )

    tasks = _task_specs(args)
    config = FinetuneConfig(blocks=args.blocks, epochs=args.epochs, patience=args.patience,
                            lr=args.lr, batch_size=args.batch_size, stain=args.stain,
                            seed=args.seed, device=args.device)

    def loaded(patches: int, sources: int) -> None:
        say(f"{patches} patches from {sources} sources", err=True)

    def show(p) -> None:
        train = "-" if math.isnan(p.train_loss) else f"{p.train_loss:.4f}"
        what = "linear probe" if p.epoch == 0 else f"epoch {p.epoch}/{p.epochs}"
        loss = "val loss relative to chance" if p.tasks else "val loss"
        say(f"  {what}: train loss {train}, {loss} {p.val_loss:.4f}, val balanced "
            f"accuracy {p.val_balanced_accuracy:.3f} (best epoch {p.best_epoch}, "
            f"{p.seconds:.0f} s)", err=True)
        for task, row in p.tasks.items():
            say(f"    {task}: val loss {row['val_loss']:.4f}, balanced accuracy "
                f"{row['val_balanced_accuracy']:.3f}", err=True)

    if tasks is not None:
        result, path = finetune_task_specs(
            tasks, args.out, backbone=args.backbone, weights=args.weights,
            patch_size=args.patch_size, zoom=args.zoom, mpp=args.mpp, name=args.name,
            config=config,
            on_loaded=lambda task, n, k: say(f"task {task}: {n} patches from {k} sources",
                                             err=True),
            on_epoch=show)
        s = result.summary
        say(f"wrote {path}: {result.base['name']} tuned for {len(s['tasks'])} tasks on "
            f"{s['samples']} patches in {s['seconds']:.0f} s; best epoch {s['best_epoch']}")
        for task, facts in s["tasks"].items():
            v = facts["validation"]
            say(f"  {task}: {len(facts['classes'])} classes, {facts['samples']} patches, "
                f"validation balanced accuracy {v['balanced_accuracy']:.3f} on "
                f"{facts['validation_samples']} (linear probe "
                f"{v['linear_probe_balanced_accuracy']:.3f})")
        say(f"use it with --backbone {path}")
        return 0
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
