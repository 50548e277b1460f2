#!/usr/bin/env bash
# Run vizoo's fast test tier against the oldest versions setup.py allows.
#
#   bash scripts/test_older_versions.sh [VENV_DIR] [PYTEST_ARGS...]
#
# Creates a virtual environment (default: /tmp/vizoo-older-venv; reused when it exists),
# installs the older pinned set below plus vizoo with its test extras (`pip install -e ".[test]"`,
# the pins given as constraints), and runs `python -m pytest -q -m "not slow"` from the
# repository root. Extra arguments go to pytest (e.g. test files, to run a subset). The
# download is about 1 GB. The newest set (tensorflow 2.21, keras 3.15, tensorflow-probability
# 0.25, tf-keras 2.21) is the development environment's and is tested by the normal run.
set -euo pipefail

VENV="${1:-/tmp/vizoo-older-venv}"
shift || true
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"

# The older set: the lower ends of setup.py's ranges (each may be overridden from the environment).
# Keras stays at 3.15: with Keras 3.8 and 3.10-3.14 (on tensorflow 2.18, 2.19, 2.20), the gradient of a
# Dense layer applied to a rank-3 or rank-4 input corrupts the heap on a CPU with oneDNN on
# ("corrupted double-linked list", SIGABRT); vizoo's models apply Dense layers to [batch, k, ...]
# samples everywhere. Keras 3.15 on the same tensorflow versions does not.
TENSORFLOW="${TENSORFLOW:-2.18.1}"
KERAS="${KERAS:-3.15.1}"
TFP="${TFP:-0.25.0}"
TF_KERAS="${TF_KERAS:-2.18.0}"
TENSORBOARD="${TENSORBOARD:-2.18.0}"
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
printf '%s\n' "tensorflow==$TENSORFLOW" "keras==$KERAS" "tensorflow-probability==$TFP" \
    "tf-keras==$TF_KERAS" "tensorboard==$TENSORBOARD" > "$CONSTRAINTS"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" -e "$ROOT[test]"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as metadata
for name in ("tensorflow", "keras", "tensorflow-probability", "tf-keras", "numpy", "tensorflow-datasets"):
    print(f"{name}=={metadata.version(name)}")
PY

cd "$ROOT"
# PYTHONPATH: the tests import this checkout's vizoo (and tests/ as a package) whatever else is installed.
PYTHONPATH="$ROOT" exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m "not slow" "$@"
