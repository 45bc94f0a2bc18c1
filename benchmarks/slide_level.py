"""Slide-level learning on synthetic cohorts: does attention MIL find a small planted region?

Two sources of embeddings (and, with ``--regression``, a regression mode below):

* ``--source real`` (default): each synthetic slide is a grid of REAL tile embeddings of the
  sample slide ``sample_data/CMU-1-Small-Region.svs`` (random draws plus small noise);
  positive slides also hold a contiguous block (about 7 % of the tiles) of REAL embeddings of
  CRC tissue tiles (``../shared/data/crchisto``, research use only, read in place). Both are
  embedded once with the default backbone (112 px at 0.5 um/px, RGB).
* ``--source random``: structured random embeddings (background clusters plus a planted
  cluster) written to stores on disk, for the scale claim: ``--slides 200 --tiles 10000``
  streams 200 slides of 10,000 tiles without holding the cohort in memory.

The last stdout line is JSON with ``peak_rss_mb``, ``slide_auc`` (cross-validated) and
``attention_in_planted`` (mean fraction of attention mass inside the planted region of the
positive slides, under the final model trained on the whole cohort).

``--regression``: slide-level targets instead of one label. Every slide holds a share ``f``
of planted tiles (uniform in 0..30 %, scattered over its grid); its cohort CSV carries
numeric targets that depend on ``f`` plus noise (``planted_up = f + e``, ``planted_down =
1 - 3 f + e``, noise sd a quarter of the term's sd), a binary ``planted_mut`` (``f`` above
the median), and pure-noise targets (``noise_a``, ``noise_b`` numeric, ``noise_mut``
binary). One multi-target model is cross-validated by grouped k-fold (held-out slides)
beside the pooled baseline. The last line is JSON with ``regression_r_planted`` and
``regression_r_noise`` (mean held-out Pearson r of the MIL model over the planted, resp.
noise, numeric targets), the same for the baseline, the binary targets' AUCs and
``peak_rss_mb``.
"""

from __future__ import annotations

import argparse
import glob
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "CMU-1-Small-Region.svs"
CRC = ROOT.parent / "shared" / "data" / "crchisto" / "images"
TILE = 224


def embed_real(work: Path, n_crc: int = 8) -> tuple[np.ndarray, np.ndarray, dict]:
    """Embed the sample slide and ``n_crc`` CRC images; return background, planted, extractor."""
    from napari_dfl.core.features.settings import Settings
    from napari_dfl.core.features.store import EmbeddingStore
    from napari_dfl.core.slides.sampling import Composition
    from napari_dfl.workflows.slide_batch import embed_slides

    comp = Composition(112, (0.5,), ("rgb",))
    crc = sorted(glob.glob(str(CRC / "*.png")))[:n_crc]
    if not crc:
        raise FileNotFoundError(f"no CRC images under {CRC}")
    out = []
    for paths, tissue in (([SAMPLE], 0.5), (crc, 0.0)):
        settings = Settings(composition=comp, batch_size=16, mpp=0.5, min_tissue=tissue,
                            store_dir=str(work))
        reports = embed_slides(paths, settings)
        bad = [r for r in reports if r["status"] != "ok"]
        if bad:
            raise RuntimeError(f"embedding failed: {bad[0]['error']}")
        stores = [EmbeddingStore.open(r["store"]) for r in reports]
        out.append(np.concatenate([s.embeddings() for s in stores]))
    extractor = {k: v for k, v in stores[0].identity.items() if k != "slide"}
    return out[0], out[1], extractor


def write_slide(out_dir: Path, name: str, emb: np.ndarray, index: np.ndarray,
                shape: tuple[int, int], extractor: dict):
    """Create one synthetic slide's store with its first tiles (grid ``index`` (row, col))."""
    from napari_dfl.core.features.store import EmbeddingStore

    identity = {**extractor, "slide": {"name": f"{name}.svs",
                                       "dimensions": [shape[1] * TILE, shape[0] * TILE]}}
    store = EmbeddingStore.create_or_open(out_dir / f"{name}__synthetic.dfl.zarr", identity,
                                          emb.shape[1])
    store.append((index[:, ::-1] * TILE).astype(np.int64), emb.astype(np.float32))
    store.set_attrs(patch_size_level0=TILE)
    return store


def make_cohort(out_dir: Path, background, planted, extractor: dict, n_slides: int = 24,
                grid: tuple[int, int] = (12, 12), fraction: float = 0.07, noise: float = 0.1,
                seed: int = 0, chunk: int = 4096) -> tuple[list[tuple[str, str]], dict]:
    """Write a synthetic cohort; half the slides (alternating) are positive.

    Args:
        out_dir: folder receiving one store per slide.
        background: ``(M, D)`` embeddings, or a callable ``(rng, n) -> (n, D)``.
        planted: ``(K, D)`` embeddings, or a callable ``(rng, n) -> (n, D)``.
        extractor: the extractor identity (no slide) the stores claim.
        n_slides: number of slides.
        grid: ``(rows, cols)`` tiles per slide (all tissue).
        fraction: share of a positive slide's tiles in the planted square block.
        noise: Gaussian noise, in units of the background's per-feature std.
        seed: random seed.
        chunk: rows generated and appended at once (bounds memory for large slides).

    Returns:
        ``(rows [(slide, label)], planted masks {slide: (N,) bool in store order})``.

    """
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    draw_bg = background if callable(background) else (
        lambda r, n: background[r.integers(len(background), size=n)])
    draw_pl = planted if callable(planted) else (
        lambda r, n: planted[r.integers(len(planted), size=n)])
    sigma = noise * draw_bg(np.random.default_rng(seed + 1), 2048).std(0)
    rows, masks = [], {}
    side = max(1, round(np.sqrt(fraction * grid[0] * grid[1])))
    rr, cc = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    index = np.stack([rr.ravel(), cc.ravel()], 1)
    for s in range(n_slides):
        name, positive = f"synth_{s:03d}", s % 2 == 1
        r0, c0 = rng.integers(grid[0] - side + 1), rng.integers(grid[1] - side + 1)
        inside = ((index[:, 0] >= r0) & (index[:, 0] < r0 + side) & (index[:, 1] >= c0)
                  & (index[:, 1] < c0 + side)) if positive else np.zeros(len(index), bool)
        store = None
        for start in range(0, len(index), chunk):
            part = slice(start, start + chunk)
            emb = draw_bg(rng, len(index[part])).astype(np.float32)
            where = np.flatnonzero(inside[part])
            if len(where):
                emb[where] = draw_pl(rng, len(where))
            emb += (rng.standard_normal(emb.shape) * sigma).astype(np.float32)
            if store is None:
                store = write_slide(out_dir, name, emb, index[part], grid, extractor)
            else:
                store.append((index[part][:, ::-1] * TILE).astype(np.int64), emb)
        rows.append((f"{name}.svs", "tumour" if positive else "normal"))
        masks[f"{name}.svs"] = inside
    return rows, masks


#: Numeric targets of the regression mode that depend on the planted share, and noise ones.
PLANTED_TARGETS, NOISE_TARGETS = ("planted_up", "planted_down"), ("noise_a", "noise_b")
#: Binary targets: the planted share above its median, and a coin flip.
BINARY_TARGETS = ("planted_mut", "noise_mut")


def make_regression_cohort(out_dir: Path, background, planted, extractor: dict,
                           n_slides: int = 40, grid: tuple[int, int] = (20, 20),
                           max_fraction: float = 0.3, noise: float = 0.1,
                           target_noise: float = 0.25, seed: int = 0,
                           chunk: int = 4096) -> tuple[Path, np.ndarray]:
    """Write a cohort whose targets depend on each slide's share of planted tiles.

    Args:
        out_dir: folder receiving one store per slide and ``cohort.csv``.
        background: ``(M, D)`` embeddings, or a callable ``(rng, n) -> (n, D)``.
        planted: ``(K, D)`` embeddings, or a callable ``(rng, n) -> (n, D)``.
        extractor: the extractor identity (no slide) the stores claim.
        n_slides: number of slides.
        grid: ``(rows, cols)`` tiles per slide.
        max_fraction: planted shares are uniform in ``[0, max_fraction]``.
        noise: Gaussian noise on the embeddings, in units of the background's std.
        target_noise: noise of the planted targets, as a share of their signal's std.
        seed: random seed.
        chunk: rows generated and appended at once (memory stays flat in the slide size).

    Returns:
        ``(cohort CSV, planted share per slide)`` (the share of tiles really planted).

    """
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    draw_bg = background if callable(background) else (
        lambda r, n: background[r.integers(len(background), size=n)])
    draw_pl = planted if callable(planted) else (
        lambda r, n: planted[r.integers(len(planted), size=n)])
    sigma = noise * draw_bg(np.random.default_rng(seed + 1), 2048).std(0)
    rr, cc = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    index = np.stack([rr.ravel(), cc.ravel()], 1)
    fractions = rng.uniform(0, max_fraction, n_slides)
    for s, fraction in enumerate(fractions):
        inside = np.zeros(len(index), bool)
        inside[rng.permutation(len(index))[:round(fraction * len(index))]] = True
        fractions[s] = inside.mean()  # the share the slide really holds
        store = None
        for start in range(0, len(index), chunk):
            part = slice(start, start + chunk)
            emb = draw_bg(rng, len(index[part])).astype(np.float32)
            where = np.flatnonzero(inside[part])
            if len(where):
                emb[where] = draw_pl(rng, len(where))
            emb += (rng.standard_normal(emb.shape) * sigma).astype(np.float32)
            if store is None:
                store = write_slide(out_dir, f"synth_{s:03d}", emb, index[part], grid,
                                    extractor)
            else:
                store.append((index[part][:, ::-1] * TILE).astype(np.int64), emb)
    spread = max_fraction / np.sqrt(12)  # std of the uniform planted share
    up = fractions + rng.normal(0, target_noise * spread, n_slides)
    down = 1 - 3 * fractions + rng.normal(0, 3 * target_noise * spread, n_slides)
    mutated = (fractions > np.median(fractions)).astype(int)
    columns = {"planted_up": up, "planted_down": down, "planted_mut": mutated,
               "noise_a": rng.normal(size=n_slides), "noise_b": rng.normal(5, 2, n_slides),
               "noise_mut": rng.integers(0, 2, n_slides)}
    path = out_dir / "cohort.csv"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("slide," + ",".join(columns) + "\n")
        for s in range(n_slides):
            cells = [f"{columns[c][s]:.6g}" for c in columns]
            handle.write(f"synth_{s:03d}.svs," + ",".join(cells) + "\n")
    return path, fractions


def regression_result(model) -> dict:
    """The regression mode's figures from a cross-validated multi-target model."""
    rows = {(r["target"], r["method"]): r for r in model.metrics["rows"]}
    out = {}
    for method, prefix in (("mil", "regression"), ("baseline", "baseline")):
        for kind, names in (("planted", PLANTED_TARGETS), ("noise", NOISE_TARGETS)):
            values = [rows[(n, method)]["pearson_r"] for n in names]
            out[f"{prefix}_r_{kind}"] = (None if None in values
                                         else round(float(np.mean(values)), 4))
        for name in BINARY_TARGETS:
            out[f"{prefix}_auc_{name}"] = rows[(name, method)]["auc"]
    out["per_target_r"] = {n: [rows[(n, "mil")]["pearson_r"], rows[(n, "baseline")]["pearson_r"]]
                           for n in PLANTED_TARGETS + NOISE_TARGETS}
    return out


def attention_in_planted(model, stores_dir: Path, rows, masks) -> float:
    """Mean fraction of attention mass inside the planted block, over positive slides."""
    from napari_dfl.core.features.store import EmbeddingStore

    fractions = []
    for name, label in rows:
        if label != "tumour":
            continue
        store = EmbeddingStore.open(next(stores_dir.glob(f"{Path(name).stem}__*.dfl.zarr")))
        _, attention = model.predict_store(store)
        fractions.append(float(attention[masks[name]].sum()))
    return float(np.mean(fractions))


def _random_sources(dim: int, seed: int):
    centres = np.random.default_rng(seed).standard_normal((9, dim)).astype(np.float32)

    def background(rng, n):
        return centres[rng.integers(8, size=n)] + rng.standard_normal((n, dim)) * 0.8

    def planted(rng, n):
        return centres[8] + rng.standard_normal((n, dim)) * 0.8

    return background, planted


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["real", "random"], default="real")
    parser.add_argument("--slides", type=int, default=40)
    parser.add_argument("--tiles", type=int, default=400, help="tiles per slide (square grid)")
    parser.add_argument("--dim", type=int, default=256, help="random mode only")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--workdir", help="folder for stores (default: a temp folder)")
    parser.add_argument("--regression", action="store_true",
                        help="numeric, binary and noise targets per slide (see the docstring)")
    parser.add_argument("--max-tiles", type=int, default=4096,
                        help="tiles per training step of the MIL model (0: all)")
    args = parser.parse_args(argv)
    import sklearn.model_selection  # noqa: F401  (imported before the baseline is taken)

    from napari_dfl.core.features.extractor import Extractor
    from napari_dfl.core.features.store import EmbeddingStore
    from napari_dfl.core.slide_level.cohort import SlideEntry
    from napari_dfl.core.slide_level.config import MILConfig
    from napari_dfl.core.slide_level.grids import compress_store
    from napari_dfl.core.slide_level.training import train_slide_model
    from napari_dfl.core.slides.sampling import Composition

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        side = max(4, round(np.sqrt(args.tiles)))
        if args.source == "real":
            background, planted, extractor = embed_real(work / "real")
        else:
            background, planted = _random_sources(args.dim, 0)
            extractor = Extractor({"name": "random", "embed_dim": args.dim},
                                  Composition(TILE, (0.5,), ("rgb",))).to_dict()
        stores = work / "cohort"
        if args.regression:
            return _regression(args, stores, background, planted, extractor, started,
                               baseline)
        rows, masks = make_cohort(stores, background, planted, extractor, args.slides,
                                  (side, side))
        made = time.perf_counter()
        for path in sorted(stores.glob("*.dfl.zarr")):
            compress_store(EmbeddingStore.open(path))
        entries = [SlideEntry(name, next(stores.glob(f"{Path(name).stem}__*")), label, name)
                   for name, label in rows]
        model = train_slide_model(entries, MILConfig(epochs=args.epochs), folds=args.folds)
        attention = attention_in_planted(model, stores, rows, masks)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"source": args.source, "slides": args.slides, "tiles_per_slide": side * side,
              "planted_fraction": float(np.mean([m.mean() for m in masks.values() if m.any()])),
              "slide_auc": model.metrics["auc"],
              "balanced_accuracy": model.metrics["balanced_accuracy"],
              "attention_in_planted": attention, "peak_rss_mb": round(peak, 1),
              "baseline_rss_mb": round(baseline, 1),
              "generate_s": round(made - started, 1),
              "compress_train_s": round(time.perf_counter() - made, 1)}
    print(json.dumps(result))
    return 0


def _regression(args, stores: Path, background, planted, extractor: dict, started: float,
                baseline_rss: float) -> int:
    from napari_dfl.core.slide_level.config import MILConfig
    from napari_dfl.core.slide_level.target_training import train_target_model
    from napari_dfl.core.slide_level.targets import read_target_cohort

    side = max(4, round(np.sqrt(args.tiles)))
    csv_path, fractions = make_regression_cohort(stores, background, planted, extractor,
                                                 args.slides, (side, side))
    made = time.perf_counter()
    cohort, problems = read_target_cohort(csv_path, stores, pattern="*")
    assert not problems, problems
    config = MILConfig(epochs=args.epochs, max_tiles=args.max_tiles)
    model, _ = train_target_model(cohort, config, folds=args.folds)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"mode": "regression", "source": args.source, "slides": args.slides,
              "tiles_per_slide": side * side, "folds": args.folds, "epochs": args.epochs,
              "planted_share_range": [round(float(fractions.min()), 3),
                                      round(float(fractions.max()), 3)],
              **regression_result(model), "wins": model.metrics["wins"],
              "best_epoch_final": model.early_stopping.get("best_epoch"),
              "peak_rss_mb": round(peak, 1), "baseline_rss_mb": round(baseline_rss, 1),
              "generate_s": round(made - started, 1),
              "train_s": round(time.perf_counter() - made, 1)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
