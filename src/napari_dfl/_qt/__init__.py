"""The napari GUI of napari-dfl: views over a :class:`~napari_dfl.workflows.session.Session`.

The dock widget :class:`DFLWidget` ("Deep Feature Learning") is the npe2 ``widgets``
contribution. Nothing here imports timm or torchvision: the backbone runs in a child
process (see :mod:`napari_dfl.workflows.embedding.service`).
"""

from napari_dfl._qt.panel import DFLWidget

__all__ = ["DFLWidget"]
