#!/usr/bin/env bash
# One-step set-up on a fresh Debian/Ubuntu machine (idempotent):
#   1. the system libraries PyQt6 needs (only those missing; needs root or password-less sudo),
#   2. a virtual environment in .venv (override with HMAVD_VENV),
#   3. the project, editable, with its test extras and the pinned torch/torchvision pair.
# Set HMAVD_SKIP_APT=1 to skip step 1.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${HMAVD_VENV:-.venv}
PY=${PYTHON:-python3}

if [ "${HMAVD_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
  pkgs=(libegl1 libgl1 libopengl0 libglib2.0-0 libdbus-1-3 libfontconfig1 libfreetype6 libxkbcommon0
        libxkbcommon-x11-0 libx11-xcb1 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0
        libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xkb1)
  missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
    echo "install.sh: installing system packages: ${missing[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch/torchvision pinned to a compatible pair (open_clip needs torchvision).
"$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1" -e ".[test]"
echo "install.sh: ready ($VENV)"
