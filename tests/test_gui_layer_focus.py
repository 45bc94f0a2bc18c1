"""Layers added while the user works keep the user's layer active, without switching views;
work asked for in a burst of job events runs once per turn of the event loop."""

from __future__ import annotations

import numpy as np

from napari_dfl._qt.layer_focus import keeping_focus, show_later


def _viewer_with_user_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.uint8), name="slide")
    other = viewer.add_points([[5.0, 5.0]], name="other points")
    mine = viewer.add_points([[10.0, 10.0]], name="my points")
    viewer.layers.selection.active = mine
    return viewer, mine, other


def test_a_new_layer_never_takes_the_selection_nor_switches_the_controls(make_napari_viewer):
    viewer, mine, _ = _viewer_with_user_layers(make_napari_viewer)
    controls = viewer.window._qt_viewer.controls
    mine_controls = controls.currentWidget()
    seen = []
    viewer.layers.selection.events.active.connect(lambda event: seen.append(event.value))
    viewer.layers.selection.events.changed.connect(lambda event: seen.append("changed"))

    with keeping_focus(viewer):
        added = viewer.add_image(np.zeros((8, 8, 4), np.uint8), rgb=True, name="output")
        # napari made it the active layer, but nobody was told
        assert viewer.layers.selection.active is added
    assert viewer.layers.selection.active is mine and list(viewer.layers.selection) == [mine]
    assert seen == [], "the selection went to the new layer and back in public"
    assert controls.currentWidget() is mine_controls
    assert added in viewer.layers


def test_removing_the_users_layer_inside_the_block_is_told(make_napari_viewer):
    viewer, mine, other = _viewer_with_user_layers(make_napari_viewer)
    viewer.layers.selection.add(other)  # two layers selected, none active
    assert viewer.layers.selection.active is None
    seen = []
    viewer.layers.selection.events.changed.connect(lambda event: seen.append(event))

    with keeping_focus(viewer):
        viewer.add_image(np.zeros((8, 8, 4), np.uint8), rgb=True, name="output")
        viewer.layers.remove(mine)
    assert set(viewer.layers.selection) == {other}  # what is left of the user's selection
    assert viewer.layers.selection.active is other
    assert seen, "a selection that did change must be told"


def test_show_later_shows_on_a_later_turn_of_the_event_loop(make_napari_viewer, qtbot):
    viewer, _, _ = _viewer_with_user_layers(make_napari_viewer)
    with keeping_focus(viewer):
        added = viewer.add_image(np.zeros((8, 8, 4), np.uint8), rgb=True, visible=False)

    def show():
        added.visible = True

    show_later(show)
    assert not added.visible
    qtbot.waitUntil(lambda: added.visible, timeout=2000)


def test_work_asked_for_many_times_in_one_turn_runs_once_on_the_next(qtbot):
    from napari_dfl._qt.next_turn import OncePerTurn

    runs = []
    refresh = OncePerTurn(lambda: runs.append(len(runs)))
    for _ in range(5):  # a burst of job events in one turn of the event loop
        refresh()
    assert runs == [], "not before the next turn"
    qtbot.waitUntil(lambda: runs == [0], timeout=2000)
    qtbot.wait(50)
    assert runs == [0], "once, however often it was asked"
    refresh()
    qtbot.waitUntil(lambda: runs == [0, 1], timeout=2000)  # asked again: runs again
