"""Exceptions and warnings of the napari-dfl core.

Every exception's text says what went wrong *and* what the user can do about it, so the
GUI can show it as a notification and the CLI can print it as one line.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class DFLError(Exception):
    """Base class of all napari-dfl errors; its message is meant for the end user."""


class Cancelled(DFLError):
    """The user cancelled a job; what it finished (committed embeddings, a trained head) is kept.

    Every cancellable job of the core and the workflows raises this class (or a subclass),
    so that the panel and the CLI recognise a cancel by its type.
    """


class SlideError(DFLError):
    """A slide could not be opened or read."""


class SlideNotFoundError(SlideError, FileNotFoundError):
    """The slide path does not exist."""


class NotATiffError(SlideError):
    """The file is not a TIFF-family file (another reader may handle it)."""


class CorruptSlideError(SlideError):
    """The file looks like a slide but is truncated or damaged."""


class UnsupportedSlideError(SlideError):
    """The file is a valid image that napari-dfl does not analyse (16-bit, one channel...)."""


class MissingMppWarning(UserWarning):
    """The slide has no physical pixel size; magnification-based steps need one."""


class MissingDependencyError(DFLError, ImportError):
    """An optional dependency needed for this operation is not installed."""


def require_module(name: str, purpose: str, extra: str) -> ModuleType:
    """Import the optional module ``name``, or say what needs it and which extra installs it.

    Raises:
        MissingDependencyError: e.g. "Writing AnnData (.h5ad) files needs the anndata
            package: pip install napari-dfl[anndata]".
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the {name} package: pip install napari-dfl[{extra}]") from exc


def one_line(exc: BaseException) -> str:
    """A one-line message for an exception: the core's own text, or type and text."""
    text = " ".join(str(exc).split())
    if isinstance(exc, DFLError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
