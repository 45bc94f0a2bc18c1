"""Presets of current pathology foundation models, as plain fields (a leaf: imports nothing).

Each entry holds the :class:`~napari_dfl.core.backbones.registry.BackboneSpec` fields of one
model: the timm architecture and keyword arguments that rebuild it, its preprocessing, how
its tokens are pooled, the embedding width, the licence and the hub repository its weights
are published in. The registry turns them into specs.

Their weights are gated (an account and accepted terms) and large (0.3-4.5 GB), so every
preset has ``weights="file"``: it loads from a local file given with ``--weights PATH``, and
is downloaded only when the user asks for it with ``--weights hf-hub:<hub_id>``. Files in
the Hugging Face transformers layout (Phikon-v2, Midnight) are converted to timm's on load
(:func:`napari_dfl.core.backbones.state_dict.dinov2_hf_to_timm`).

Sources: the models' cards on huggingface.co and the encoder definitions of TRIDENT
(mahmoodlab/TRIDENT, ``trident/patch_encoder_models/load.py``), which builds each of them
with timm. Facts this project could not confirm from a card are marked "unconfirmed" in the
entry's description and licence, and in ``docs/backbones.md``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FOUNDATION_PRESETS"]

_IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
_HALF = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
_BIOPTIMUS = {"mean": (0.707223, 0.578729, 0.703617), "std": (0.211883, 0.230117, 0.177517)}
_KAIKO_LICENCE = ("kaiko non-commercial licence, as the timm conversions' cards state "
                  "(unconfirmed: check github.com/kaiko-ai/towards_large_pathology_fms)")
_KAIKO_HUB = "1aurent/{}.kaiko_ai_towards_large_pathology_fms"


def _kaiko(name: str, label: str, arch: str, dim: int, img_size: int = 224) -> dict[str, Any]:
    hub = _KAIKO_HUB.format(arch)
    return dict(
        name=name, timm_name=arch, weights="file",
        description=(f"Kaiko.ai {label} pathology ViT (DINO/DINOv2 on TCGA), "
                     f"{dim}-d class token; timm weights: --weights hf-hub:{hub} or its "
                     "model.safetensors (pooling of the class token alone as in TRIDENT; "
                     "unconfirmed whether kaiko's evaluations concatenate patch tokens)"),
        input_size=224, interpolation="bilinear",
        timm_kwargs={"img_size": img_size, "num_classes": 0, "dynamic_img_size": True},
        embed_dim=dim, licence=_KAIKO_LICENCE, hub_id=hub, **_HALF,
    )


#: One dict of BackboneSpec fields per preset, in the order ``napari-dfl backbones`` lists.
FOUNDATION_PRESETS: tuple[dict[str, Any], ...] = (
    dict(
        name="uni2-h", timm_name="vit_giant_patch14_224", weights="file",
        description=("UNI2-h ViT-H/14 with 8 registers and SwiGLU (MahmoodLab), 1536-d class "
                     "token; gated: accept the terms on huggingface.co/MahmoodLab/UNI2-h, then "
                     "--weights PATH of its pytorch_model.bin (or --weights "
                     "hf-hub:MahmoodLab/UNI2-h after logging in)"),
        input_size=224, interpolation="bilinear",
        timm_kwargs={"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24,
                     "init_values": 1e-5, "embed_dim": 1536, "mlp_ratio": 2.66667 * 2,
                     "num_classes": 0, "no_embed_class": True, "mlp_layer": "swiglu_packed",
                     "act_layer": "silu", "reg_tokens": 8, "dynamic_img_size": True},
        embed_dim=1536, hub_id="MahmoodLab/UNI2-h",
        licence="CC-BY-NC-ND-4.0, gated (unconfirmed here: check the model card)",
        **_IMAGENET,
    ),
    dict(
        name="virchow2", timm_name="vit_huge_patch14_224", weights="file",
        description=("Virchow2 ViT-H/14 with 4 registers and SwiGLU (Paige), 2560-d: class "
                     "token + mean patch token as the model card concatenates them; gated: "
                     "accept the terms on huggingface.co/paige-ai/Virchow2, then --weights "
                     "PATH of its pytorch_model.bin"),
        input_size=224, interpolation="bicubic",
        timm_kwargs={"img_size": 224, "init_values": 1e-5, "num_classes": 0,
                     "reg_tokens": 4, "mlp_ratio": 5.3375, "global_pool": "",
                     "dynamic_img_size": True, "mlp_layer": "swiglu_packed",
                     "act_layer": "silu"},
        pooling="cls+mean", embed_dim=2560, hub_id="paige-ai/Virchow2",
        licence="CC-BY-NC-ND-4.0, gated (unconfirmed here: check the model card)",
        **_IMAGENET,
    ),
    dict(
        name="h-optimus-1", timm_name="vit_giant_patch14_reg4_dinov2", weights="file",
        description=("H-optimus-1 ViT-g/14 with 4 registers (Bioptimus), 1536-d class token; "
                     "gated: accept the terms on huggingface.co/bioptimus/H-optimus-1, then "
                     "--weights PATH of its checkpoint"),
        input_size=224, interpolation="bilinear",
        timm_kwargs={"img_size": 224, "init_values": 1e-5, "num_classes": 0,
                     "global_pool": "token", "dynamic_img_size": True},
        embed_dim=1536, hub_id="bioptimus/H-optimus-1",
        licence="gated; unconfirmed here (H-optimus-0 is Apache-2.0): check the model card",
        **_BIOPTIMUS,
    ),
    dict(
        name="phikon-v2", timm_name="vit_large_patch16_224", weights="file",
        description=("Phikon-v2 ViT-L/16 DINOv2 (Owkin), 1024-d class token; its "
                     "model.safetensors from huggingface.co/owkin/phikon-v2 is in the "
                     "transformers layout and converted on load (patch size 16 from the "
                     "card's 'ViT-L/16'; position embeddings of another grid are resampled)"),
        input_size=224, interpolation="bilinear",
        timm_kwargs={"img_size": 224, "init_values": 1e-5, "num_classes": 0,
                     "dynamic_img_size": True},
        embed_dim=1024, hub_id="owkin/phikon-v2",
        licence="Owkin non-commercial licence (card: 'other', LICENSE.pdf)",
        **_IMAGENET,
    ),
    dict(
        name="gpfm", timm_name="vit_large_patch14_dinov2", weights="file",
        description=("GPFM ViT-L/14 DINOv2 (Ma et al.), 1024-d class token; GPFM.pth from "
                     "huggingface.co/majiabo/GPFM (re-save it as .safetensors if it holds "
                     "pickled objects besides tensors: they are refused)"),
        input_size=224, interpolation="bicubic",
        timm_kwargs={"img_size": 224, "init_values": 1e-5, "num_classes": 0,
                     "dynamic_img_size": True},
        embed_dim=1024, hub_id="majiabo/GPFM",
        licence="unconfirmed: check huggingface.co/majiabo/GPFM",
        **_IMAGENET,
    ),
    dict(
        name="midnight-12k", timm_name="vit_giant_patch14_dinov2", weights="file",
        description=("Midnight-12k ViT-g/14 DINOv2 (Kaiko.ai, TCGA only), 3072-d: class token "
                     "+ mean patch token as the card's classification embedding; "
                     "model.safetensors from huggingface.co/kaiko-ai/midnight is in the "
                     "transformers layout and converted on load"),
        input_size=224, interpolation="bilinear",
        timm_kwargs={"img_size": 224, "num_classes": 0, "dynamic_img_size": True},
        pooling="cls+mean", embed_dim=3072, hub_id="kaiko-ai/midnight",
        licence="MIT (model card)",
        **_HALF,
    ),
    _kaiko("kaiko-vits16", "ViT-S/16", "vit_small_patch16_224", 384),
    _kaiko("kaiko-vits8", "ViT-S/8", "vit_small_patch8_224", 384),
    _kaiko("kaiko-vitb16", "ViT-B/16", "vit_base_patch16_224", 768),
    _kaiko("kaiko-vitb8", "ViT-B/8", "vit_base_patch8_224", 768),
    _kaiko("kaiko-vitl14", "ViT-L/14 with 4 registers", "vit_large_patch14_reg4_dinov2", 1024,
           img_size=518),
)
