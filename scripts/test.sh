#!/usr/bin/env bash
# Sets up .venv (first run only) and the browser tooling of the web demo
# test, then runs the test suite: everything on the TensorFlow backend, the
# backend-independent layer, gate-training, shrink and callback tests again
# on JAX and on torch (where its CPU wheel is available).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${KERAS_L0_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --disable-pip-version-check -e ".[export,jax,test,plot,study]"
bash scripts/setup_browser.sh
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONHASHSEED=0
# Test files run in parallel, each whole on one worker (module fixtures
# are built once); KERAS_L0_TEST_WORKERS=0 runs them in this process.
workers=(-n "${KERAS_L0_TEST_WORKERS:-2}" --dist loadfile)
multi_backend=(
  tests/test_layers.py
  tests/test_callbacks.py
  tests/test_gate_training.py
  tests/test_width_init.py
  tests/test_width_pace.py
  tests/test_gate_copy.py
  tests/test_shrink.py
  tests/test_shrink_catalogue.py
  tests/test_shrink_properties.py
  tests/test_keras_compat.py
)
# torch: the same without the shrink catalogue and random-graph tests (run
# on JAX), to keep the whole run well under 30 minutes on 2 cores.
torch_tests=()
for f in "${multi_backend[@]}"; do
  case "$f" in *shrink_catalogue*|*shrink_properties*) ;; *) torch_tests+=("$f") ;; esac
done
for f in "${multi_backend[@]}"; do [ -f "$f" ] || { echo "missing $f" >&2; exit 1; }; done

echo "== tests on the tensorflow backend"
KERAS_BACKEND=tensorflow "$py" -m pytest -q "${workers[@]}" --durations=30 tests
echo "== backend-independent tests on the jax backend"
KERAS_BACKEND=jax "$py" -m pytest -q "${workers[@]}" --durations=15 "${multi_backend[@]}"
# torch: only the CPU build of 2.13.0 that this platform ships (a looser
# requirement would pull a multi-GB CUDA build); skipped, and said, if absent.
if "$py" -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>/dev/null; then
  echo "== backend-independent tests on the torch backend"
  KERAS_BACKEND=torch "$py" -m pytest -q "${workers[@]}" --durations=15 "${torch_tests[@]}"
else
  echo "== torch 2.13.0 CPU wheel not installable here: torch backend not tested"
fi
