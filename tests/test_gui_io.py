"""File > Open and File > Save in a real napari viewer (under Xvfb): slides opened by path,
QuPath GeoJSON read into the panel's layers and written back with classes and colours."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.gui


def test_the_panel_opens_the_slide_from_the_layers_path(make_napari_viewer, pyramid_tiff_path,
                                                        sample_slide_path):
    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open(str(pyramid_tiff_path), plugin="napari-dfl")
    json.dumps(layer.metadata)  # plain values only: no open slide in the layer
    _, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    slide = widget.session.slide
    assert slide is not None and str(slide.path) == str(pyramid_tiff_path)
    assert slide.dimensions == (layer.metadata["width"], layer.metadata["height"])
    assert slide.read_region((0, 0), (64, 64)).shape == (64, 64, 3)

    # A second slide, picked and picked back: the first is opened once, not per pick.
    viewer.open(str(sample_slide_path), plugin="napari-dfl")
    combo = widget.slide_section.layer_combo
    combo.setCurrentText(sample_slide_path.name)
    assert str(widget.session.slide.path) == str(sample_slide_path)
    combo.setCurrentText(pyramid_tiff_path.name)
    assert widget.session.slide is slide

    # Its layer removed, the panel forgets it and works on the slide still shown.
    viewer.layers.remove(pyramid_tiff_path.name)
    assert str(widget.session.slide.path) == str(sample_slide_path)
    assert [combo.itemText(i) for i in range(combo.count())] == [sample_slide_path.name]
