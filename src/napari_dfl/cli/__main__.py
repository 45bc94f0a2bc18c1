"""``python -m napari_dfl.cli``: the same as the ``napari-dfl`` command."""

import sys

from napari_dfl.cli import main

sys.exit(main())
