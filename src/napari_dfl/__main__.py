"""``python -m napari_dfl``: the command line, as ``napari-dfl``."""

import sys

from napari_dfl.cli import main

if __name__ == "__main__":
    sys.exit(main())
