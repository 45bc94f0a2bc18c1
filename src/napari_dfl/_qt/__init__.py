"""The napari GUI of napari-dfl: thin Qt widgets over the headless core.

The dock widget :class:`DFLWidget` ("Deep Feature Learning") is the npe2 ``widgets``
contribution. Nothing here imports timm or torchvision: the backbone runs in a child
process (see :mod:`napari_dfl.workflows.extraction_service`).
"""

from napari_dfl._qt.widget import DFLWidget

__all__ = ["DFLWidget"]
