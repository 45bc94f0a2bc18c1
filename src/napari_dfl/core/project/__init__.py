"""A napari-dfl project folder: annotations, settings, head and prediction."""
