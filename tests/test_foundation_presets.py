"""Pathology foundation-model presets: architecture, key mapping and pooling, all offline.

Nothing here is pretrained and nothing is downloaded: each preset's timm architecture is
built with random weights, saved to a safetensors file in tmp_path (in the transformers
layout for the presets whose published weights use it), and loaded back through the preset
with ``--weights`` semantics. The full networks are ViT-L to ViT-g (0.3-1.1 B parameters,
up to 4.5 GB in float32), too heavy for a quick test on two CPU cores, so every preset is
tested with the same architecture cut to one block (``depth=1``): widths, tokens, layer
scale, SwiGLU, registers and the pooling are those of the full model; only the number of
blocks differs, and the key mapping is per block.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from napari_dfl.core.backbones import registry
from napari_dfl.core.backbones.backbone import load_backbone
from napari_dfl.core.backbones.builder import create_model
from napari_dfl.core.backbones.registry import BackboneUnavailableError, get_spec

#: Embedding widths from the model cards (Virchow2 and Midnight: class + mean patch token).
DIMS = {"uni2-h": 1536, "virchow2": 2560, "h-optimus-1": 1536, "phikon-v2": 1024,
        "gpfm": 1024, "midnight-12k": 3072, "kaiko-vits16": 384, "kaiko-vits8": 384,
        "kaiko-vitb16": 768, "kaiko-vitb8": 768, "kaiko-vitl14": 1024}
#: Presets whose published weights are in the transformers Dinov2Model layout.
TRANSFORMERS_LAYOUT = {"phikon-v2", "midnight-12k"}


def to_transformers_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Write a timm ViT state dict under transformers' Dinov2Model key names.

    Written from the key names of transformers' ``modeling_dinov2.py`` (separate
    query/key/value, ``layer_scale1.lambda1``, SwiGLU ``weights_in``/``weights_out``), with
    the ``mask_token`` that Dinov2Model files carry, so the loader's conversion is exercised
    the way a real Phikon-v2 or Midnight file would exercise it.
    """
    top = {"cls_token": "embeddings.cls_token", "reg_token": "embeddings.register_tokens",
           "pos_embed": "embeddings.position_embeddings",
           "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
           "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
           "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
    swiglu = any("mlp.fc1" in k for k in state) and any(
        k.endswith("mlp.fc1.weight") and v.shape[0] == 2 * state[
            k.replace("fc1", "fc2")].shape[1] for k, v in state.items())
    out: dict[str, torch.Tensor] = {"embeddings.mask_token": torch.zeros(
        1, state["cls_token"].shape[-1])}
    for key, value in state.items():
        if key in top:
            out[top[key]] = value
            continue
        match = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        assert match, key
        layer, rest = f"encoder.layer.{match.group(1)}.", match.group(2)
        if rest.startswith("attn.qkv."):
            q, k, v = value.chunk(3, dim=0)
            leaf = rest.rsplit(".", 1)[1]
            for part, tensor in (("query", q), ("key", k), ("value", v)):
                out[f"{layer}attention.attention.{part}.{leaf}"] = tensor.contiguous()
        elif rest.startswith("attn.proj."):
            out[layer + "attention.output.dense." + rest.rsplit(".", 1)[1]] = value
        elif rest in ("ls1.gamma", "ls2.gamma"):
            out[layer + f"layer_scale{rest[2]}.lambda1"] = value
        elif rest.startswith("mlp.") and swiglu:
            out[layer + rest.replace("fc1", "weights_in").replace("fc2", "weights_out")] = value
        else:
            out[layer + rest] = value
    return out


def one_block(name: str, monkeypatch, **overrides) -> registry.BackboneSpec:
    """Register ``name``'s preset cut to one block under a test name, and return it."""
    spec = get_spec(name)
    small = dataclasses.replace(spec, name=f"test-{name}",
                                timm_kwargs={**spec.kwargs, "depth": 1, **overrides})
    monkeypatch.setitem(registry._REGISTRY, small.name, small)
    return small


def expected_features(model: torch.nn.Module, x: torch.Tensor, pooling: str) -> np.ndarray:
    """What the model card's pooling gives for preprocessed input, computed independently."""
    with torch.inference_mode():
        tokens = model.forward_features(x)
        if pooling == "cls+mean":
            patches = tokens[:, model.num_prefix_tokens:]
            return torch.cat([tokens[:, 0], patches.mean(1)], -1).numpy()
        return model.forward_head(tokens, pre_logits=True).numpy()


@pytest.mark.parametrize("name", sorted(DIMS))
def test_preset_loads_a_random_file_of_its_architecture(name: str, monkeypatch,
                                                        tmp_path: Path) -> None:
    spec = get_spec(name)
    assert spec.weights == "file" and spec.embed_dim == DIMS[name]
    assert spec.hub_id and spec.licence and spec.description
    small = one_block(name, monkeypatch)
    torch.manual_seed(0)
    reference = create_model(small).eval()  # random initialisation, never pretrained
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    if name in TRANSFORMERS_LAYOUT:
        state = to_transformers_layout(state)
        assert not any(k.startswith("blocks.") for k in state)
    path = tmp_path / "random.safetensors"
    save_file(state, str(path))

    loaded = load_backbone(small.name, weights=path, precision="fp32", fuse=False)
    assert loaded.embed_dim == DIMS[name] and loaded.pooling == spec.pooling
    assert loaded.input_size == 224 and loaded.mean == spec.mean
    patches = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    out = loaded.embed(patches)
    assert out.shape == (2, DIMS[name]) and np.isfinite(out).all()
    expected = expected_features(reference, loaded.preprocess(patches), spec.pooling)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


#: Full-size architecture facts: (blocks, width, prefix tokens, millions of parameters).
#: Virchow2's 632 M (ViT-H/14, 32 blocks, 1280 wide) is from its paper; ViT-g/14 with 1.1 B
#: from H-optimus-0's and OpenMidnight's descriptions (counted here: 1135 M); UNI2-h's 681 M
#: as its card states (not re-checked here); ViT-L 0.3 B, ViT-B 85.8 M and ViT-S 21.7 M
#: (headless) are the standard sizes.
FULL = {"uni2-h": (24, 1536, 9, 681), "virchow2": (32, 1280, 5, 632),
        "h-optimus-1": (40, 1536, 5, 1135), "phikon-v2": (24, 1024, 1, 303),
        "gpfm": (24, 1024, 1, 303), "midnight-12k": (40, 1536, 1, 1135),
        "kaiko-vits16": (12, 384, 1, 21.7), "kaiko-vits8": (12, 384, 1, 21.7),
        "kaiko-vitb16": (12, 768, 1, 85.8), "kaiko-vitb8": (12, 768, 1, 85.8),
        "kaiko-vitl14": (24, 1024, 5, 304)}


def test_full_size_architectures_on_the_meta_device() -> None:
    # The whole networks, built without memory or weights (torch's meta device): depth,
    # width, class + register tokens and parameter count match the published models.
    for name, (depth, width, prefix, millions) in FULL.items():
        with torch.device("meta"):
            model = create_model(get_spec(name))
        params = sum(p.numel() for p in model.parameters())
        assert (len(model.blocks), model.num_features, model.num_prefix_tokens) == (
            depth, width, prefix), name
        assert abs(params / 1e6 - millions) / millions < 0.01, (name, params)
        pooled = 2 * width if get_spec(name).pooling == "cls+mean" else width
        assert pooled == DIMS[name], name


def test_presets_never_download_without_being_asked(monkeypatch) -> None:
    # No file given: the preset asks for one instead of fetching gigabytes.
    with pytest.raises(BackboneUnavailableError, match="--weights PATH"):
        load_backbone("virchow2")


def test_transformers_position_embeddings_of_another_grid_are_resampled(
        monkeypatch, tmp_path: Path) -> None:
    from timm.layers import resample_abs_pos_embed

    small = one_block("phikon-v2", monkeypatch)
    big = dataclasses.replace(small, timm_kwargs={**small.kwargs, "img_size": 512})
    torch.manual_seed(1)
    reference = create_model(big).eval()  # a 32 x 32 grid, the preset uses 14 x 14
    state = to_transformers_layout({k: v.contiguous() for k, v in
                                    reference.state_dict().items()})
    assert state["embeddings.position_embeddings"].shape[1] == 1 + 32 * 32
    save_file(state, str(tmp_path / "phikon-like.safetensors"))
    loaded = load_backbone(small.name, weights=tmp_path / "phikon-like.safetensors",
                           precision="fp32", fuse=False)
    want = resample_abs_pos_embed(reference.pos_embed.detach(), new_size=[14, 14],
                                  old_size=[32, 32], num_prefix_tokens=1, verbose=False)
    assert torch.equal(loaded.model.pos_embed.detach(), want)
    assert loaded.embed(np.zeros((1, 224, 224, 3), np.uint8)).shape == (1, 1024)


def test_a_file_for_another_preset_is_refused_with_details(monkeypatch,
                                                           tmp_path: Path) -> None:
    kaiko = one_block("kaiko-vitb16", monkeypatch)
    gpfm = one_block("gpfm", monkeypatch)
    state = {k: v.contiguous() for k, v in create_model(kaiko).state_dict().items()}
    save_file(state, str(tmp_path / "kaiko.safetensors"))
    with pytest.raises(BackboneUnavailableError, match="does not fit") as info:
        load_backbone(gpfm.name, weights=tmp_path / "kaiko.safetensors")
    assert "another shape" in str(info.value)


def test_incomplete_transformers_file_is_refused(monkeypatch, tmp_path: Path) -> None:
    small = one_block("phikon-v2", monkeypatch)
    state = to_transformers_layout({k: v.contiguous() for k, v in
                                    create_model(small).state_dict().items()})
    del state["encoder.layer.0.attention.attention.key.weight"]
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(BackboneUnavailableError, match="incomplete"):
        load_backbone(small.name, weights=tmp_path / "broken.safetensors")


def test_catalogue_lists_presets_with_licence_width_and_how_to_get_them() -> None:
    from napari_dfl.core.backbones.catalogue import catalogue

    presets = {p["name"]: p for p in catalogue()["presets"]}
    assert set(DIMS) <= set(presets)
    for name, dim in DIMS.items():
        entry = presets[name]
        assert entry["embed_dim"] == dim and entry["licence"] and entry["weights"] == "file"
        assert entry["status"] == ("needs a weights file: --weights PATH (or --weights "
                                   f"hf-hub:{entry['hub_id']})")
    assert presets["midnight-12k"]["licence"].startswith("MIT")
    assert presets["virchow2"]["pooling"] == presets["midnight-12k"]["pooling"] == "cls+mean"
    assert presets["uni2-h"]["pooling"] == "default"
