"""Smoke tests of the benchmarks: each runs small and keeps its JSON contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "slide_open.py"
KEYS = ("open_s", "open_rss_mb", "read_p50_ms", "read_p95_ms", "read_ratio", "napari_add_s",
        "width", "height", "levels", "file_mb")


@pytest.mark.slow
def test_slide_open_benchmark_prints_json(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--size", "4096", "--reads", "10", "--open-runs", "1",
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in KEYS:
        assert isinstance(result[key], (int, float)) and result[key] > 0, (key, result[key])
    assert result["width"] == result["height"] == 4096
    assert result["read_mismatches"] == 0
    assert result["targets"] == {"open_s": 0.5, "open_rss_mb": 100, "read_ratio": 1.2}
    assert set(result["pass"]) == set(result["targets"])
    assert all(isinstance(value, bool) for value in result["pass"].values())
    assert list(tmp_path.glob("mosaic_*.tif")), "the mosaic was not built in --workdir"


@pytest.mark.slow
def test_whole_slide_benchmark_compares_the_contexts_on_the_same_tiles(tmp_path):
    from napari_dfl.core.slides.sampling import TISSUE_COMPOSITION

    done = subprocess.run(
        [sys.executable, str(SCRIPT.with_name("whole_slide.py")), "--size", "4096",
         "--tiles", "18", "--repeats", "1", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    runs = result["runs"]
    assert set(runs) == {"x20_rgb", "centred", "nearest", "shared"}
    assert result["default"] == TISSUE_COMPOSITION.context
    assert all(run["tiles"] == 18 for run in runs.values())
    # patches per tile: 1 and 4 always; sharing contexts embeds fewer, shared fewest
    parts = {name: run["parts_per_tile"]["block"] for name, run in runs.items()}
    assert parts["x20_rgb"] == 1 and parts["centred"] == 4
    assert 2 < parts["shared"] <= parts["nearest"] < 4
    ratio = runs[result["default"]]["all_s"] / runs["x20_rgb"]["all_s"]
    assert result["default_cost_ratio"] == pytest.approx(ratio, abs=1e-3)
    assert result["pass"] == {"default_cost_ratio": result["default_cost_ratio"] <= 2.2}


@pytest.mark.slow
@pytest.mark.gui
def test_explorer_benchmark_prints_json():
    script = SCRIPT.with_name("explorer_scale.py")
    done = subprocess.run([sys.executable, str(script), "--sizes", "3000", "--umap-sizes"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("select_3k_ms", "highlight_3k_ms", "frame_3k_ms", "bare_points_frame_3k_ms",
                "draw_ratio_3k"):
        assert isinstance(result[key], float) and result[key] > 0, (key, result[key])
    assert 0 < result["selected_last_lasso_3k"] < 3000
    assert result["targets"]["draw_ratio_100k"] == 1.5 and result["pass"] == {}


def test_interactive_latency_start_up_part_prints_json(tmp_path):
    script = SCRIPT.with_name("interactive_latency.py")
    done = subprocess.run([sys.executable, str(script), "--skip-train", "--skip-umap",
                           "--runs", "1", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("python_start_s", "cli_help_s", "cli_info_s"):
        assert isinstance(result[key], float) and result[key] > 0, (key, result[key])
    assert result["cli_help_s"] > result["python_start_s"]  # --help starts Python, and more
    assert set(result["pass"]) == {"cli_help_over_python_start"}
    assert "first_train_s" not in result and "umap_1k_first_s" not in result


def test_gpu_check_says_it_found_no_gpu_and_measures_nothing():
    """Without CUDA the GPU check ends at once with one JSON line that says why."""
    script = SCRIPT.with_name("gpu_check.sh")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                          check=False, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["gpu"] is False and "is False" in result["reason"]
    assert result["cpus"] == os.cpu_count()
    assert "no GPU found" in done.stderr and "embed_throughput" not in result
