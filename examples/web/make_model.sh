#!/usr/bin/env bash
# Makes the demo's model files with the package's own CLI:
#   1. trains a small gated LSTM language model on PTB (10k words) on the CPU
#      for a few minutes (make_model.py; BudgetController, 30% of the LSTM
#      parameters by default), saving gated.keras, dense.keras (all gates
#      open: the dense baseline) and vocabulary.txt;
#   2. keras-l0-shrink gated.keras --streaming        -> model/slim/
#      keras-l0-shrink dense.keras --streaming --export-ungated -> model/dense/
#      each with <name>.manifest.json and vocabulary.txt beside every .tflite.
# Usage: bash examples/web/make_model.sh [OUT (default examples/web/model)] [make_model.py options...]
# PTB folder: $KERAS_L0_PTB_DIR (required).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$here/model}"
[ $# -gt 0 ] && shift
py="${PYTHON:-$repo/.venv/bin/python}"
shrink="$(dirname "$py")/keras-l0-shrink"
[ -x "$shrink" ] || shrink="keras-l0-shrink"
export KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=3
data=()
[ -n "${KERAS_L0_PTB_DIR:-}" ] && data=(--data-dir "$KERAS_L0_PTB_DIR")

"$py" "$here/make_model.py" --out "$out/train" "${data[@]}" "$@"
lm=(--streaming --force --vocabulary "$out/train/vocabulary.txt"
    --special-token "end_of_sentence=<eos>" --special-token "unknown=<unk>")
"$shrink" "$out/train/gated.keras" -o "$out/slim" "${lm[@]}"
"$shrink" "$out/train/dense.keras" -o "$out/dense" --export-ungated "${lm[@]}"
echo "model files in $out/slim and $out/dense; serve with: python $here/serve.py"
