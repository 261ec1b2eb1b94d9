#!/usr/bin/env bash
# Install MONAI Label 0.8.5 into the project's environment without moving its pins (README,
# "MONAI Label"). `pip install monailabel` would move numpy to 1.26 (numpymaxflow, pydicom-seg) and
# pull sam2 with another torch, so: the server's own dependencies from monailabel_app/requirements.txt,
# constrained to the versions already installed; monailabel and pydicom-seg without their
# dependencies; then the pydicom 3 alias pydicom-seg needs (monailabel_app/compat/).
# Usage: bash scripts/setup_monailabel.sh      (VENV=path for another environment than .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PIP=("$VENV/bin/python" -m pip)
[ -x "$VENV/bin/python" ] || { echo "error: $VENV/bin/python not found; run bash scripts/setup.sh first" >&2; exit 1; }
before=$("${PIP[@]}" freeze --exclude-editable)
frozen=$(mktemp)
trap 'rm -f "$frozen"' EXIT
printf '%s\n' "$before" > "$frozen"
"${PIP[@]}" install --quiet -c "$frozen" -r monailabel_app/requirements.txt
"${PIP[@]}" install --quiet --no-deps monailabel==0.8.5 pydicom-seg==0.4.1
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp monailabel_app/compat/duolift_pydicom_uid_alias.py "$site/"
echo "import duolift_pydicom_uid_alias" > "$site/duolift_pydicom_uid_alias.pth"
# the pins must not have moved
after=$("${PIP[@]}" freeze --exclude-editable)
changed=$(comm -23 <(printf '%s\n' "$before" | sort) <(printf '%s\n' "$after" | sort) || true)
if [ -n "$changed" ]; then
  echo "error: installing MONAI Label changed these packages: $changed" >&2
  exit 1
fi
"$VENV/bin/python" -c "import monailabel, pydicom_seg; print('monailabel', monailabel.__version__)"
