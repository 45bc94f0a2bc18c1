"""Image augmentation for fine-tuning on H&E patches: dihedral transforms and stain jitter.

Histology has no canonical orientation, so every patch is flipped and rotated by a random
multiple of 90 degrees (the eight symmetries of the square). Colour is jittered in the
haematoxylin-eosin-DAB optical-density space (Tellez et al., 2018; the colour deconvolution
of Ruifrok and Johnston): each stain's density is scaled by ``1 + U(-s, s)`` and shifted by
``U(-s, s)``, which mimics the stain variation between labs and scanners better than a jitter
of hue and saturation. All randomness comes from the generator passed in (seeded runs are
reproducible).
"""

from __future__ import annotations

import numpy as np

__all__ = ["augment_patches", "dihedral", "hed_jitter"]

# Ruifrok and Johnston's stain vectors (rows: haematoxylin, eosin, DAB), as in skimage.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29],
                          [0.07, 0.99, 0.11],
                          [0.27, 0.57, 0.78]], dtype=np.float32)
_RGB_FROM_HED[2] = np.cross(_RGB_FROM_HED[0], _RGB_FROM_HED[1])
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)
_MIN_INTENSITY = 1.0 / 255.0


def dihedral(patch: np.ndarray, k: int) -> np.ndarray:
    """Return symmetry ``k`` (0-7) of an ``(H, W, C)`` patch.

    ``k % 4`` quarter turns, then a mirror when ``k >= 4``.
    """
    out = np.rot90(patch, k % 4, axes=(0, 1))
    return out[:, ::-1] if k >= 4 else out


def hed_jitter(patches: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Jitter the stain densities of ``(N, H, W, 3)`` uint8 RGB patches (one draw per patch).

    Args:
        patches: uint8 RGB.
        strength: ``s`` above; 0 returns the patches unchanged. 0.05 is a mild, realistic
            variation.
        rng: source of randomness.

    Returns:
        uint8 patches of the same shape.

    """
    if strength <= 0:
        return patches
    n = len(patches)
    scale = 1.0 + rng.uniform(-strength, strength, size=(n, 1, 1, 3)).astype(np.float32)
    shift = rng.uniform(-strength, strength, size=(n, 1, 1, 3)).astype(np.float32)
    rgb = np.maximum(patches.astype(np.float32) / 255.0, _MIN_INTENSITY)
    hed = (-np.log(rgb)) @ _HED_FROM_RGB
    density = (hed * scale + shift) @ _RGB_FROM_HED
    out = np.exp(-np.maximum(density, 0.0)) * 255.0
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def augment_patches(patches: np.ndarray, rng: np.random.Generator,
                    stain: float = 0.05) -> np.ndarray:
    """A random dihedral symmetry per patch, then stain jitter (see :func:`hed_jitter`).

    Args:
        patches: ``(N, S, S, 3)`` uint8 square RGB patches.
        rng: source of randomness.
        stain: stain jitter strength (0 disables it).

    Returns:
        New ``(N, S, S, 3)`` uint8 patches.

    """
    ks = rng.integers(0, 8, size=len(patches))
    out = np.stack([dihedral(p, int(k)) for p, k in zip(patches, ks, strict=True)]) \
        if len(patches) else patches.copy()
    return hed_jitter(np.ascontiguousarray(out), stain, rng)
