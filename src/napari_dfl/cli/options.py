"""What the sub-commands share: checked argument types, option groups, settings, printing.

Every value is checked when it is parsed, before any work: a bad one ends the command with
argparse's one-line usage error naming the valid range (exit 2). The option groups here are
the same for every command that takes them, and :func:`settings_from` turns them into the
one :class:`~napari_dfl.core.features.settings.Settings` the workflows take.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

__all__ = ["COMMAND_MODULES", "add_extractor_options", "add_run_options", "add_sub_command",
           "add_training_options", "bounded_float", "bounded_int", "float_list",
           "positive_float", "say", "settings_from", "train_config_from", "word_list"]

#: The sub-command modules, in the order ``--help`` lists them.
COMMAND_MODULES = ("demo", "info", "backbones", "embed", "train", "evaluate", "predict",
                   "select", "finetune", "project_embeddings", "compress", "train_slides",
                   "predict_slides", "export_h5", "import_h5")


def bounded_float(low: float, high: float, what: str) -> Callable[[str], float]:
    """Argparse type: a finite number in ``[low, high]`` (NaN and inf refused)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number from {low:g} to "
                                             f"{high:g}, got {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{what} must be from {low:g} to {high:g}, "
                                             f"got {text}")
        return value

    parse.__name__ = what
    return parse


def bounded_int(low: int, high: int, what: str) -> Callable[[str], int]:
    """Argparse type: an integer in ``[low, high]``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number from {low} to "
                                             f"{high}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be from {low} to {high}, got {text}")
        return value

    parse.__name__ = what
    return parse


positive_float = bounded_float(1e-6, 1e6, "a positive number")


def path_text(text: str) -> str:
    """Argparse type: a file or folder path, not empty.

    ``""`` would mean the current folder, where nothing should land unasked.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("give a path, not an empty text (write . for the "
                                         "current folder)")
    return text


path_text.__name__ = "a path"


def float_list(text: str) -> tuple[float, ...]:
    """Argparse type: zooms in µm/px separated by commas, e.g. ``0.5,2.0``."""
    # the core is loaded when a value is parsed, not when --help is printed
    from napari_dfl.core.slides.sampling import CompositionError, parse_zooms

    try:
        return parse_zooms(text)
    except CompositionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def word_list(text: str) -> tuple[str, ...]:
    """Argparse type: comma-separated words, e.g. ``rgb,gray``."""
    words = tuple(part.strip() for part in text.split(",") if part.strip())
    if not words:
        raise argparse.ArgumentTypeError(f"expected words separated by commas, got {text!r}")
    return words


def add_sub_command(sub: argparse._SubParsersAction, name: str, summary: str,
                    example: str, description: str = "") -> argparse.ArgumentParser:
    """A sub-command parser with a summary, a description and an example in its help."""
    return sub.add_parser(name, help=summary, description=description or summary,
                          epilog=f"example:\n  {example}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def add_extractor_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose the extractor: backbone, weights and sample composition."""
    group = parser.add_argument_group("extractor (what turns patches into embeddings)")
    group.add_argument("--backbone", default="efficientnet-lite0",
                       help="a preset (napari-dfl backbones lists them), a timm name, or a "
                            "fine-tuned backbone folder (default: efficientnet-lite0)")
    group.add_argument("--weights", help="local weights file of the backbone (.safetensors, "
                                         ".pth, .bin)")
    group.add_argument("--zooms", type=float_list, default=(0.5, 2.0),
                       help="µm/px of each zoom, the first is the working magnification "
                            "(default 0.5,2.0: x20 and its x5 context)")
    group.add_argument("--variants", type=word_list, default=("rgb", "gray"),
                       help="colour variants among rgb,gray (default rgb,gray)")
    group.add_argument("--patch-size", type=bounded_int(16, 4096, "the patch size"),
                       default=224, help="patch side in pixels at each zoom, 16 to 4096 "
                                         "(default 224)")


def add_run_options(parser: argparse.ArgumentParser, *, stores_alias: str | None = None,
                    min_tissue: bool = False) -> None:
    """Where stores go and how extraction runs: stores, mpp, device, precision, batch size."""
    group = parser.add_argument_group("running")
    names = ["--stores"] + ([stores_alias] if stores_alias else [])
    group.add_argument(*names, dest="stores", metavar="DIR", type=path_text,
                       help="folder of the embedding stores (default: the user cache, "
                            "shared with the napari panel)")
    group.add_argument("--mpp", type=positive_float,
                       help="level-0 µm/px for slides whose file records none "
                            "(0.25 is typical at x40, 0.5 at x20)")
    group.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    group.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                       help="backbone precision (default auto: reduced where the device "
                            "computes it natively)")
    group.add_argument("--batch-size", type=bounded_int(1, 4096, "the batch size"), default=8,
                       help="samples per forward batch, 1 to 4096 (default 8)")
    if min_tissue:
        group.add_argument("--min-tissue", type=bounded_float(0.0, 1.0, "min tissue"),
                           default=0.5, help="share of a tile that must be tissue, 0 to 1 "
                                             "(default 0.5)")


def settings_from(args: argparse.Namespace, **overrides):
    """The :class:`~napari_dfl.core.features.settings.Settings` of parsed options."""
    # imported here so that ``--help`` does not load the core
    from napari_dfl.core.features.settings import Settings
    from napari_dfl.core.slides.sampling import Composition

    values = {"device": args.device, "precision": args.precision,
              "batch_size": args.batch_size, "mpp": args.mpp, "store_dir": args.stores}
    if hasattr(args, "backbone"):
        values.update(backbone=args.backbone, weights=args.weights,
                      composition=Composition(args.patch_size, args.zooms, args.variants))
    if hasattr(args, "min_tissue"):
        values["min_tissue"] = args.min_tissue
    values.update(overrides)
    return Settings(**values)


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Options of the head and its training."""
    group = parser.add_argument_group("head")
    group.add_argument("--head", default="mlp", choices=["linear", "mlp"],
                       help="linear, or one hidden layer (default mlp)")
    group.add_argument("--noise", type=bounded_float(0.0, 100.0, "the noise"),
                       help="sigma of the Gaussian noise on standardised embeddings "
                            "(default: the measured default, see docs/heads.md)")
    group.add_argument("--loss", default="focal", choices=["focal", "ce"],
                       help="focal loss or cross-entropy (default focal)")
    group.add_argument("--gamma", type=bounded_float(0.0, 10.0, "gamma"), default=2.0,
                       help="focal loss gamma (default 2)")
    group.add_argument("--seed", type=int, default=0, help="seed of splits and training "
                                                           "(default 0)")
    group.add_argument("--classes", type=word_list,
                       help="comma-separated class names to accept (others are an error)")


def train_config_from(args: argparse.Namespace):
    """A :class:`~napari_dfl.core.heads.config.TrainConfig` of parsed options."""
    from napari_dfl.core.heads.config import TrainConfig  # not at import: --help stays fast

    values = {"head": args.head, "loss": args.loss, "gamma": args.gamma, "seed": args.seed}
    if args.noise is not None:
        values["noise"] = args.noise
    return TrainConfig(**values)


def say(text: str, *, err: bool = False) -> None:
    """Print one line to stdout (results) or stderr (progress, problems)."""
    print(text, file=sys.stderr if err else sys.stdout, flush=True)
