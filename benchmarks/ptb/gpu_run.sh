#!/usr/bin/env bash
# The PTB GPU study in device commands: benchmarks/ptb/gpu_run.sh medium|large|tiny
#
# One call: installs the Keras wheels of .whl/ when Keras is missing (the GPU
# machine has JAX but no Keras or TensorFlow), starts the study
# (ptb_reproduce.py with the configuration's recipe below) detached with
# `setsid` and a deadline (--time-limit), waits for it at most WAIT_LIMIT
# seconds, then packs whatever finished into $OUT (ptb_collect.py pack:
# results.json, logs.tar.gz, float16 slim gated weights) and exits 0.
# If the study is still running when the wait ends, the same call issued
# again at once (the machine is released 30 s after a command ends) waits
# for it and collects; if it stopped at its deadline, the same call resumes
# it from the checkpoints on this machine's disk ($PTB_RUNS, /tmp/ptb-runs,
# not $OUT). A finished study is only collected again.
#
# Data: the three ptb.*.txt.gz files in .ptb-data/ of the checkout (git
# ignored; carry it): mkdir -p .ptb-data && cp ../shared/data/ptb/*.gz .ptb-data/
# Environment: OUT (required), PTB_RUNS, STUDY_LIMIT (s, the study's
# deadline from its start), WAIT_LIMIT (s, this call's wait), PYTHON,
# STUDY_EXTRA (more ptb_reproduce.py arguments), MPS=1 (start the CUDA MPS
# daemon first; the one device call that tried it, on 2026-12-05, lost its
# machine after 7 minutes with nothing back, cause not known).
set -u
CONFIG=${1:?usage: gpu_run.sh medium|large|tiny}
T0=$(date +%s)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
PY=${PYTHON:-python3}
OUT=${OUT:?set OUT to the output folder}
RUNS=${PTB_RUNS:-/tmp/ptb-runs}
say() { echo "gpu_run [$(($(date +%s) - T0)) s]: $*"; }

# The Keras version of the wheels, e.g. 3.15.1 from .whl/keras-3.15.1-py3-none-any.whl.
WANT=$(ls .whl/keras-*.whl 2>/dev/null | sed -E 's/.*keras-([^-]+)-.*/\1/' | head -n 1)
if ! "$PY" -c "import keras, sys; sys.exit(bool('$WANT') and keras.__version__ != '$WANT')" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl || exit 2
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    say "installed $(ls .whl | tr '\n' ' ')"
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export KERAS_BACKEND=jax
export KERAS_L0_PTB_DIR=${KERAS_L0_PTB_DIR:-$ROOT/.ptb-data}
# Several JAX processes share the GPU: no process takes 75% of its memory.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export TF_CPP_MIN_LOG_LEVEL=3
for split in train valid test; do
    if [ ! -f "$KERAS_L0_PTB_DIR/ptb.$split.txt.gz" ]; then
        say "no $KERAS_L0_PTB_DIR/ptb.$split.txt.gz: copy the data into .ptb-data/ and carry it"
        exit 2
    fi
done

STEPS=--extra=--steps-per-execution=10
case "$CONFIG" in
medium)
    # Dense medium on a 24-epoch schedule (lr 1 for 6, then x0.74; Zaremba's
    # 39 epochs with the direct-design runs beside it do not leave room for
    # the pruned runs in 15 minutes of device time); the direct-design
    # models of the three budgets' uniform sizes start with it, on the same
    # schedule; then gates on the dense model at three budgets, shrink,
    # magnitude at the kept sizes.
    ARGS=(--configs medium --budgets medium=0.25,0.15,0.1 --from-dense 4
        --gated-lr 0.25 --l0-penalty 5e-7 --finetune-epochs 2 --direct budget
        --dense-schedule medium=24,6,0.74 --jobs 10 "$STEPS")
    STUDY_LIMIT=${STUDY_LIMIT:-640}
    WAIT_LIMIT=${WAIT_LIMIT:-545}
    ;;
large)
    # Dense large on a 40-epoch schedule (Zaremba's is 55, which does not fit
    # in 15 minutes of device time with the pruned runs); the direct-design
    # model at the ISS sizes starts with it; then gates on the dense model at
    # 0.10 (about the ISS sizes' LSTM parameters), 0.07 and 0.04, magnitude at
    # the ISS sizes, and magnitude at the kept sizes where time allows.
    ARGS=(--configs large --budgets large=0.1,0.07,0.04 --from-dense 4
        --gated-lr 0.25 --l0-penalty 2e-7 --finetune-epochs 2
        --dense-schedule large=40,12,0.82 --direct-sizes large=1500,373,315
        --magnitude-sizes large=1500,373,315 --jobs 10 "$STEPS")
    STUDY_LIMIT=${STUDY_LIMIT:-680}
    WAIT_LIMIT=${WAIT_LIMIT:-555}
    ;;
tiny)
    # CPU test of this script: the whole pipeline on the tiny configuration.
    ARGS=(--configs tiny --budgets tiny=0.5 --from-dense 1 --finetune-epochs 1
        --direct budget --magnitude-sizes tiny=8,8,8
        --dense-schedule tiny=2,1,0.5 --max-steps 3 --jobs 6)
    STUDY_LIMIT=${STUDY_LIMIT:-600}
    WAIT_LIMIT=${WAIT_LIMIT:-900}
    ;;
*)
    say "unknown configuration $CONFIG (medium, large or tiny)"
    exit 2
    ;;
esac
# shellcheck disable=SC2206
ARGS+=(--out "$RUNS" ${STUDY_EXTRA:-})

mkdir -p "$RUNS"
PIDFILE=$RUNS/study.pid
gpu_ok() {
    timeout 45 "$PY" -c "import jax, sys; jax.numpy.ones(8).sum().block_until_ready(); sys.exit(jax.devices()[0].platform != 'gpu')" 2>/dev/null
}
running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
status() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['status'])" \
    "$RUNS/progress.json" 2>/dev/null || echo none; }

if running; then
    say "study already running (pid $(cat "$PIDFILE")): waiting for it"
elif [ "$(status)" = complete ]; then
    say "study complete: collecting only"
else
    if [ "$CONFIG" != tiny ]; then
        # The jobs share one GPU; with MPS=1 their kernels run side by side
        # under CUDA MPS, unless JAX then sees no GPU (MPS stopped). With no
        # GPU at all the study does not start.
        if [ "${MPS:-0}" = 1 ] && command -v nvidia-cuda-mps-control >/dev/null \
            && nvidia-cuda-mps-control -d; then
            if gpu_ok; then
                say "CUDA MPS daemon started"
            else
                echo quit | nvidia-cuda-mps-control
                say "JAX saw no GPU under CUDA MPS: MPS stopped"
            fi
        fi
        gpu_ok || { say "JAX sees no GPU: not starting the study"; exit 2; }
    fi
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
    say "starting the study (status $(status)), deadline ${STUDY_LIMIT} s: ptb_reproduce.py ${ARGS[*]} --time-limit $STUDY_LIMIT"
    rm -f "$PIDFILE"
    # Lower priority: the machine's own agent must keep answering while the
    # jobs load every core.
    setsid nohup nice -n 10 sh -c 'echo $$ > "$0"; exec "$@"' "$PIDFILE" \
        "$PY" benchmarks/ptb/ptb_reproduce.py "${ARGS[@]}" --time-limit "$STUDY_LIMIT" \
        >>"$RUNS/study.out" 2>&1 </dev/null &
    for _ in $(seq 50); do [ -s "$PIDFILE" ] && break; sleep 0.1; done
fi

SHOWN=0
while running && [ $(($(date +%s) - T0)) -lt "$WAIT_LIMIT" ]; do
    sleep 2
    LINES=$(wc -l <"$RUNS/study.out")
    if [ "$LINES" -gt "$SHOWN" ]; then
        tail -n +"$((SHOWN + 1))" "$RUNS/study.out" | grep -E '^\[|^study|^incomplete|rror' || true
        SHOWN=$LINES
    fi
done
tail -n +"$((SHOWN + 1))" "$RUNS/study.out" | grep -E '^\[|^study|^incomplete|rror' || true
for log in "$RUNS"/*.log; do
    [ -f "$log" ] && echo "$(basename "$log"): $(grep -E 'epoch|ppl' "$log" | tail -n 1)"
done

mkdir -p "$OUT"
"$PY" benchmarks/ptb/ptb_collect.py pack "$RUNS" "$OUT" || say "collect FAILED"
ls -l "$OUT"
if running; then
    say "incomplete: the study is still running (pid $(cat "$PIDFILE")); issue the same call again at once (e.g. with WAIT_LIMIT=200) to wait for it and collect"
elif [ "$(status)" = complete ]; then
    say "complete"
else
    say "incomplete (status $(status)): resume with the same call on this machine (checkpoints in $RUNS); $(grep '^incomplete' "$RUNS/study.out" | tail -n 1)"
fi
exit 0
