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
        " 'writers': [w.command for w in m.contributions.writers],"
        " 'samples': [x.key for x in m.contributions.sample_data],"
        " 'sample': str(s.SAMPLE_SLIDE), 'exists': s.SAMPLE_SLIDE.is_file()}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(tmp_path), "PATH": str(BIN)}, check=True)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(found["dist"]).resolve() == tmp_path.resolve()
    assert found["readers"] == ["napari-dfl.get_reader", "napari-dfl.get_geojson_reader"]
    assert found["writers"] == ["napari-dfl.write_geojson"]
    assert found["samples"] == ["cmu1_small_region"]
    assert found["sample"].startswith(str(tmp_path)) and found["exists"]


def test_wheel_metadata_declares_what_the_code_needs(wheel):
    """The wheel's METADATA: SPDX licence, napari hub classifiers, project URLs, and the
    dependencies the code imports (scipy, huggingface_hub) or needs at a version."""
    from email.parser import Parser

    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode())
    assert metadata["License-Expression"] == "BSD-3-Clause"
    classifiers = metadata.get_all("Classifier")
    assert "Framework :: napari" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639
    assert metadata.get_all("Project-URL")
    requires = {r.split(";")[0].replace(" ", "") for r in metadata.get_all("Requires-Dist")}
    for needed in ("scipy>=1.11", "huggingface_hub>=0.23", "tifffile>=2025.5.21",
                   "platformdirs>=4"):
        assert needed in requires, sorted(requires)


def _tracked_sources() -> list[Path]:
    """The package's Python files in git (work in progress of others left out), else all."""
    done = subprocess.run(["git", "ls-files", "src/napari_dfl"], cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode == 0 and done.stdout.strip():
        return [ROOT / line for line in done.stdout.split() if line.endswith(".py")]
    return sorted((ROOT / "src" / "napari_dfl").rglob("*.py"))


def test_every_imported_package_is_declared():
    """Each third-party module the package imports comes from a distribution that
    pyproject.toml declares (a dependency or an extra), so pip install brings it."""
    import ast
    import importlib.metadata as md
    import re

    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"],
                *(r for extra in project["optional-dependencies"].values() for r in extra)]

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    declared_names = {canonical(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0])
                      for r in declared}
    imported: set[str] = set()
    for path in _tracked_sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"napari_dfl"}
    providers = md.packages_distributions()
    missing = {}
    for module in sorted(third_party):
        dists = {canonical(d) for d in providers.get(module, [module])}
        if not dists & declared_names:
            missing[module] = sorted(dists)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
