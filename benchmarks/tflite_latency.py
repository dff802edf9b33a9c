"""TFLite latency of dense against slim 2-layer LSTM stacks, side by side.

For every size H (`--sizes`), builds a dense stack `Input((T, H))` ->
`LSTM(H)` -> `LSTM(H)` (both returning sequences) and slim stacks whose
hidden sizes are H times the `--ratios` (the default "iss" is 373/1500 and
315/1500, the sizes that ISS reached on the 1500-unit PTB model). A slim
stack's input width is its first hidden size (as when `shrink` also removes
the embedding columns that feed closed inputs), or H with
`--slim-input dense` (raw input features keep their width). Every stack is
exported with `keras_l0.export.to_tflite` (batch 1, `--seq-len` steps, one
fused `UNIDIRECTIONAL_SEQUENCE_LSTM` op per layer) and all files are timed
in one `export.benchmark` run, interleaved round-robin, one thread. The
table gives the median ms per call of the dense and slim files, the
latency ratio dense/slim, the FLOP ratio (`keras_l0.summary.flops_per_step`)
and how much of the FLOP ratio the latency achieves (target >= 0.8).

It then times "shrink + convert" end to end: a `GatedLSTM` 2x`--shrink-size`
model with a small `Dense` head, whose gates are set so that about 25% of
the input and hidden neurons stay open, goes through `keras_l0.shrink` and
`to_tflite` (building the gated model is not timed).

    KERAS_BACKEND=tensorflow python benchmarks/tflite_latency.py
    KERAS_BACKEND=tensorflow python benchmarks/tflite_latency.py --quick
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_l0  # noqa: E402
from keras_l0 import export  # noqa: E402
from keras_l0.summary import flops_per_step  # noqa: E402

ISS_RATIOS = (373 / 1500, 315 / 1500)
TARGET = 0.8
HEAD_UNITS = 10
# eval_gate(+10) == 1 and eval_gate(-10) == 0 exactly.
OPEN, CLOSED = 10.0, -10.0


def parse_ratios(text):
    ratios = []
    for item in text.split(","):
        if item == "iss":
            ratios.append(("iss", ISS_RATIOS))
            continue
        parts = tuple(float(r) for r in item.split(":"))
        if len(parts) == 1:
            parts *= 2
        if len(parts) != 2 or not all(0 < r <= 1 for r in parts):
            raise argparse.ArgumentTypeError(
                f"a ratio is 'iss', r or r1:r2 with 0 < r <= 1, got {item!r}"
            )
        ratios.append((item, parts))
    return ratios


def stack(input_width, units, seq_len):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((seq_len, input_width))]
    for n in units:
        layers.append(
            keras.layers.LSTM(
                n,
                return_sequences=True,
                # Weight values do not change the timing; the default
                # orthogonal initializer is slow at these sizes.
                recurrent_initializer="glorot_uniform",
            )
        )
    return keras.Sequential(layers)


def convert(model):
    start = time.perf_counter()
    flatbuffer = export.to_tflite(model)
    seconds = time.perf_counter() - start
    ops = export.op_names(flatbuffer)
    assert ops.count("UNIDIRECTIONAL_SEQUENCE_LSTM") == 2, ops
    assert not export.flex_ops(flatbuffer), ops
    return flatbuffer, seconds


def latency_table(args):
    files, flops, rows = {}, {}, []
    for size in args.sizes:
        dense = stack(size, (size, size), args.seq_len)
        key = f"{size}/dense"
        files[key], seconds = convert(dense)
        flops[key] = flops_per_step(dense)
        print(f"converted {key} in {seconds:.1f} s", flush=True)
        for label, ratios in args.ratios:
            units = tuple(max(1, round(size * r)) for r in ratios)
            width = units[0] if args.slim_input == "first" else size
            slim = stack(width, units, args.seq_len)
            name = f"{size}/{units[0]}x{units[1]}"
            files[name], seconds = convert(slim)
            flops[name] = flops_per_step(slim)
            rows.append((size, label, key, name))
            print(f"converted {name} ({label}) in {seconds:.1f} s", flush=True)
    print(
        f"timing {len(files)} files interleaved: {args.runs} runs, "
        f"{args.warmup} warm-up, 1 thread ...",
        flush=True,
    )
    ms = export.benchmark(files, runs=args.runs, warmup=args.warmup)
    header = (
        f"{'H':>5} {'ratio':>9} {'slim units':>11} {'dense ms':>9} "
        f"{'slim ms':>8} {'latency x':>9} {'FLOP x':>7} {'achieved':>8}"
    )
    print()
    print(f"seq_len {args.seq_len}, batch 1, slim input: {args.slim_input}")
    print(header)
    print("-" * len(header))
    for size, label, dense, slim in rows:
        speedup = ms[dense] / ms[slim]
        flop_ratio = flops[dense] / flops[slim]
        achieved = speedup / flop_ratio
        mark = "" if achieved >= TARGET else f"  < {TARGET}"
        print(
            f"{size:>5} {label:>9} {slim.split('/')[1]:>11} "
            f"{ms[dense]:>9.2f} {ms[slim]:>8.2f} {speedup:>9.2f} "
            f"{flop_ratio:>7.2f} {achieved:>8.2f}{mark}"
        )


def shrink_and_convert(size, seq_len, keep=0.25):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((seq_len, size))
    x = keras_l0.GatedLSTM(size, return_sequences=True)(inputs)
    x = keras_l0.GatedLSTM(size, return_sequences=True)(x)
    model = keras.Model(inputs, keras.layers.Dense(HEAD_UNITS)(x))
    rng = np.random.default_rng(0)
    for weight in model.weights:
        if weight.path.endswith("log_alpha"):
            is_open = rng.random(weight.shape) < keep
            weight.assign(np.where(is_open, OPEN, CLOSED).astype("float32"))
    start = time.perf_counter()
    slim = keras_l0.shrink(model)
    shrunk = time.perf_counter()
    flatbuffer = export.to_tflite(slim)
    done = time.perf_counter()
    units = [
        (layer.cell.kernel.shape[0], layer.units)
        for layer in slim.layers
        if isinstance(layer, keras.layers.LSTM)
    ]
    print()
    print(
        f"shrink + convert, GatedLSTM 2x{size} + Dense({HEAD_UNITS}), "
        f"~{keep:.0%} of the gates open -> LSTM (inputs, units) {units}, "
        f"{len(flatbuffer) / 1e6:.1f} MB:"
    )
    print(
        f"  shrink {shrunk - start:.1f} s + convert {done - shrunk:.1f} s = "
        f"{done - start:.1f} s"
    )
    diff = export.verify(flatbuffer, slim, num_samples=1)
    print(f"  max |TFLite - slim Keras| on one random input: {diff:.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[1500, 650, 200],
        help="comma-separated dense hidden sizes (default 1500,650,200)",
    )
    parser.add_argument("--seq-len", type=int, default=35)
    parser.add_argument(
        "--ratios",
        type=parse_ratios,
        default=parse_ratios("iss,0.5,0.25"),
        help="comma-separated slim/dense size ratios: 'iss', r, or r1:r2 "
        "for the two layers (default iss,0.5,0.25)",
    )
    parser.add_argument(
        "--slim-input", choices=("first", "dense"), default="first"
    )
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--shrink-size", type=int, default=1500)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="sizes 650,200 and 15 runs (the shrink timing stays)",
    )
    parser.add_argument("--skip-shrink", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.sizes = [650, 200]
        args.runs = 15
    latency_table(args)
    if not args.skip_shrink:
        shrink_and_convert(args.shrink_size, args.seq_len)


if __name__ == "__main__":
    main()
