"""The user's order in a fresh process: render a viewer, open the panel, click Extract.

With Mesa's llvmpipe, importing timm (torchvision.ops, triton) after a viewer rendered
segfaults (exit 139); the panel keeps the backbone in a child process and triton out of
the GUI process. This must be tested in an interpreter that never imported timm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from napari_dfl.core.features.store import EmbeddingStore

pytestmark = [pytest.mark.gui, pytest.mark.slow]
# Run as its own interpreter: written to a temporary file by the test.
SCRIPT = r'''"""The user's order of events in a fresh process: render, open the panel, Extract.

Run by tests/test_gui_user_order.py as its own interpreter (a test process that imported
timm before the viewer existed would hide the Mesa/llvmpipe segfault). Prints one JSON line.
Usage: python user_order.py STORE_DIR
"""

from __future__ import annotations

import json
import sys
import time


def main(store_dir: str) -> int:
    import napari
    from napari.utils.notifications import notification_manager
    from qtpy.QtWidgets import QApplication

    notes: list[str] = []
    notification_manager.notification_ready.connect(lambda n: notes.append(str(n.message)))
    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-dfl", "cmu1_small_region")
    app = QApplication.instance()
    for _ in range(20):  # let the canvas draw with OpenGL (llvmpipe under Xvfb)
        app.processEvents()
        time.sleep(0.05)
    screenshot = viewer.screenshot(canvas_only=True, flash=False)

    _, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    form = widget.form
    form.patch_spin.setValue(112)
    form.zooms_edit.setText("0.5")
    form.zooms_edit.editingFinished.emit()
    form.gray_check.setChecked(False)
    form.store_edit.setText(store_dir)
    form.store_edit.editingFinished.emit()
    widget.classes.name_edit.setText("tissue")
    widget.classes.add_button.click()
    widget.regions.add_rectangles([[1200, 800], [1500, 1100]])
    widget.classes.name_edit.setText("glass")
    widget.classes.add_button.click()
    widget.points.add([[300, 300], [2900, 2100]])
    import threading

    warm_up = [t for t in threading.enumerate() if t.name == "napari-dfl-warm-up"]
    for thread in warm_up:
        thread.join(60)
    dynamo_before_train = "torch._dynamo" in sys.modules
    widget.extract_button.click()
    started = widget.session.busy
    deadline = time.monotonic() + 240
    while widget.session.busy and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    widget.train_button.click()  # a torch optimizer in the GUI process, after rendering
    while widget.session.busy and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    samples = widget.session.samples
    result = {
        "rendered_mean": float(screenshot[..., :3].mean()),
        "started": bool(started),
        "busy_at_end": widget.session.busy,
        "n_samples": 0 if samples is None else len(samples),
        "coords": [] if samples is None else samples.coords.tolist(),
        "trained": widget.session.head is not None,
        "timm_in_gui": "timm" in sys.modules,
        "triton_blocked": sys.modules.get("triton", "absent") is None,
        "warm_up_threads": len(warm_up),
        "dynamo_before_train": dynamo_before_train,
        "notifications": notes,
    }
    print(json.dumps(result), flush=True)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
'''


def test_extract_after_the_viewer_rendered_survives(tmp_path, qapp):
    assert os.environ.get("DISPLAY"), "pytest-xvfb provides a DISPLAY"
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb"}
    script = tmp_path / "user_order.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rendered_mean"] > 30, "the viewer did not render"
    assert result["started"] and not result["busy_at_end"]
    assert not result["timm_in_gui"]
    assert result["triton_blocked"], "triton must stay out of the GUI process"
    # the optimizer warm-up ran in its thread when the panel opened, before any Train
    assert result["warm_up_threads"] <= 1 and result["dynamo_before_train"]
    assert result["n_samples"] > 3 and result["trained"]
    [store_path] = list(tmp_path.glob("*.zarr"))
    store = EmbeddingStore.open(store_path)
    assert not store.missing(np.asarray(result["coords"])).any()
