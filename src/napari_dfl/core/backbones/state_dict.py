"""Reading weights files safely, and fitting their tensors to a timm model strictly.

:func:`read_state_dict` reads a ``.safetensors`` file (recognised by its suffix or by its
header) with safetensors and anything else with ``torch.load(weights_only=True)``, so nothing
in a file is ever unpickled or run; it unwraps the dicts that training checkpoints nest the
model under. :func:`fit_state_dict` strips wrapper prefixes, maps the EfficientNet-PyTorch
(lukemelas) and the transformers DINOv2 (Phikon-v2, Midnight) layouts to timm's, applies
timm's own checkpoint conversion for older layouts, resamples ViT position embeddings trained
on another grid, and loads every tensor strictly except the classifier head, which is dropped
when it does not fit.

torch is imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_dfl.core.backbones.registry import BackboneUnavailableError

if TYPE_CHECKING:
    import torch

__all__ = [
    "KEY_PREFIXES",
    "WRAPPER_KEYS",
    "dinov2_hf_to_timm",
    "efficientnet_pytorch_to_timm",
    "fit_state_dict",
    "is_dinov2_hf",
    "is_efficientnet_pytorch",
    "read_state_dict",
]

#: Keys under which training checkpoints commonly nest the model's state dict.
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "teacher", "module", "net")
#: Prefixes that wrappers (DataParallel, torch.compile, SSL frameworks) add to every key.
KEY_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "encoder.", "trunk.")
_HEAD_FALLBACK = ("classifier", "fc", "head", "last_linear")


# -- reading files -----------------------------------------------------------------------
def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file without executing anything in it.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``, which refuses pickled Python objects. Common training
    wrappers (``state_dict``, ``model``, ``teacher`` keys) are unwrapped.

    Args:
        path: the weights file.

    Returns:
        The file's tensors by key (non-tensor entries are left out).

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

    Args:
        state: the file's tensors, in the EfficientNet-PyTorch layout.
        model: the timm EfficientNet they are for.

    Returns:
        The same tensors under timm's keys.

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


# -- transformers DINOv2 layout -> timm ------------------------------------------------------
_HF_STEM = "embeddings.patch_embeddings.projection.weight"
_HF_TOP = {"embeddings.cls_token": "cls_token", "embeddings.register_tokens": "reg_token",
           "embeddings.position_embeddings": "pos_embed",
           "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
           "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
           "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias"}
_HF_LAYER = re.compile(r"encoder\.layer\.(\d+)\.(.+)")
_HF_BLOCK = {"norm1": "norm1", "norm2": "norm2", "attention.output.dense": "attn.proj",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "mlp.weights_in": "mlp.fc1",
             "mlp.weights_out": "mlp.fc2"}
_HF_SCALES = {"layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma"}
_HF_QKV = re.compile(r"attention\.attention\.(query|key|value)\.(weight|bias)")


def is_dinov2_hf(state: Mapping[str, Any]) -> bool:
    """Return True for a state dict in the transformers ``Dinov2Model`` key layout."""
    return any(k == _HF_STEM or k.endswith("." + _HF_STEM) for k in state)


def dinov2_hf_to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers ``Dinov2Model`` state dict to timm's VisionTransformer layout.

    Separate query/key/value projections become timm's fused ``qkv`` (in that order);
    SwiGLU's ``weights_in``/``weights_out`` become ``mlp.fc1``/``mlp.fc2`` (timm's
    ``SwiGLUPacked`` keeps the same packed layout); layer scales become ``ls1``/``ls2``
    gammas; the unused ``mask_token`` is dropped. A wrapper prefix in front of every key
    (``dinov2.``, ``model.``) is removed first.

    Args:
        state: the file's tensors, in the transformers layout.

    Returns:
        The same tensors under timm's keys.

    Raises:
        BackboneUnavailableError: an attention projection is missing its partners.

    """
    import torch

    stem = next(k for k in state if k == _HF_STEM or k.endswith("." + _HF_STEM))
    prefix = stem[: -len(_HF_STEM)]
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for full, value in state.items():
        if not full.startswith(prefix):
            continue
        key = full[len(prefix):]
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
            continue
        match = _HF_LAYER.match(key)
        if not match:
            if key != "embeddings.mask_token":
                out[key] = value  # left for the strict check to report
            continue
        index, rest = int(match.group(1)), match.group(2)
        if m := _HF_QKV.fullmatch(rest):
            qkv.setdefault((index, m.group(2)), {})[m.group(1)] = value
        elif rest in _HF_SCALES:
            out[f"blocks.{index}.{_HF_SCALES[rest]}"] = value
        else:
            module, _, leaf = rest.rpartition(".")
            out[f"blocks.{index}.{_HF_BLOCK.get(module, module)}.{leaf}"] = value
    for (index, leaf), parts in sorted(qkv.items()):
        if set(parts) != {"query", "key", "value"}:
            raise BackboneUnavailableError(
                f"Layer {index} of the transformers DINOv2 file has only the "
                f"{', '.join(sorted(parts))} projection(s): the file is incomplete or not a "
                "DINOv2 checkpoint. Download it again."
            )
        out[f"blocks.{index}.attn.qkv.{leaf}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def _resample_pos_embed(model: torch.nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """Resample a ViT's position embeddings trained on another grid to the model's grid."""
    ours = getattr(model, "pos_embed", None)
    theirs = state.get("pos_embed")
    if ours is None or theirs is None or tuple(theirs.shape) == tuple(ours.shape) or \
            theirs.ndim != 3 or theirs.shape[-1] != ours.shape[-1]:
        return state
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(model, "no_embed_class", False) else int(
        getattr(model, "num_prefix_tokens", 1))
    grid = tuple(model.patch_embed.grid_size)
    side = round((theirs.shape[1] - prefix) ** 0.5)
    if side * side != theirs.shape[1] - prefix:
        return state  # not a square grid: the strict check reports the shapes
    state = dict(state)
    state["pos_embed"] = resample_abs_pos_embed(theirs, new_size=list(grid),
                                                old_size=[side, side],
                                                num_prefix_tokens=prefix, verbose=False)
    return state


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
    elif is_dinov2_hf(state):
        state = dinov2_hf_to_timm(state)
    expected = model.state_dict()
    state, ignored = _best_prefix(state, set(expected))
    state = _maybe_timm_filter(model, state, expected)
    state = _resample_pos_embed(model, state)
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

