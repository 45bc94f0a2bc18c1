"""Batch-norm folding keeps the backbone's embeddings and refuses a wrong fusion."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from napari_dfl.core.backbones.backbone import load_backbone
from napari_dfl.core.backbones.fusion import fuse_conv_bn


def test_fused_default_backbone_matches_unfused(backbone):
    plain = load_backbone(fuse=False, precision="fp32")
    fused = backbone.with_precision("fp32")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fused.model.modules()) == 0
    assert sum(isinstance(m, nn.BatchNorm2d) for m in plain.model.modules()) > 40
    patches = np.random.default_rng(0).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_allclose(fused.embed(patches), plain.embed(patches), rtol=1e-4, atol=1e-4)


class NormBeforeConv(nn.Module):
    """Children defined conv-then-norm, but the forward normalises the *input* first."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)
        self.norm.running_mean.uniform_(-1, 1)
        self.norm.running_var.uniform_(0.5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


def test_fusion_that_changes_outputs_is_discarded():
    model = NormBeforeConv().eval()
    result, pairs = fuse_conv_bn(model, input_size=16)
    assert pairs == 0 and result is model
