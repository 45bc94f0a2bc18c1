"""The extractor a user chose on their own labels: the default of the CLI and the panel.

``napari-dfl select --apply`` writes the winning backbone and composition, with the evidence
that chose it, to ``extractor.json`` in the user's configuration folder
(``~/.config/napari-dfl`` on Linux, or ``$NAPARI_DFL_CONFIG``). From then on ``train``,
``evaluate``, ``embed`` and the panel start from it instead of the built-in defaults; an
option given on the command line still wins, and ``napari-dfl select --reset`` removes the
file. The file is JSON, read with type checks; one that cannot be used is ignored with a
message that names it and says how to fix it, never with a traceback.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.slides.sampling import Composition, CompositionError
from napari_dfl.core.util.atomic import write_json
from napari_dfl.core.util.paths import default_config_dir

__all__ = ["PREFERRED_FILE", "Preferred", "clear_preferred", "load_preferred",
           "preferred_path", "save_preferred"]

PREFERRED_FILE = "extractor.json"
_FORMAT = "napari-dfl preferred extractor"


class Preferred:
    """A chosen backbone and composition, and why (``chosen``: what ``select`` measured)."""

    def __init__(self, backbone: str, composition: Composition,
                 chosen: dict[str, Any] | None = None) -> None:
        self.backbone = backbone
        self.composition = composition
        self.chosen = dict(chosen or {})

    def apply_to(self, settings: Settings) -> Settings:
        """``settings`` with this backbone and composition (other settings kept)."""
        return settings.with_(backbone=self.backbone, weights=None,
                              composition=self.composition)

    def describe(self) -> str:
        """One line: the choice, and the probe's score when recorded."""
        text = f"{self.backbone}, {self.composition.describe()}"
        score = self.chosen.get("balanced_accuracy")
        if isinstance(score, (int, float)):
            text += f" (chosen by napari-dfl select: balanced accuracy {score:.3f}"
            samples = self.chosen.get("samples")
            text += f" on {samples} samples)" if isinstance(samples, int) else ")"
        return text


def preferred_path() -> Path:
    """Where the choice is kept: ``$NAPARI_DFL_CONFIG/extractor.json`` or the user config."""
    return default_config_dir() / PREFERRED_FILE


def load_preferred() -> Preferred | None:
    """The user's choice, or None when there is none.

    Raises:
        DFLError: the file exists but cannot be used (the message names it and says to run
            ``napari-dfl select --reset`` or ``select --apply`` again).

    """
    path = preferred_path()
    if not path.is_file():
        return None
    advice = (f"{path} cannot be used ({{}}); run napari-dfl select --apply again, or "
              "napari-dfl select --reset to go back to the built-in defaults.")
    try:
        if path.stat().st_size > 1_000_000:
            raise ValueError("it is larger than any such file")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError("it is not a napari-dfl extractor choice")
        backbone = data.get("backbone")
        if not isinstance(backbone, str) or not backbone.strip():
            raise ValueError("it names no backbone")
        composition = Composition.from_dict(data.get("composition"))
        chosen = data.get("chosen") if isinstance(data.get("chosen"), dict) else {}
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError,
            CompositionError) as exc:
        raise DFLError(advice.format(exc)) from None
    return Preferred(backbone, composition, chosen)


def save_preferred(backbone: str, composition: Composition,
                   chosen: dict[str, Any] | None = None) -> Path:
    """Keep ``backbone`` and ``composition`` as the user's default (atomically); its path."""
    path = preferred_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"format": _FORMAT, "format_version": 1, "backbone": backbone,
              "composition": composition.to_dict(),
              "chosen": {**(chosen or {}),
                         "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}}
    write_json(path, record, indent=2)
    return path


def clear_preferred() -> bool:
    """Remove the choice; True when there was one."""
    path = preferred_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
