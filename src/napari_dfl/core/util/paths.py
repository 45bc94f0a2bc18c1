"""Where napari-dfl keeps its files by default: the user's cache and data folders.

One policy for the CLI, the panel and the API. Each folder can be moved with an environment
variable (a shared cache on a cluster, a test's temporary folder); otherwise it lies in the
platform's user folders (``platformdirs``: ``~/.cache/napari-dfl`` and
``~/.local/share/napari-dfl`` on Linux). Nothing is ever written next to a slide by default.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "napari-dfl"
#: Environment variables that move each default folder.
STORES_ENV = "NAPARI_DFL_STORES"
BACKBONES_ENV = "NAPARI_DFL_BACKBONES"
AUTOSAVE_ENV = "NAPARI_DFL_AUTOSAVE"
CONFIG_ENV = "NAPARI_DFL_CONFIG"


def _override(variable: str) -> Path | None:
    value = os.environ.get(variable, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """The user cache folder of napari-dfl (recomputable files: embeddings, projections)."""
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def data_dir() -> Path:
    """The user data folder of napari-dfl (files a user would miss: annotations, backbones)."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_store_dir() -> Path:
    """Where embedding stores go unless a folder is chosen: ``$NAPARI_DFL_STORES`` or cache."""
    return _override(STORES_ENV) or cache_dir() / "stores"


def default_backbone_dir() -> Path:
    """Where ``finetuned:<name>`` backbones are looked up: ``$NAPARI_DFL_BACKBONES`` or data."""
    return _override(BACKBONES_ENV) or data_dir() / "backbones"


def default_autosave_dir() -> Path:
    """Where the panel autosaves annotations per slide: ``$NAPARI_DFL_AUTOSAVE`` or data."""
    return _override(AUTOSAVE_ENV) or data_dir() / "autosave"


def default_config_dir() -> Path:
    """Where the user's choices are kept: ``$NAPARI_DFL_CONFIG`` or the user config folder."""
    return _override(CONFIG_ENV) or Path(platformdirs.user_config_dir(APP_NAME,
                                                                      appauthor=False))
