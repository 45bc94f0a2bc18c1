"""Benchmark: the cost of making each annotation edit crash-safe, journal against rewrite.

For ``n`` annotations (half 300 px squares, half points, two classes, spread over a
100,000 px slide), it times two ways of putting an edit on disk at once:

* ``journal_ms``: :meth:`napari_dfl.core.project.journal.AnnotationJournal.record` of one
  more annotation (the panel's way: the change since the last edit, appended as one line);
  median and maximum of ``--edits`` (50) successive edits;
* ``rewrite_ms``: :func:`napari_dfl.core.annotations.annotation.write_geojson` of all ``n``
  (the whole file, atomically and fsynced: what the debounced autosave does), median of 5;

and ``replay_ms``, reading the GeoJSON back and applying the journal of those edits (what
reopening the slide after a crash costs). Target: ``journal_ms`` under a frame (16 ms) at
5,000 annotations. A table goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import numpy as np

TARGETS = {"journal_5000_max_ms": 16.0}
COLORS = {"a": "#ff7f00", "b": "#1b9e77"}


def annotations(n: int, seed: int = 0) -> list:
    """``n`` annotations: squares and points alternately, two classes."""
    from shapely.geometry import Point, box

    from napari_dfl.core.annotations.annotation import Annotation

    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100_000, size=(n, 2))
    return [Annotation(box(x, y, x + 300, y + 300) if i % 2 else Point(x, y),
                       "a" if i % 3 else "b") for i, (x, y) in enumerate(xy)]


def measure(n: int, edits: int) -> dict:
    """Journal, rewrite and replay timings for ``n`` annotations."""
    from napari_dfl.core.annotations.annotation import read_geojson, write_geojson
    from napari_dfl.core.project.journal import AnnotationJournal, replay

    every = annotations(n + edits)
    folder = tempfile.mkdtemp(prefix="dfl-journal-bench-")
    journal = AnnotationJournal(folder)
    journal.compact(every[:n], COLORS)
    record = []
    for k in range(1, edits + 1):
        start = time.perf_counter()
        journal.record(every[:n + k], COLORS)
        record.append((time.perf_counter() - start) * 1000)
    rewrite = []
    for _ in range(5):
        start = time.perf_counter()
        write_geojson(every[:n], f"{folder}/rewrite.geojson", colors=COLORS)
        rewrite.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    restored = replay(folder, read_geojson(f"{folder}/annotations.geojson"), COLORS)
    replay_ms = (time.perf_counter() - start) * 1000
    assert len(restored.annotations) == n + edits and restored.edits == edits
    return {f"journal_{n}_ms": round(statistics.median(record), 2),
            f"journal_{n}_max_ms": round(max(record), 2),
            f"rewrite_{n}_ms": round(statistics.median(rewrite), 1),
            f"replay_{n}_ms": round(replay_ms, 1)}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table to stderr and a JSON line to stdout."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 5000],
                        help="numbers of annotations already drawn")
    parser.add_argument("--edits", type=int, default=50, help="edits timed per size")
    args = parser.parse_args(argv)
    result: dict = {}
    for n in args.sizes:
        figures = measure(n, args.edits)
        print(f"{n:>6} annotations: " + ", ".join(f"{k} {v}" for k, v in figures.items()),
              file=sys.stderr)
        result.update(figures)
    result["targets"] = TARGETS
    result["pass"] = {k: result[k] < v for k, v in TARGETS.items() if k in result}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
