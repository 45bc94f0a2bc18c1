#!/usr/bin/env bash
# Set up napari-dfl on a fresh Debian/Ubuntu machine: system packages for Qt under Xvfb,
# a virtual environment in .venv, torch from the local wheels, the project and its extras.
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
APT_PACKAGES="xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 \
libxcb-xinerama0 libxcb-shape0 libxcb-randr0 libxcb-xkb1 libxcb-cursor0 libxkbcommon-x11-0 \
libegl1 libgl1 libgl1-mesa-dri libdbus-1-3 libfontconfig1"

missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "[setup] installing system packages:$missing"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q $missing >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q $missing >/dev/null; }
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
PIP="$VENV/bin/pip"
# pip, without the noise of the machine's unused extra index; a failure stops the setup
pip_install() {
  local output status=0
  output=$("$PIP" install -q "$@" 2>&1) || status=$?
  printf '%s\n' "$output" | grep -v -e "is ignored" -e '^$' >&2 || true
  if [ "$status" -ne 0 ]; then
    echo "[setup] pip install $* failed (exit $status): see the messages above" >&2
    exit "$status"
  fi
}
# torch and torchvision: the releases that lie on this machine's disk (see README).
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing torch 2.14.1 + torchvision 0.29.1 (local wheels, ~1 min)"
  pip_install torch==2.14.1 torchvision==0.29.1
fi
stamp="$VENV/.napari-dfl-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing napari-dfl with extras qt,test,presets,h5"
  pip_install -e ".[qt,test,presets,h5]" torch==2.14.1 torchvision==0.29.1
  "$VENV/bin/python" -c "import napari_dfl, napari, timm, PySide6" && touch "$stamp"
fi
version=$("$VENV/bin/python" -c 'import napari_dfl; print("napari-dfl", napari_dfl.__version__)')
echo "[setup] ready: $VENV ($version)"
