#!/usr/bin/env bash
# Sets up .venv (first run only) and runs the main demo: train a GatedLSTM on a
# synthetic feature-selection task, shrink it, export it to TFLite, report.
# Extra arguments go to the demo (e.g. --out DIR, --quick, --seed N).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${KERAS_L0_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[export]"
export TF_CPP_MIN_LOG_LEVEL=3
exec "$venv/bin/python" examples/feature_selection_demo.py "$@"
