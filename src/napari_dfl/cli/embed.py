"""``napari-dfl embed SLIDE...``: embed the tissue tiles of slides, serially or on dask."""

from __future__ import annotations

import argparse
import json
import sys

from napari_dfl.cli.options import float_list, positive_float, word_list


def add_composition_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose the extractor: backbone, weights and sample composition."""
    group = parser.add_argument_group("extractor")
    group.add_argument("--backbone", default="efficientnet-lite0",
                       help="registry name or timm architecture (default: efficientnet-lite0)")
    group.add_argument("--weights", help="local weights file (.safetensors, .pth, .bin)")
    group.add_argument("--zooms", type=float_list, default=(0.5, 2.0),
                       help="um/px of each zoom, first = working magnification (default 0.5,2.0)")
    group.add_argument("--variants", type=word_list, default=("rgb", "gray"),
                       help="colour variants among rgb,gray (default rgb,gray)")
    group.add_argument("--patch-size", type=int, default=224, help="patch side in px (224)")
    group.add_argument("--mpp", type=positive_float,
                       help="level-0 um/px for slides whose metadata has none")
    group.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    group.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    group.add_argument("--batch-size", type=int, default=8, help="samples per batch (8)")


def embed_config(args: argparse.Namespace, **overrides):
    """Build an :class:`EmbedConfig` from parsed arguments."""
    from napari_dfl.core.slides.sampling import Composition
    from napari_dfl.workflows.cohort_embedding import EmbedConfig

    composition = Composition(args.patch_size, args.zooms, args.variants)
    values = dict(backbone=args.backbone, weights=args.weights, composition=composition,
                  batch_size=args.batch_size, device=args.device, precision=args.precision,
                  mpp=args.mpp)
    values.update(overrides)
    return EmbedConfig(**values)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = sub.add_parser("embed", help="embed the tissue tiles of one or more slides")
    parser.add_argument("slides", nargs="+", help="slide files")
    parser.add_argument("--out", required=True, help="folder receiving one store per slide")
    add_composition_arguments(parser)
    parser.add_argument("--min-tissue", type=float, default=0.5,
                        help="minimum tissue fraction of a tile (0.5)")
    parser.add_argument("--scheduler",
                        help="dask: local:N for a local cluster of N workers, or an address")
    parser.add_argument("--json", action="store_true", help="print one JSON report per slide")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Embed every slide; exit 1 when some slides failed (the others are done)."""
    from napari_dfl.workflows.cohort_embedding import embed_cohort

    config = embed_config(args, min_tissue=args.min_tissue)
    bar = _ProgressBar() if args.scheduler is None and not args.json else None

    def report(item: dict) -> None:
        if bar is not None:
            bar.close()
        if args.json:
            print(json.dumps({k: v for k, v in item.items() if k != "traceback"}), flush=True)
        elif item["status"] == "ok":
            print(f"ok      {item['slide']}: {item['samples']} samples "
                  f"({item['computed']} computed) in {item['seconds']:.1f} s -> {item['store']}")
        else:
            print(f"FAILED  {item['slide']}: {item['error']}", file=sys.stderr)

    reports = embed_cohort(args.slides, args.out, config, scheduler=args.scheduler,
                           on_report=report, on_progress=bar.update if bar else None)
    failed = sum(r["status"] != "ok" for r in reports)
    if failed and not args.json:
        print(f"{failed} of {len(reports)} slides failed; the others are done.", file=sys.stderr)
    return 1 if failed else 0


class _ProgressBar:
    """One tqdm bar per slide on stderr, fed by EmbedProgress."""

    def __init__(self) -> None:
        self._bar = None
        self._slide = None

    def update(self, progress) -> None:
        from tqdm import tqdm

        if self._bar is None or progress.slide != self._slide:
            self.close()
            self._slide = progress.slide
            self._bar = tqdm(total=progress.total, desc=progress.slide, unit="sample",
                             file=sys.stderr, leave=False)
        self._bar.n = progress.done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
