"""What each task of a multitask fine-tuning is: its datasets, field of view, classes, weight.

Tasks are given on the command line (``--task NAME=DATASET``, repeated; every task then
shares ``--patch-size`` and ``--zoom``) or in a JSON file (``--tasks FILE``), which may give
each task its own field of view, for example cells at 32 px and tissue at 224 px::

    [{"name": "nuclei", "datasets": ["crc.csv"], "patch_size": 32},
     {"name": "tissue", "datasets": ["slide.svs:slide.geojson"], "patch_size": 224,
      "weight": 1.0, "classes": ["tumour", "stroma"]}]

The file is plain JSON, read with checks; nothing in it is executed or unpickled.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from napari_dfl.core.finetune.task_head import FinetuneError

__all__ = ["TaskSpec", "parse_task_options", "read_task_file"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KEYS = {"name", "datasets", "patch_size", "zoom", "classes", "weight"}


@dataclass(frozen=True)
class TaskSpec:
    """One task: a name, its labelled datasets and how its patches are cut.

    Attributes:
        name: letters, digits, ``_``, ``-`` and ``.`` (it names the task's head on the card).
        datasets: labelled datasets (any form ``load_dataset`` takes).
        patch_size: patch side in pixels at ``zoom`` µm/px (None: the command's).
        zoom: µm/px of the patches (None: the command's).
        classes: accept only these classes (None: all).
        weight: the task's share of the loss, relative to the others'.

    """

    name: str
    datasets: tuple[str, ...]
    patch_size: int | None = None
    zoom: float | None = None
    classes: tuple[str, ...] | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise FinetuneError(f"invalid task name {self.name!r}: use up to 64 letters, "
                                "digits, _, - and . (starting with a letter or digit).")
        if not self.datasets:
            raise FinetuneError(f"task '{self.name}' has no dataset.")
        if self.patch_size is not None and not 16 <= self.patch_size <= 4096:
            raise FinetuneError(f"task '{self.name}': patch_size must be 16 to 4096 px, got "
                                f"{self.patch_size}.")
        if self.zoom is not None and not (math.isfinite(self.zoom) and self.zoom > 0):
            raise FinetuneError(f"task '{self.name}': zoom must be a positive µm/px, got "
                                f"{self.zoom}.")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise FinetuneError(f"task '{self.name}': weight must be a positive number, got "
                                f"{self.weight}.")


def parse_task_options(options: Sequence[str]) -> list[TaskSpec]:
    """Tasks from ``NAME=DATASET`` options; a name given twice gathers its datasets.

    Raises:
        FinetuneError: an option without ``=``, or a bad name.

    """
    gathered: dict[str, list[str]] = {}
    for option in options:
        name, sep, dataset = option.partition("=")
        if not sep or not name or not dataset:
            raise FinetuneError(f"--task takes NAME=DATASET (e.g. nuclei=crc.csv), got "
                                f"{option!r}.")
        gathered.setdefault(name.strip(), []).append(dataset.strip())
    return [TaskSpec(name, tuple(datasets)) for name, datasets in gathered.items()]


def _field(entry: dict, key: str, kinds: tuple[type, ...], where: str):
    value = entry.get(key)
    if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
        raise FinetuneError(f"{where}: '{key}' must be {' or '.join(k.__name__ for k in kinds)}"
                            f", got {value!r}.")
    return value


def _strings(value, key: str, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise FinetuneError(f"{where}: '{key}' must be a list of names or paths.")
    return tuple(value)


def read_task_file(path: str | os.PathLike) -> list[TaskSpec]:
    """Read and check a JSON task file (see the module docstring).

    Relative dataset paths are taken from the file's folder.

    Raises:
        FinetuneError: no such file, not JSON, not a list of task objects, unknown keys,
            values of the wrong kind, or two tasks of one name.

    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FinetuneError(f"task file {path} not found.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FinetuneError(f"task file {path} is not readable JSON: {exc}.") from None
    if not isinstance(data, list) or not data or not all(isinstance(e, dict) for e in data):
        raise FinetuneError(f"task file {path} must hold a JSON list of task objects "
                            '(e.g. [{"name": "nuclei", "datasets": ["crc.csv"]}]).')
    specs = []
    for number, entry in enumerate(data, 1):
        where = f"{path.name}, task {number}"
        unknown = sorted(set(entry) - _KEYS)
        if unknown:
            raise FinetuneError(f"{where}: unknown key(s) {unknown}; allowed: "
                                f"{sorted(_KEYS)}.")
        datasets = _strings(entry.get("datasets"), "datasets", where) or ()
        datasets = tuple(_from_folder(d, path.parent) for d in datasets)
        weight = _field(entry, "weight", (int, float), where)
        zoom = _field(entry, "zoom", (int, float), where)
        specs.append(TaskSpec(
            name=entry.get("name"), datasets=datasets,
            patch_size=_field(entry, "patch_size", (int,), where),
            zoom=None if zoom is None else float(zoom),
            classes=_strings(entry.get("classes"), "classes", where),
            weight=1.0 if weight is None else float(weight)))
    names = [spec.name for spec in specs]
    if len(set(names)) < len(names):
        raise FinetuneError(f"task file {path}: task names must differ, got {names}.")
    return specs


def _from_folder(dataset: str, folder: Path) -> str:
    """A dataset spec with its relative paths taken from ``folder``.

    ``a.svs:a.geojson`` and ``x.csv`` become paths in ``folder``; absolute paths are kept.
    """
    parts = dataset.split(":")
    if len(parts) > 2 or (len(parts) == 2 and len(parts[0]) == 1):  # C:\\... on Windows
        return dataset
    return ":".join(p if Path(p).is_absolute() else str(folder / p) for p in parts)
