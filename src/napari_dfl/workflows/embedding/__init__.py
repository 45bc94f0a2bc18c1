"""Where the backbone runs: in this process, or in the long-lived extraction child.

:class:`~napari_dfl.workflows.embedding.local.Embedder` is what jobs ask for a slide's store
and its missing embeddings; :class:`~.local.LocalEmbedder` computes here (the CLI, scripts,
dask workers, the child itself), :class:`~.child.ChildEmbedder` in the child of
:mod:`.service` (the napari panel: its process never imports timm). Both use one store
folder, so either finds what the other wrote.
"""
