"""Sub-commands of the ``napari-dfl`` CLI: one module each, with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse

COMMAND_MODULES = ("info", "backbones", "embed", "export_h5", "train", "predict", "select",
                   "project_embeddings", "demo", "slide_level", "finetune")


def positive_float(text: str) -> float:
    """Argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def float_list(text: str) -> tuple[float, ...]:
    """Argparse type: comma-separated positive numbers, e.g. ``0.5,2.0``."""
    return tuple(positive_float(part) for part in text.split(",") if part.strip())


def word_list(text: str) -> tuple[str, ...]:
    """Argparse type: comma-separated words, e.g. ``rgb,gray``."""
    return tuple(part.strip() for part in text.split(",") if part.strip())
