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
from dataclasses import replace

__all__ = ["COMMAND_MODULES", "add_extractor_options", "add_run_options", "add_sub_command",
           "add_training_options", "bounded_float", "bounded_int", "float_list",
           "positive_float", "say", "settings_from", "train_config_from", "variant_list",
           "word_list"]

#: The sub-command modules, in the order ``--help`` lists them.
COMMAND_MODULES = ("demo", "info", "backbones", "embed", "train", "evaluate", "predict",
                   "select_settings", "select", "finetune", "project_embeddings", "compress",
                   "train_slides", "predict_slides", "export_h5", "import_h5", "export_anndata")


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
_input_px = bounded_int(16, 4096, "the input size")
#: ``--input-size`` not given (``auto`` gives None: the backbone's own size); not a string,
#: which argparse would parse as if typed.
_UNSET = object()


def input_size(text: str) -> int | None:
    """Argparse type: the network input size in pixels, or ``auto`` (None: the backbone's)."""
    return None if text.strip().lower() == "auto" else _input_px(text)


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


def variant_list(text: str) -> tuple[str, ...]:
    """Argparse type: colour variants separated by commas, e.g. ``rgb,gray,stain``.

    Each must be one of the composition's variants (``rgb``, ``gray``, ``stain``), once.
    """
    from napari_dfl.core.slides.sampling import VARIANTS

    words = tuple(word.lower() for word in word_list(text))
    unknown = [word for word in words if word not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown colour variant(s) {', '.join(unknown)}: choose among "
            f"{','.join(VARIANTS)} (e.g. rgb,gray,stain)")
    if len(set(words)) != len(words):
        raise argparse.ArgumentTypeError(f"a colour variant is given twice in {text!r}")
    return words


variant_list.__name__ = "colour variants"


def add_sub_command(sub: argparse._SubParsersAction, name: str, summary: str,
                    example: str, description: str = "") -> argparse.ArgumentParser:
    """A sub-command parser with a summary, a description and an example in its help."""
    return sub.add_parser(name, help=summary, description=description or summary,
                          epilog=f"example:\n  {example}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def add_extractor_options(parser: argparse.ArgumentParser, *, candidates: bool = False) -> None:
    """The options that choose the extractor: backbone, weights and sample composition.

    ``candidates``: the command compares backbones and fields itself (``select``): only the
    zooms, variants and input size are options, and no kept choice is read.
    """
    group = parser.add_argument_group("extractor (what turns patches into embeddings)")
    if candidates:
        parser.set_defaults(backbone="efficientnet-lite0", weights=None, patch_size=224,
                            zooms=(0.5, 2.0), variants=("rgb", "gray"), input_size=None)
    else:
        group.add_argument("--backbone",
                           help="a preset (napari-dfl backbones lists them, pathology "
                                "foundation models included), any timm name, a Hugging Face "
                                "hub id hf-hub:ORG/REPO, or a fine-tuned backbone folder "
                                "(default: efficientnet-lite0, or the choice of napari-dfl "
                                "select --apply)")
        group.add_argument("--weights", help="the backbone's weights: a local file "
                                             "(.safetensors, .pth, .bin), or hf-hub:ORG/REPO "
                                             "to download them (once, then cached)")
    group.add_argument("--zooms", type=float_list,
                       help="µm/px of each zoom, the first is the working magnification "
                            "(default 0.5,2.0: x20 and its x5 context)")
    group.add_argument("--variants", type=variant_list,
                       help="colour variants among rgb,gray,stain (default rgb,gray; stain: "
                            "the slide's H&E stain normalised to a reference, Macenko, see "
                            "docs/embedding.md)")
    if not candidates:
        group.add_argument("--patch-size", type=bounded_int(16, 4096, "the patch size"),
                           help="field of view of each part, in pixels at its zoom, 16 to "
                                "4096 (default 224: 112 µm at x20; 32 for datasets of points "
                                "only, cells)")
    group.add_argument("--input-size", type=input_size, metavar="PX",
                       help="pixels at which every part is read and enters the network, 16 to "
                            "4096, or auto: the backbone's own input size (default auto)")
    if not candidates:
        group.set_defaults(input_size=_UNSET)
        group.add_argument("--context", choices=["centred", "shared", "nearest"],
                           help="centred: each sample's x5 part is centred on it; nearest: "
                                "on the middle tile of its 3 x 3 block of x20 tiles, embedded "
                                "once for the 9; shared: on the x5 tile it lies in, once for "
                                "its 16 (whole slides about 1.8x and 2x faster than centred; "
                                "docs/embedding.md). Default nearest for regions on slides, "
                                "centred for cells (points only) and folders of tile images")
    else:
        parser.set_defaults(context=None)


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

    values = {"device": args.device, "precision": args.precision,
              "batch_size": args.batch_size, "mpp": args.mpp, "store_dir": args.stores}
    if hasattr(args, "backbone"):
        values.update(_extractor_values(args))
    if hasattr(args, "min_tissue"):
        values["min_tissue"] = args.min_tissue
    values.update(overrides)
    return Settings(**values)


def _extractor_values(args: argparse.Namespace) -> dict:
    """Backbone, weights and composition: the options given, else the user's choice.

    The user's choice is what ``napari-dfl select --apply`` kept (said on stderr when used);
    without one, the built-in defaults.
    """
    from napari_dfl.core.annotations.datasets import annotation_kinds
    from napari_dfl.core.backbones.registry import DEFAULT_BACKBONE
    from napari_dfl.core.errors import DFLError
    from napari_dfl.core.features.preferred import load_preferred
    from napari_dfl.core.slides.sampling import (
        POINT_COMPOSITION,
        TISSUE_COMPOSITION,
        default_composition,
    )

    base, backbone = TISSUE_COMPOSITION, DEFAULT_BACKBONE
    given = {"patch_size": args.patch_size, "zooms": args.zooms, "variants": args.variants}
    if args.backbone is None or any(v is None for v in given.values()) \
            or args.input_size is _UNSET:
        try:
            preferred = load_preferred()
        except DFLError as exc:
            say(f"{exc} The built-in defaults are used.", err=True)
            preferred = None
        if preferred is not None:
            base, backbone = preferred.composition, preferred.backbone
            say(f"using the extractor chosen by napari-dfl select: {preferred.describe()} "
                "(options given here win; napari-dfl select --reset forgets it)", err=True)
        elif args.patch_size is None and getattr(args, "datasets", None):
            base = default_composition(annotation_kinds(args.datasets))
            if base == POINT_COMPOSITION:
                say(f"points only: cell-sized fields of {base.patch_size} px "
                    f"({base.fields_um()[0]:g} µm at x20), the default for cells "
                    "(docs/embedding.md); --patch-size 224 for tissue-sized ones", err=True)
    changes = {k: v for k, v in given.items() if v is not None}
    if getattr(args, "context", None):
        changes["context"] = args.context
    if args.input_size is not _UNSET:
        changes["input_size"] = args.input_size
    chosen = args.backbone or backbone
    return {"backbone": chosen, "weights": args.weights,
            "composition": replace(base, **changes)}


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
