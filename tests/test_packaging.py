"""Packaging: the manifest is valid and discovered from a built wheel; imports stay light."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_import_does_not_pull_qt_or_napari():
    code = (
        "import sys, json, napari_dfl, napari_dfl.cli;"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'napari', 'qtpy', 'PySide6', 'PyQt5', 'PyQt6', 'vispy', 'magicgui', 'timm', 'torch'})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert json.loads(result.stdout) == []


def test_npe2_validate():
    result = subprocess.run([str(BIN / "npe2"), "validate", "napari-dfl"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("src")
    # Build from a copy so that the checkout gets no build/ or egg-info folders.
    shutil.copytree(ROOT, build / "p", symlinks=True,
                    ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "build",
                                                  "__pycache__", ".*_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(build / "p"), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(out)], check=True,
                   capture_output=True)
    [path] = out.glob("napari_dfl-*.whl")
    return path


def test_wheel_carries_manifest_sample_and_entry_point(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        text = archive.read(entry_points).decode()
        manifest = archive.read("napari_dfl/napari.yaml").decode()
    assert "napari_dfl/sample_data/CMU-1-Small-Region.svs" in names
    assert "[napari.manifest]" in text and "napari-dfl = napari_dfl:napari.yaml" in text
    assert manifest == (ROOT / "napari.yaml").read_text()


def test_napari_discovers_plugin_from_the_wheel(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path)
    code = (
        "import json, npe2, importlib.metadata as md;"
        "m = npe2.PluginManifest.from_distribution('napari-dfl');"
        "dist = md.distribution('napari-dfl');"
        "import napari_dfl._sample_data as s;"
        "print(json.dumps({'dist': str(dist.locate_file('')),"
        " 'readers': [r.command for r in m.contributions.readers],"
        " 'samples': [x.key for x in m.contributions.sample_data],"
        " 'sample': str(s.SAMPLE_SLIDE), 'exists': s.SAMPLE_SLIDE.is_file()}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(tmp_path), "PATH": str(BIN)}, check=True)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(found["dist"]).resolve() == tmp_path.resolve()
    assert found["readers"] == ["napari-dfl.get_reader"]
    assert found["samples"] == ["cmu1_small_region"]
    assert found["sample"].startswith(str(tmp_path)) and found["exists"]
