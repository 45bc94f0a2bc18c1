"""Exceptions and warnings of the napari-dfl core.

Every exception's text says what went wrong *and* what the user can do about it, so the
GUI can show it as a notification and the CLI can print it as one line.
"""

from __future__ import annotations


class DFLError(Exception):
    """Base class of all napari-dfl errors; its message is meant for the end user."""


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
