#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the bundled sample slide: describe it, then
# embed its annotated tiles, measure and train a head, and predict the whole slide.
# With a display, napari then opens with the sample slide; without one (a server, CI),
# pass --no-gui or it is skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SAMPLE=sample_data/CMU-1-Small-Region.svs
echo "[demo] napari-dfl info $SAMPLE"
.venv/bin/napari-dfl info "$SAMPLE"
echo "[demo] napari-dfl demo --out out/demo  (embed, validate, train, predict the sample)"
.venv/bin/napari-dfl demo --out out/demo
if [ "${1:-}" = "--no-gui" ]; then exit 0; fi
if [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then
  echo "[demo] opening napari with the sample slide and the Deep Feature Learning panel"
  exec .venv/bin/napari --plugin napari-dfl "$SAMPLE" -w napari-dfl "Deep Feature Learning"
else
  echo "[demo] no display: skipping napari (run 'xvfb-run -a bash scripts/demo.sh' for a virtual one)"
fi
