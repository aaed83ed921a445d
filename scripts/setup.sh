#!/usr/bin/env bash
# One-time setup of a fresh Debian/Ubuntu machine (Python >= 3.11): the offline
# data and a virtual environment with ltjax and its test tools. Idempotent: run
# it again at any time.
#   bash scripts/setup.sh [VENV]           the newest releases this Python installs (default .venv)
#   bash scripts/setup.sh --oldest [VENV]  the oldest versions setup.cfg declares, pinned by
#                                          constraints/oldest.txt (CI's oldest end, .venv-oldest)
# The newest end (Python 3.13 in a Debian 13 root): bash scripts/newest.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
CONSTRAINTS=()
if [ "${1:-}" = --oldest ]; then
  CONSTRAINTS=(-c constraints/oldest.txt)
  shift
  VENV="${1:-.venv-oldest}"
else
  VENV="${1:-.venv}"
fi
PYTHON="${PYTHON:-python3}"

# 1. Fashion-MNIST (real data, no download at train time) from Debian's package.
if [ -d /usr/share/datasets/fashion-mnist ]; then
  echo "Fashion-MNIST: found in /usr/share/datasets/fashion-mnist"
elif command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist
else
  echo "No apt-get: put the four Fashion-MNIST IDX files in a directory and pass" \
       "--config.data.data_dir=DIR (see README.md, 'Data')." >&2
fi

# 2. The virtual environment with ltjax (editable) and the test extras.
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "${CONSTRAINTS[@]}" -e '.[test]'
echo "Ready: . $VENV/bin/activate"
