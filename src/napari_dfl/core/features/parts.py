"""Smaller compositions cut out of a larger one's embeddings, without embedding again.

A sample's embedding is the concatenation of one backbone embedding per part, zoom-major,
then variant (:meth:`~napari_dfl.core.slides.sampling.Composition.parts`). Every part is
embedded on its own, so the columns of the parts of a *sub-composition* (the same field and
input size, a subset of its zooms and variants) are exactly the embeddings that composition
would compute. Selection uses this to compare "with or without x5 context" and "with or
without grayscale" (or the stain-normalised variant) from one extraction.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from napari_dfl.core.slides.sampling import Composition, CompositionError

__all__ = ["part_columns", "sub_compositions"]


def sub_compositions(composition: Composition) -> list[Composition]:
    """The working zoom alone or with all the context zooms, times rgb alone or all variants.

    With three variants (``rgb, gray, stain``), rgb with each of the others comes between
    the two, so that gray and stain are compared on their own. The full composition comes
    last; duplicates (a composition with one zoom or one variant) are given once. The order
    goes from the fewest parts to the most.
    """
    zoom_sets = [composition.zooms[:1], composition.zooms]
    first = ("rgb",) if "rgb" in composition.variants else composition.variants[:1]
    pairs = [(*first, v) for v in composition.variants if v not in first] \
        if len(composition.variants) > 2 else []
    variant_sets = [first, *pairs, composition.variants]
    out: list[Composition] = []
    for zooms in zoom_sets:
        for variants in variant_sets:
            candidate = replace(composition, zooms=tuple(zooms), variants=tuple(variants))
            if candidate not in out:
                out.append(candidate)
    return out


def part_columns(full: Composition, sub: Composition, part_dim: int) -> np.ndarray:
    """Column indices, in ``sub``'s part order, of ``sub``'s parts in ``full``'s embeddings.

    Args:
        full: the composition the embeddings were computed with.
        sub: a composition with the same patch and input size whose parts ``full`` has.
        part_dim: the backbone's embedding size (columns per part).

    Raises:
        CompositionError: ``sub`` is not made of ``full``'s parts.

    """
    if (sub.patch_size, sub.input_size) != (full.patch_size, full.input_size):
        raise CompositionError(f"{sub.describe()} is not cut from {full.describe()}: the "
                               "field of view and the input size must be the same.")
    parts = full.parts()
    columns = []
    for part in sub.parts():
        if part not in parts:
            raise CompositionError(f"{full.describe()} has no part {part}: embed "
                                   f"{sub.describe()} itself.")
        start = parts.index(part) * part_dim
        columns.append(np.arange(start, start + part_dim))
    return np.concatenate(columns)
