#!/usr/bin/env bash
# MONAI Label's server for the bundle's app, from the bundle's virtual environment, without
# activating it (MONAI Label starts its worker processes by the name `python` / `monailabel`,
# so the environment's bin/ must come first on PATH):
#
#   bash scripts/monailabel_server.sh --studies eval/studies --conf models all --host 127.0.0.1 --port 8000
#
# Every argument goes to `monailabel start_server`; the app is monailabel_app/ of this bundle
# ($DUOLIFT_APP names another copy of it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ ! -x "$root/.venv/bin/monailabel" ]]; then
    echo "error: $root/.venv/bin/monailabel not found: run bash scripts/setup.sh (it installs MONAI Label)" >&2
    exit 1
fi
export PATH="$root/.venv/bin:$PATH"
exec monailabel start_server --app "${DUOLIFT_APP:-$root/monailabel_app}" "$@"
