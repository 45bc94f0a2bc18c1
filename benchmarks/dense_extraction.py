"""Benchmark: dense extraction against per-patch embeddings (issue 17, item 1).

Dense extraction runs a CNN once over a large region and averages its feature map over each
tile's cells instead of cutting and embedding every patch. For EfficientNet-Lite0 (stride 32,
timm's pooled pre-logits = the mean of ``forward_features``), a 224 px patch is 7 x 7 cells,
so the mean of the 7 x 7 cells under a tile is what the patch's embedding would be if the
network saw no neighbours. This script measures how far that is from the truth, and what
it saves, on real tissue (the bundled sample slide, 0.499 µm/px):

* **x20 part** (224 px tiles at 0.5 µm/px, the tile grid): per-patch vs dense (the cells
  under each tile). Same pixels in both; only the receptive field's view of the neighbours
  and the border padding differ. Dense saves nothing here (same pixel count).
* **x5 context** (224 px at 2.0 µm/px centred on each x20 tile, the default composition):
  per-patch (one forward pass per tile) vs dense over the whole x5 image once (1/16 of the
  x20 pixels), the 7 x 7-cell window nearest each tile's centre (``nearest``) or the
  window means interpolated bilinearly at the centre (``interpolated``); and the shared
  context option (``Composition(context="shared")``, the context of the x5 tile the x20
  tile lies in) for comparison.

Agreement: cosine similarity of each tile's dense vector with its per-patch one (mean, 5th
percentile, min). Accuracy: the demo annotations (epidermis, dermis, background regions),
tiles at a 112 px stride whose centre lies in a region, a standardised logistic-regression
probe on [x20 per-patch | x5 variant], folds grouped by region (so the figure carries the
number of regions, not of tiles), balanced accuracy and its standard error over folds.

Run ``python benchmarks/dense_extraction.py``; a table goes to stderr, one JSON line to
stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "napari_dfl" / "sample_data" / "CMU-1-Small-Region.svs"
CELL = 32  # EfficientNet-Lite0's output stride
WINDOW = 7  # cells under a 224 px patch


def log(message: str) -> None:
    """A progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def feature_map(backbone, image: np.ndarray):
    """``forward_features`` of one whole ``(H, W, 3)`` uint8 image, normalised, no resize."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
    mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std).view(1, 3, 1, 1)
    x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return backbone.model.forward_features(x)[0]  # (C, h, w)


def window_means(fmap):
    """Mean of every 7 x 7-cell window: ``(C, h - 6, w - 6)``.

    Window (i, j) covers cells i..i+6, j..j+6 and is centred on pixel
    ``((i + 3.5) * 32, (j + 3.5) * 32)``.
    """
    import torch.nn.functional as F

    return F.avg_pool2d(fmap[None], WINDOW, stride=1)[0]


def sample_windows(means, centres_px: np.ndarray, how: str) -> np.ndarray:
    """The window means at image-pixel centres ``(N, 2)`` (x, y): nearest or bilinear."""
    import torch
    import torch.nn.functional as F

    # window index whose centre is at the point, fractional
    u = centres_px[:, 0] / CELL - WINDOW / 2.0
    v = centres_px[:, 1] / CELL - WINDOW / 2.0
    _, h, w = means.shape
    if how == "nearest":
        iu = np.clip(np.round(u).astype(int), 0, w - 1)
        iv = np.clip(np.round(v).astype(int), 0, h - 1)
        return means[:, iv, iu].T.numpy()
    grid = torch.tensor(np.stack([2 * u / max(w - 1, 1) - 1, 2 * v / max(h - 1, 1) - 1],
                                 axis=1), dtype=means.dtype).view(1, -1, 1, 2)
    out = F.grid_sample(means[None], grid, mode="bilinear", padding_mode="border",
                        align_corners=True)
    return out[0, :, :, 0].T.numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def agreement(dense: np.ndarray, truth: np.ndarray) -> dict:
    """Mean, 5th percentile and min of the cosines."""
    c = cosine(dense, truth)
    return {"cos_mean": round(float(c.mean()), 4), "cos_p5": round(float(np.percentile(c, 5)),
                                                                    4),
            "cos_min": round(float(c.min()), 4), "n": len(c)}


def embed(backbone, patches: np.ndarray, batch: int = 16) -> tuple[np.ndarray, float]:
    """Per-patch embeddings and the seconds they took."""
    began = time.perf_counter()
    out = np.concatenate([backbone.embed(patches[i:i + batch])
                          for i in range(0, len(patches), batch)])
    return out, time.perf_counter() - began


def dense_context(backbone, slide, centres0: np.ndarray, zoom: float, field_px: int,
                  how: str) -> tuple[np.ndarray, float]:
    """x5 context by one pass over the whole slide read at ``zoom`` µm/px.

    A white margin of half a field lets windows at the border see what a per-patch read
    pads with.
    """
    began = time.perf_counter()
    mpp0 = slide.require_mpp()
    width, height = slide.dimensions
    margin = field_px // 2
    size = (int(np.ceil(width * mpp0 / zoom)), int(np.ceil(height * mpp0 / zoom)))
    image = slide.read_region((0, 0), size, mpp=zoom)
    padded = np.pad(image, ((margin, margin), (margin, margin), (0, 0)), constant_values=255)
    means = window_means(feature_map(backbone, padded))
    out = sample_windows(means, centres0 * mpp0 / zoom + margin, how)
    return out, time.perf_counter() - began


def dense_x20(backbone, slide, coords: np.ndarray, tile: int) -> tuple[np.ndarray, float]:
    """x20 tiles from one pass over the slide at 0.5 µm/px (tiles aligned to the cells)."""
    began = time.perf_counter()
    mpp0 = slide.require_mpp()
    width, height = slide.dimensions
    size = (int(np.ceil(width * mpp0 / 0.5)), int(np.ceil(height * mpp0 / 0.5)))
    image = slide.read_region((0, 0), size, mpp=0.5)
    cells = tile // CELL
    pad_h = (-image.shape[0]) % tile
    pad_w = (-image.shape[1]) % tile
    image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=255)
    fmap = feature_map(backbone, image)
    index = np.round(coords * mpp0 / 0.5 / CELL).astype(int)  # (x, y) in cells
    out = np.stack([fmap[:, y:y + cells, x:x + cells].mean(dim=(1, 2)).numpy()
                    for x, y in index])
    return out, time.perf_counter() - began


def region_labels(slide, centres0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class name and region index of each centre inside a demo region ('' and -1 outside)."""
    from shapely.geometry import Point

    from napari_dfl.core.annotations.annotation import read_geojson

    annotations = [a for a in read_geojson(SAMPLE.with_suffix(".geojson"))
                   if a.geometry.geom_type != "Point"]
    labels = np.full(len(centres0), "", dtype=object)
    groups = np.full(len(centres0), -1)
    for i, (x, y) in enumerate(centres0):
        for k, annotation in enumerate(annotations):
            if annotation.geometry.contains(Point(x, y)):
                labels[i], groups[i] = annotation.label, k
                break
    return labels, groups


def probe(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int,
          seed: int) -> tuple[float, float]:
    """Grouped-CV balanced accuracy of a standardised logistic regression: mean, SE."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = []
    split = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in split.split(features, labels, groups):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        model.fit(features[train], labels[train])
        scores.append(balanced_accuracy_score(labels[test], model.predict(features[test])))
    scores = np.asarray(scores)
    return float(scores.mean()), float(scores.std(ddof=1) / np.sqrt(len(scores)))


def main() -> int:
    """Measure and print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", type=int, default=3, help="grouped CV folds (regions)")
    parser.add_argument("--seeds", type=int, default=3, help="fold shuffles")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from napari_dfl.core.backbones.backbone import load_backbone
    from napari_dfl.core.slides.factory import open_slide
    from napari_dfl.core.slides.sampling import Composition, sample_patches
    from napari_dfl.core.slides.tissue import tile_grid

    backbone = load_backbone(device="cpu", precision="fp32")
    if backbone.input_size != 224 or not backbone.timm_name.startswith("efficientnet_lite0"):
        log(f"note: measured with {backbone.name} at {backbone.input_size} px")
    slide = open_slide(SAMPLE)
    mpp0 = slide.require_mpp()
    centred = Composition(224, zooms=(0.5, 2.0), variants=("rgb",), input_size=224)
    shared = Composition(224, zooms=(0.5, 2.0), variants=("rgb",), input_size=224,
                         context="shared")
    load = os.getloadavg()[0]
    results: dict = {"slide": SAMPLE.name, "backbone": backbone.name,
                     "load_1min": round(load, 2), "cpu_threads": torch.get_num_threads()}

    # 1. the x20 tile grid: agreement and time of x20 and of the x5 context
    grid = tile_grid(slide, 224, 0.5, min_tissue=0.0)
    coords = grid.coords
    log(f"[grid] {len(coords)} tiles of 224 px at x20")
    patches = sample_patches(slide, coords, centred)
    x20, t20 = embed(backbone, patches[:, 0])
    x5, t5 = embed(backbone, patches[:, 1])
    shared_x5, t_shared = embed(backbone, sample_patches(slide, coords, shared)[:, 1])
    centres0 = coords + 224 * 0.5 / mpp0 / 2.0
    d20, td20 = dense_x20(backbone, slide, coords, 224)
    near, _ = dense_context(backbone, slide, centres0, 2.0, 224, "nearest")
    interp, t_interp = dense_context(backbone, slide, centres0, 2.0, 224, "interpolated")
    results["agreement"] = {
        "x20_dense": agreement(d20, x20),
        "x5_dense_nearest": agreement(near, x5),
        "x5_dense_interpolated": agreement(interp, x5),
        "x5_shared": agreement(shared_x5, x5),
    }
    results["seconds"] = {"x20_per_patch": round(t20, 2), "x20_dense": round(td20, 2),
                          "x5_per_patch": round(t5, 2), "x5_dense": round(t_interp, 2),
                          "x5_shared_per_patch": round(t_shared, 2)}
    results["x5_context_cost_ratio"] = round(t_interp / t5, 3)

    # 2. accuracy on the demo regions: tiles at a 112 px stride with their centre in a region
    step = 112 * 0.5 / mpp0
    width, height = slide.dimensions
    xs, ys = np.meshgrid(np.arange(0, width - 224 * 0.5 / mpp0, step),
                         np.arange(0, height - 224 * 0.5 / mpp0, step))
    anchors = np.stack([xs.ravel(), ys.ravel()], axis=1).round().astype(np.int64)
    centres = anchors + 224 * 0.5 / mpp0 / 2.0
    labels, groups = region_labels(slide, centres)
    keep = groups >= 0
    anchors, centres, labels, groups = anchors[keep], centres[keep], labels[keep], groups[keep]
    log(f"[regions] {len(anchors)} tiles in {len(set(groups))} regions, "
        f"classes {dict(zip(*np.unique(labels, return_counts=True), strict=True))}")
    parts = sample_patches(slide, anchors, centred)
    f20, _ = embed(backbone, parts[:, 0])
    f5, _ = embed(backbone, parts[:, 1])
    s5, _ = embed(backbone, sample_patches(slide, anchors, shared)[:, 1])
    d5, _ = dense_context(backbone, slide, centres, 2.0, 224, "interpolated")
    variants = {"x20 only": f20, "x20 + x5 per-patch": np.hstack([f20, f5]),
                "x20 + x5 dense": np.hstack([f20, d5]), "x20 + x5 shared": np.hstack([f20, s5])}
    accuracy = {}
    for name, features in variants.items():
        runs = [probe(features, labels, groups, args.folds, seed) for seed in range(args.seeds)]
        accuracy[name] = {"balanced_accuracy": round(float(np.mean([r[0] for r in runs])), 3),
                          "se": round(float(np.mean([r[1] for r in runs])), 3)}
    results["accuracy"] = {"n_tiles": len(labels), "n_regions": len(set(groups)),
                           "folds": args.folds, "seeds": args.seeds, **accuracy}
    results["x5_dense_context_agreement_regions"] = agreement(d5, f5)

    log(f"{'agreement with per-patch':<28} {'mean':>7} {'p5':>7} {'min':>7}")
    for name, row in results["agreement"].items():
        log(f"{name:<28} {row['cos_mean']:>7.4f} {row['cos_p5']:>7.4f} {row['cos_min']:>7.4f}")
    log(f"seconds (load {load:.1f}): " + ", ".join(f"{k} {v}"
                                                    for k, v in results["seconds"].items()))
    for name, row in accuracy.items():
        log(f"{name:<22} balanced accuracy {row['balanced_accuracy']:.3f} ± {row['se']:.3f}")
    print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
