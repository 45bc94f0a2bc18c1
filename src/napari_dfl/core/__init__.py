"""The napari-dfl core: numpy, torch and dask only; never Qt or napari."""
