"""A project save is all-or-nothing: killed at any step, the project is as it was or as saved.

The kill tests run a real save in a child process and kill it (SIGKILL) just before or
just after each of its file-system steps (every rename and deletion), then open the
project in this process.
"""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_dfl.core.project import folder as core_project
from napari_dfl.core.project.journal import JOURNAL_NAME, AnnotationJournal
from napari_dfl.core.project.staged_save import COMMITTED_NAME

CHILD = textwrap.dedent('''
    # Saves the "old" project, then forks one process per kill point: each saves the "new"
    # project over a copy of the old one and is killed (SIGKILL) just before or after its
    # n-th file-system step. Forking after the imports keeps each save a fraction of a second.
    import json, os, pathlib, shutil, signal, sys
    import numpy as np
    import torch
    torch.set_num_threads(1)  # no thread pool in the processes forked below
    from shapely.geometry import box
    from napari_dfl.core.annotations.annotation import Annotation
    from napari_dfl.core.features.extractor import Extractor
    from napari_dfl.core.features.settings import Settings
    from napari_dfl.core.heads.config import TrainConfig
    from napari_dfl.core.heads.tile_prediction import TilePrediction
    from napari_dfl.core.heads.training import fit
    from napari_dfl.core.project import folder as core_project
    from napari_dfl.core.slides.sampling import Composition
    from napari_dfl.core.slides.tissue import TileGrid

    root = pathlib.Path(sys.argv[1])
    extractor = Extractor({"name": "efficientnet-lite0", "weights_sha256": "0" * 64,
                           "embed_dim": 8}, Composition(112, (1.0,), ("rgb",)))

    def project(version):
        classes = ["a", "b"] if version == "old" else ["a", "b", "c"]
        rng = np.random.default_rng(0)
        x = rng.normal(size=(60, 8)).astype(np.float32)
        labels = np.array([classes[i % len(classes)] for i in range(60)])
        for i, name in enumerate(classes):
            x[labels == name] += 3.0 * i
        head = fit(x, labels, None, TrainConfig(max_epochs=2), classes=classes)
        annotations = [Annotation(box(i * 20, 0, i * 20 + 9, 9), classes[i % len(classes)],
                                  id=f"{version}-{i}") for i in range(len(classes) + 1)]
        prediction = None
        if version == "old":
            coords = np.array([[0, 0], [224, 0]], np.int64)
            grid = TileGrid(coords=coords, grid_index=coords[:, ::-1] // 224,
                            grid_shape=(1, 2), tile_size=224.0, patch_size=112, mpp=1.0,
                            tissue_fraction=np.ones(2))
            prediction = TilePrediction(grid, classes, np.full((2, 2), 0.5, np.float32))
        file = core_project.ProjectFile(None, Settings(backbone=version,
                                                       composition=extractor.composition),
                                        {name: "#112233" for name in classes})
        return dict(annotations=annotations, file=file, head=head, extractor=extractor,
                    prediction=prediction)

    old, new = project("old"), project("new")
    core_project.save_project(root / "old.dfl", **old)

    def killed_save(folder, kill_at, when):
        """Fork; the child saves `new` into `folder`, killed at step `kill_at`."""
        pid = os.fork()
        if pid:
            return os.waitpid(pid, 0)[1]
        steps = 0
        def step(function):
            def wrapped(*args, **kwargs):
                nonlocal steps
                steps += 1
                mine = steps  # the call may make calls of its own
                if mine == kill_at and when == "before":
                    os.kill(os.getpid(), signal.SIGKILL)
                try:
                    return function(*args, **kwargs)
                finally:  # also when the call raised (a caller may expect it to)
                    if mine == kill_at and when == "after":
                        os.kill(os.getpid(), signal.SIGKILL)
            return wrapped
        os.replace = step(os.replace)
        shutil.rmtree = step(shutil.rmtree)
        pathlib.Path.unlink = step(pathlib.Path.unlink)
        try:
            core_project.save_project(folder, **new)
        finally:
            os._exit(min(steps, 250))  # no kill: the number of steps

    shutil.copytree(root / "old.dfl", root / "new.dfl")
    status = killed_save(root / "new.dfl", 0, "never")
    steps = os.waitstatus_to_exitcode(status)
    results = {}
    for kill_at in range(1, steps + 1):
        for when in ("before", "after"):
            folder = root / f"kill-{kill_at}-{when}.dfl"
            shutil.copytree(root / "old.dfl", folder)
            results[folder.name] = os.waitstatus_to_exitcode(killed_save(folder, kill_at, when))
    print(json.dumps({"steps": steps, "results": results}))
''')


def state(folder) -> tuple:
    """What a project holds, as a user would see it after opening it."""
    project = core_project.load_project(folder)
    assert not any(p.name.startswith((".saving", ".head")) for p in folder.iterdir()), \
        sorted(p.name for p in folder.iterdir())
    return (sorted(a.id for a in project.annotations), project.file.settings.backbone,
            None if project.head is None else list(project.head.classes),
            project.prediction is not None)


def test_a_save_killed_at_any_step_leaves_the_old_project_or_the_new_one(tmp_path):
    import json

    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    old, new = state(tmp_path / "old.dfl"), state(tmp_path / "new.dfl")
    assert old == (["old-0", "old-1", "old-2"], "old", ["a", "b"], True)
    assert new == (["new-0", "new-1", "new-2", "new-3"], "new", ["a", "b", "c"], False)
    assert report["steps"] >= 5 and len(report["results"]) == 2 * report["steps"]
    seen = set()
    for name, code in report["results"].items():
        assert code == -signal.SIGKILL, (name, code)
        found = state(tmp_path / name)
        assert found in (old, new), (name, found)
        seen.add(found == new)
        assert state(tmp_path / name) == found, "opening again changes nothing"
    assert seen == {False, True}, "some kills came before the commit, some after"


def test_a_full_disk_is_one_clear_message_and_the_old_project_survives(tmp_path,
                                                                       monkeypatch):
    from shapely.geometry import box

    from napari_dfl.core.annotations.annotation import Annotation
    from napari_dfl.core.features.settings import Settings
    from napari_dfl.core.heads import prediction_files

    folder = tmp_path / "p.dfl"
    file = core_project.ProjectFile(None, Settings(), {"a": "#112233"})
    first = [Annotation(box(0, 0, 9, 9), "a", id="first")]
    core_project.save_project(folder, annotations=first, file=file)
    before = sorted(p.name for p in folder.iterdir())

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prediction_files, "save_arrays", full)
    monkeypatch.setattr(core_project, "save_arrays", full)
    from napari_dfl.core.heads.tile_prediction import TilePrediction
    from napari_dfl.core.slides.tissue import TileGrid

    coords = np.zeros((1, 2), np.int64)
    grid = TileGrid(coords=coords, grid_index=coords, grid_shape=(1, 1), tile_size=224.0,
                    patch_size=112, mpp=1.0, tissue_fraction=np.ones(1))
    with pytest.raises(core_project.ProjectError, match="is full") as info:
        core_project.save_project(
            folder, annotations=[*first, Annotation(box(20, 0, 29, 9), "a", id="second")],
            file=file, prediction=TilePrediction(grid, ["a"], np.ones((1, 1), np.float32)))
    assert "nothing in it was changed" in str(info.value)
    assert "Traceback" not in str(info.value)
    assert sorted(p.name for p in folder.iterdir()) == before
    assert [a.id for a in core_project.load_project(folder).annotations] == ["first"]

    class SafetensorError(Exception):  # what safetensors raises, not an OSError
        pass

    def broken(*_args, **_kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: "
                              "StorageFull, message: \"No space left on device\" })")

    monkeypatch.setattr(core_project, "save_arrays", broken)
    with pytest.raises(core_project.ProjectError, match="is full"):
        core_project.save_project(
            folder, annotations=first, file=file,
            prediction=TilePrediction(grid, ["a"], np.ones((1, 1), np.float32)))
    assert sorted(p.name for p in folder.iterdir()) == before


def test_opening_a_project_replays_its_journal_and_saving_empties_it(tmp_path):
    from shapely.geometry import box

    from napari_dfl.core.annotations.annotation import Annotation
    from napari_dfl.core.features.settings import Settings

    folder = tmp_path / "p.dfl"
    file = core_project.ProjectFile(None, Settings(), {"a": "#112233"})
    first = [Annotation(box(0, 0, 9, 9), "a", id="first")]
    core_project.save_project(folder, annotations=first, file=file)
    journal = AnnotationJournal(folder, first, {"a": "#112233"})
    later = [*first, Annotation(box(20, 0, 29, 9), "a", id="later")]
    journal.record(later, {"a": "#112233"})  # then a crash: never autosaved
    project = core_project.load_project(folder)
    assert [a.id for a in project.annotations] == ["first", "later"]
    assert any("Recovered 1 annotation edits" in p for p in project.problems)
    core_project.save_project(folder, annotations=project.annotations, file=file)
    assert not (folder / JOURNAL_NAME).exists() and not (folder / COMMITTED_NAME).exists()
    assert [a.id for a in core_project.load_project(folder).annotations] == ["first", "later"]
