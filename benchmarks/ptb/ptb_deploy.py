"""The deployment table of PTB language models: file size, perplexity of
the file itself and latency per token, for every quantization.

For every `--model NAME=PATH` (a plain Keras 3 chain model, e.g. the dense
model and a shrunk gated `slim.keras`) it exports the streaming file
(`keras_l0.export.to_tflite(model, streaming=True, quantization=q)`: one
call per token, the LSTM states as inputs and outputs) at

- `float32` (`quantization="none"`), checked against Keras by `to_tflite`;
- `dynamic` (int8 weights, float activations);
- `float16` (float16 weights);
- `int8` (int8 weights and activations; calibrated on
  `--calibration-windows` windows of `--num-steps` consecutive tokens of the
  PTB *training* text, evenly spaced over it, each stepped from zero states
  with the states the float model reaches: `to_tflite`'s streaming
  calibration).

The quantized files are exported with `check=False` (`to_tflite` refuses a
file whose largest difference from Keras on random inputs exceeds its
tolerance); their row records that difference, the tolerance and whether it
was met (`check`), and their test perplexity shows what the difference
costs.

For every file it then

- runs the file itself with LiteRT (1 thread) through its `"step"`
  signature over the whole test text, batch 1, one token per call, the
  states fed back from zero at the first token: the test perplexity is
  exp(mean negative log-likelihood of the 82,429 next tokens, every test
  token but the first). `--max-tokens N` scores only the first N next
  tokens (smoke runs);
- puts beside it the Keras model's perplexity on exactly the same tokens
  (the model run over the same text in chunks of `--num-steps` tokens,
  states carried, batch 1);
- times all files of the run in one process with
  `keras_l0.export.benchmark` (LiteRT, 1 thread, random inputs, the files
  interleaved round by round, median of `--timing-runs` calls): one call of
  a streaming file is one token, so this is the median time per token.

It writes the files (`--out/NAME.QUANTIZATION.tflite`), `--out/deployment.json`
(a list of rows, written atomically) and prints a markdown table. Note the
LiteRT loop is one Python call per token: scoring the whole test text takes
about a minute per file.

Example (PTB small, the dense model and a shrunk gated model):

```
python benchmarks/ptb/ptb_deploy.py \\
    --model dense=runs/ptb-s9/small-dense/model.keras \\
    --model gated-0.3=runs/ptb-s9/small-gated-0.3/slim.keras \\
    --out runs/ptb-s9/deploy
```
"""

import argparse
import math
import os
import platform
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import ptb_lm  # noqa: E402
from ptb_lm import UsageError  # noqa: E402

PROG = os.path.basename(__file__)
RESULTS_NAME = "deployment.json"
# Row label -> to_tflite quantization.
QUANTIZATIONS = {
    "float32": "none",
    "dynamic": "dynamic",
    "float16": "float16",
    "int8": "int8",
}
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")

keras = export = ptb = None


def import_libraries():
    """Keras, TensorFlow and LiteRT, once the arguments are checked."""
    global keras, export, ptb
    import keras
    from keras_l0 import export
    from keras_l0.datasets import ptb


def _model_arg(text):
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    if not NAME_PATTERN.fullmatch(name):
        raise argparse.ArgumentTypeError(
            f"NAME may hold letters, digits and _.+- only, got {name!r}"
        )
    return name, path


def _quantizations(text):
    labels = [label.strip() for label in text.split(",") if label.strip()]
    unknown = [label for label in labels if label not in QUANTIZATIONS]
    if unknown or not labels:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(QUANTIZATIONS)}, "
            f"got {text!r}"
        )
    return list(dict.fromkeys(labels))


def build_parser():
    parser = ptb_lm.ArgumentParser(
        prog=PROG, description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--model",
        action="append",
        type=_model_arg,
        required=True,
        help="NAME=PATH of a plain Keras 3 chain model.keras (repeat)",
    )
    parser.add_argument(
        "--data-dir",
        help="folder with ptb.{train,valid,test}.txt.gz (default: "
        "$KERAS_L0_PTB_DIR)",
    )
    parser.add_argument(
        "--out",
        default=os.path.join("runs", "ptb-deploy"),
        help="folder for the .tflite files and deployment.json",
    )
    parser.add_argument(
        "--quantizations",
        type=_quantizations,
        default=list(QUANTIZATIONS),
        help="comma-separated subset of float32,dynamic,float16,int8 "
        "(default: all)",
    )
    parser.add_argument(
        "--calibration-windows",
        type=ptb_lm.positive_int,
        default=200,
        help="int8: training-text windows to calibrate on (default 200)",
    )
    parser.add_argument(
        "--num-steps",
        type=ptb_lm.positive_int,
        default=35,
        help="tokens per calibration window and per Keras chunk (default 35)",
    )
    parser.add_argument(
        "--max-tokens",
        type=ptb_lm.positive_int,
        help="score only the first N next tokens of the test text",
    )
    parser.add_argument(
        "--timing-runs",
        type=ptb_lm.positive_int,
        default=1000,
        help="timed calls per file (default 1000)",
    )
    parser.add_argument(
        "--timing-warmup",
        type=int,
        default=50,
        help="untimed calls per file first (default 50)",
    )
    return parser


def check_args(args):
    names = [name for name, _ in args.model]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(f"--model: repeated NAME {', '.join(repeated)}")
    for name, path in args.model:
        if not os.path.isfile(path):
            raise UsageError(f"--model {name}: no such file {path}")
    if args.timing_warmup < 0:
        raise UsageError("--timing-warmup must be >= 0")


def load_model(name, path):
    """A plain (ungated) chain model, or a UsageError."""
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UsageError(
            f"--model {name}: cannot load {path}: {type(e).__name__} {first}"
        )
    try:
        layers = ptb_lm.chain_layers(model)
    except ValueError as e:
        raise UsageError(f"--model {name}: {e}")
    if any(map(ptb_lm.is_gated, layers)):
        raise UsageError(
            f"--model {name}: a gated model; shrink it first (ptb_shrink.py "
            "writes slim.keras)"
        )
    if not any(map(ptb_lm.is_recurrent, layers)):
        raise UsageError(f"--model {name}: no recurrent layer to stream")
    return model


def _nll_sum(logits, targets):
    """Summed next-token negative log-likelihood, in float64."""
    logits = np.asarray(logits, np.float64).reshape(len(targets), -1)
    top = logits.max(axis=-1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=-1))
    return float(np.sum(log_z - logits[np.arange(len(targets)), targets]))


def keras_stream_nll(model, ids, num_steps):
    """Summed NLL of `ids[1:]` given the tokens before, by the Keras model
    run over `ids[:-1]` in chunks of `num_steps`, states carried, batch 1.

    Returns:
        `(summed nll, number of predicted tokens)`.
    """
    carried = ptb_lm.CarriedStateModel(model, 1)
    x = np.asarray(ids[:-1], np.int32)
    y = np.asarray(ids[1:], np.int64)
    total = 0.0
    for start in range(0, len(x), num_steps):
        chunk = x[None, start : start + num_steps]
        logits = carried.predict_on_batch(chunk)
        total += _nll_sum(logits, y[start : start + num_steps])
    return total, len(y)


def litert_stream_nll(flatbuffer, ids):
    """Summed NLL of `ids[1:]` by a streaming file, run by LiteRT itself:
    one `"step"` call per token, 1 thread, the output states fed back,
    zero states at the first token.

    Returns:
        `(summed nll, number of predicted tokens)`.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=bytes(flatbuffer), num_threads=1)
    runner = interpreter.get_signature_runner(export.STREAMING_SIGNATURE_KEY)
    inputs = runner.get_input_details()
    outputs = runner.get_output_details()
    tokens = [n for n, d in inputs.items() if np.issubdtype(d["dtype"], np.integer)]
    if len(tokens) != 1:
        raise ValueError(f"Expected one token input, found {sorted(inputs)}")
    (token_name,) = tokens
    state_names = [n for n in inputs if n != token_name]
    (logits_name,) = [n for n in outputs if n not in state_names]
    states = {
        n: np.zeros(inputs[n]["shape"], np.float32) for n in state_names
    }
    ids = np.asarray(ids)
    total = 0.0
    token = np.zeros((1, 1), np.int32)
    for t in range(len(ids) - 1):
        token[0, 0] = ids[t]
        got = runner(**{token_name: token}, **states)
        states = {n: got[n] for n in state_names}
        total += _nll_sum(got[logits_name].reshape(1, -1), ids[t + 1 : t + 2])
    return total, len(ids) - 1


def calibration_windows(train_ids, count, num_steps):
    """`count` windows of `num_steps` consecutive training tokens, evenly
    spaced over the text, as a list of `(1, num_steps)` int32 batches."""
    last = len(train_ids) - num_steps
    if last < 0:
        raise UsageError(f"--num-steps {num_steps}: the training text is shorter")
    starts = np.linspace(0, last, count).astype(np.int64)
    return [
        np.asarray(train_ids[s : s + num_steps], np.int32)[None] for s in starts
    ]


def export_variant(model, label, representative):
    """`(flatbuffer, check)` of one streaming file."""
    quantization = QUANTIZATIONS[label]
    kwargs = dict(streaming=True, quantization=quantization)
    if quantization == "int8":
        kwargs["representative_dataset"] = representative
    if quantization == "none":
        flatbuffer = export.to_tflite(model, **kwargs)  # checked, else raises
        return flatbuffer, "passed (to_tflite check)"
    flatbuffer = export.to_tflite(model, check=False, **kwargs)
    diff, scale = export.verify(
        flatbuffer, model, streaming=True, return_scale=True
    )
    allowed = export.tolerance(quantization, True, scale)
    check = dict(
        max_abs_diff=diff,
        largest_keras_output=scale,
        tolerance=allowed,
        within_tolerance=bool(diff <= allowed),
    )
    return flatbuffer, check


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def format_table(rows):
    lines = [
        "| model | quantization | bytes | test ppl (LiteRT) | Keras ppl | "
        "change | ms / token | tokens | check |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        check = row["check"]
        if isinstance(check, dict):
            check = (
                f"diff {check['max_abs_diff']:.3g} "
                f"{'<=' if check['within_tolerance'] else '>'} "
                f"tolerance {check['tolerance']:.3g}"
            )
        lines.append(
            f"| {row['model']} | {row['quantization']} | {row['bytes']:,} | "
            f"{row['test_perplexity']:.3f} | "
            f"{row['keras_test_perplexity']:.3f} | "
            f"{100 * row['perplexity_change']:+.2f}% | "
            f"{row['ms_per_token']:.3f} | {row['tokens']:,} | {check} |"
        )
    return "\n".join(lines)


def run(args):
    import_libraries()
    models = {name: load_model(name, path) for name, path in args.model}
    try:
        data = ptb.load(args.data_dir)
    except (FileNotFoundError, ptb.PTBChecksumError) as e:
        raise UsageError(str(e))
    ids = np.asarray(data.test)
    if args.max_tokens is not None:
        ids = ids[: args.max_tokens + 1]
    representative = None
    if "int8" in args.quantizations:
        representative = calibration_windows(
            data.train, args.calibration_windows, args.num_steps
        )
    for name, model in models.items():
        vocabulary = int(model.outputs[0].shape[-1])
        if vocabulary != len(data.vocabulary):
            raise UsageError(
                f"--model {name}: {vocabulary} output words, the PTB "
                f"vocabulary has {len(data.vocabulary)}"
            )
    os.makedirs(args.out, exist_ok=True)
    rows, files = [], {}
    for name, model in models.items():
        started = time.perf_counter()
        total, tokens = keras_stream_nll(model, ids, args.num_steps)
        keras_ppl = math.exp(total / tokens)
        print(
            f"{name}: Keras test ppl {keras_ppl:.3f} over {tokens:,} tokens "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        for label in args.quantizations:
            started = time.perf_counter()
            flatbuffer, check = export_variant(model, label, representative)
            path = os.path.join(args.out, f"{name}.{label}.tflite")
            ptb_lm.write_atomically(
                path, lambda p, b=flatbuffer: _write_bytes(p, b)
            )
            exported = time.perf_counter() - started
            total, tokens = litert_stream_nll(flatbuffer, ids)
            ppl = math.exp(total / tokens)
            files[f"{name}/{label}"] = flatbuffer
            rows.append(
                dict(
                    model=name,
                    quantization=label,
                    to_tflite_quantization=QUANTIZATIONS[label],
                    path=path,
                    bytes=len(flatbuffer),
                    test_perplexity=ppl,
                    keras_test_perplexity=keras_ppl,
                    perplexity_change=ppl / keras_ppl - 1,
                    tokens=tokens,
                    check=check,
                    calibration_windows=(
                        args.calibration_windows if label == "int8" else None
                    ),
                )
            )
            print(
                f"{name} {label}: {len(flatbuffer):,} bytes, LiteRT test ppl "
                f"{ppl:.3f} (exported in {exported:.0f} s, scored in "
                f"{time.perf_counter() - started - exported:.0f} s)",
                flush=True,
            )
    latency = export.benchmark(
        files, runs=args.timing_runs, warmup=args.timing_warmup, num_threads=1
    )
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
    for row in rows:
        row["ms_per_token"] = latency[f"{row['model']}/{row['quantization']}"]
        row["timing"] = (
            f"LiteRT 1 thread, median of {args.timing_runs} interleaved calls, "
            f"{machine}"
        )
    ptb_lm.write_json(os.path.join(args.out, RESULTS_NAME), rows)
    print(format_table(rows), flush=True)
    return rows


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        check_args(args)
        run(args)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
