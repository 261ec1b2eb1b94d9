#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install the bundle with its test tools.
# Usage: bash scripts/setup.sh            (venv in .venv; VENV=path to choose another)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch / torchvision are pinned in pyproject.toml (2.14.1 / 0.29.1)
"$VENV/bin/python" -m pip install --quiet -e ".[test]"
# MONAI Label 0.8.5 for the app in monailabel_app/ (README "MONAI Label"): its own script, because
# `pip install monailabel` would move numpy and torch off the pins above
VENV="$VENV" bash scripts/setup_monailabel.sh
# plastimatch is the independent DRR reference of the tests (Debian package); optional elsewhere.
if ! command -v plastimatch >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq plastimatch) >/dev/null 2>&1 \
      || echo "note: could not install plastimatch; its comparison test will be skipped"
  else
    echo "note: plastimatch not found (sudo apt-get install plastimatch); its comparison test will be skipped"
  fi
fi
echo "environment ready: $VENV"
