"""Keep what numba compiles for UMAP on disk, so a new process does not compile it again.

umap-learn compiles its numba functions on the first call of every process (about 15-40 s
on 2 CPU cores for a 1,000-point map), and most of them are declared without numba's
``cache=True``, so nothing survives the process. :func:`keep_compiled_code` makes ``cache=True``
the default of ``numba.jit``/``numba.njit`` for the modules imported after it, with the cache in
one folder of ours: the next process loads the compiled code instead (measured: the first
1,000-point UMAP of a fresh process drops from ~37 s to ~6 s; ``docs/explorer.md``).

Functions numba cannot cache (closures that pynndescent builds at run time for large maps)
still compile once per process; numba says so in a warning, which is silenced here.
It is meant for processes napari-dfl owns (the projection child, the CLI), because it changes
numba's defaults for the whole process.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path

__all__ = ["keep_compiled_code"]

_PATCHED = "_napari_dfl_caches"


def keep_compiled_code(folder: str | os.PathLike) -> bool:
    """Make numba cache compiled functions in ``folder`` for modules imported from now on.

    Returns False (and changes nothing) when umap is already imported, since its functions
    are then compiled without a cache, or when the folder cannot be created; True otherwise.
    Calling it again is harmless.
    """
    if "umap" in sys.modules:
        return False
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    if "numba" not in sys.modules:
        os.environ["NUMBA_CACHE_DIR"] = str(folder)
    import numba
    from numba.core import config
    from numba.core.errors import NumbaWarning

    config.CACHE_DIR = str(folder)
    if not getattr(numba.njit, _PATCHED, False):
        numba.njit = _caching(numba.njit)
        numba.jit = _caching(numba.jit)
    warnings.filterwarnings("ignore", message=r".*[Cc]annot cache.*", category=NumbaWarning)
    return True


def _caching(decorator):
    """``decorator`` (numba.jit or numba.njit) with ``cache=True`` unless told otherwise."""
    @functools.wraps(decorator)
    def with_cache(*args, **kwargs):
        kwargs.setdefault("cache", True)
        return decorator(*args, **kwargs)

    setattr(with_cache, _PATCHED, True)
    return with_cache
