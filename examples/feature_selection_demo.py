"""keras-l0 end to end: select inputs and neurons, shrink, ship TFLite.

A synthetic task hides 4 informative features among 40 (the rest is noise,
`keras_l0.datasets.synthetic`). The demo trains a `keras_l0.GatedLSTM` under
`keras_l0.callbacks.BudgetController` (keep 10% of its parameters) and a
plain `keras.layers.LSTM` of the same size, both with Adam at its default
learning rate, and prints which input features and how many hidden units
the gates kept, next to the truth, with both test accuracies. The
controller sizes the hidden units; the raw input's gates change no size
(shrink keeps an input's width), and an L0 penalty of 1e-3 closes them.
Then it cuts the closed neurons out (`keras_l0.shrink`), exports the plain
LSTM ("dense") and the slim model to TFLite (`keras_l0.export`), checks
each file against its Keras model and times both.

Runs on CPU in under a minute (`--quick`: a few seconds, for smoke tests).

Usage:

```
python examples/feature_selection_demo.py [--epochs 30] [--seed 0]
    [--budget 0.1] [--out DIR] [--quick]
```
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_l0  # noqa: E402
from keras_l0.callbacks import BudgetController  # noqa: E402
from keras_l0.callbacks import GateMonitor  # noqa: E402
from keras_l0.callbacks import kept_neurons  # noqa: E402
from keras_l0.datasets.synthetic import feature_selection_task  # noqa: E402

UNITS = 64
BATCH_SIZE = 64
BUDGET = 0.1
# The controller sizes what shrink removes (hidden units here); the gates of
# a raw model input change no size, and λ alone closes them.
L0_PENALTY = 1e-3


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {value}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Train a GatedLSTM on a task with 4 informative inputs "
        "out of 40, shrink it and export it to TFLite."
    )
    parser.add_argument("--epochs", type=positive_int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--budget",
        type=fraction,
        default=BUDGET,
        help="fraction of the gated layer's parameters to keep "
        f"(keras_l0.callbacks.BudgetController; default {BUDGET})",
    )
    parser.add_argument(
        "--out", help="folder for the .tflite files (default: a temp dir)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small data set and 3 epochs (smoke test; poor accuracy)",
    )
    return parser.parse_args(argv)


def train(recurrent_layer, data, epochs, seed, callbacks=()):
    """Trains `Input -> recurrent_layer -> Dense`; returns the model, its
    test accuracy and the `History`."""
    x, y, x_test, y_test, _ = data
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(x.shape[1:], name="features")
    logits = keras.layers.Dense(int(y.max()) + 1, name="logits")(
        recurrent_layer(inputs)
    )
    model = keras.Model(inputs, logits)
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        callbacks=list(callbacks),
        verbose=0,
    )
    return model, model.evaluate(x_test, y_test, verbose=0)[1], history


def predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def accuracy(model, x, y):
    return float(np.mean(np.argmax(predict(model, x), -1) == y))


def report_selection(gated, gated_accuracy, dense_accuracy, history, data):
    layer = gated.layers[1]
    input_gate = keras.ops.convert_to_numpy(layer.cell.gates()[0])
    kept = np.flatnonzero(input_gate)
    informative = data[4]
    num_features = data[0].shape[-1]
    found = np.intersect1d(kept, informative)
    print(f"Input features kept:  {kept.tolist()}")
    print(f"Informative features: {informative.tolist()}")
    print(
        f"  {len(found)}/{len(informative)} informative kept, "
        f"{len(kept) - len(found)}/{num_features - len(informative)} noise "
        "kept"
    )
    print(f"Hidden units kept:    {kept_neurons(layer)[1]}/{UNITS}")
    for what in ("input", "hidden"):
        counts = history.history[f"{layer.name}/{what}_active"]
        print(f"  {what + ' neurons by epoch:':<25} {counts}")
    print(
        f"Test accuracy: gated LSTM {gated_accuracy:.3f}, plain LSTM "
        f"{dense_accuracy:.3f}"
    )


def deploy(gated, dense, data, out, quick):
    """Shrinks `gated`, exports it and `dense` to TFLite in `out`, checks
    and times both files, prints a report."""
    try:
        from keras_l0 import export
        from keras_l0.shrink import shrink
        from keras_l0.summary import summary
    except ImportError as e:
        print(
            f"\nShrink and TFLite export skipped: {e}. They need "
            "keras_l0.shrink, keras_l0.summary and keras_l0.export with "
            "TensorFlow and ai-edge-litert (pip install keras-l0[export])."
        )
        return
    x_test, y_test = data[2], data[3]
    print("\nShrinking the gated model:")
    slim = shrink(gated)
    summary(gated)
    gap = np.max(np.abs(predict(gated, x_test) - predict(slim, x_test)))
    print(f"Slim vs gated Keras model, max abs difference: {gap:.2e}")

    os.makedirs(out, exist_ok=True)
    models = {"dense": dense, "slim": slim}
    files, rows = {}, []
    for name, model in models.items():
        path = os.path.join(out, f"{name}.tflite")
        files[name] = export.to_tflite(model, path)
        rows.append(
            (
                name,
                model.count_params(),
                len(files[name]) / 1024,
                export.verify(files[name], model),
                accuracy(model, x_test, y_test),
            )
        )
    runs = 20 if quick else 200
    times = export.benchmark(files, runs=runs, warmup=runs // 10)

    print(f"\nTFLite files in {out} (batch 1, {x_test.shape[1]} steps):")
    print(
        f"{'model':<6} {'params':>8} {'KiB':>7} {'max |tflite-keras|':>19} "
        f"{'test acc':>9} {'ms/inference':>13}"
    )
    for name, params, kib, diff, acc in rows:
        print(
            f"{name:<6} {params:>8,} {kib:>7.1f} {diff:>19.2e} {acc:>9.3f} "
            f"{times[name]:>13.3f}"
        )
    print(
        f"Slim is {times['dense'] / times['slim']:.2f}x as fast as dense, "
        f"with {rows[0][1] / rows[1][1]:.1f}x fewer parameters.\n(Its LSTM "
        "still reads every input column: shrink keeps the width of a raw "
        "model input,\nwith zero kernel rows for the closed features.)"
    )


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    if args.quick:
        data = feature_selection_task(
            num_train=500, num_test=200, seed=args.seed
        )
        epochs = 3
    else:
        data = feature_selection_task(seed=args.seed)
        epochs = args.epochs
    print(
        f"Task: {data[0].shape[-1]} input features, {len(data[4])} "
        f"informative, {data[0].shape[1]} steps, {len(data[0])} training "
        f"sequences; {UNITS} units, {epochs} epochs."
    )
    gated, gated_accuracy, history = train(
        keras_l0.GatedLSTM(UNITS, l0_penalty=L0_PENALTY, seed=args.seed),
        data,
        epochs,
        args.seed,
        callbacks=[BudgetController(args.budget), GateMonitor()],
    )
    dense, dense_accuracy, _ = train(
        keras.layers.LSTM(UNITS, seed=args.seed), data, epochs, args.seed
    )
    report_selection(gated, gated_accuracy, dense_accuracy, history, data)
    if args.out is None:
        with tempfile.TemporaryDirectory() as out:
            deploy(gated, dense, data, out, args.quick)
        print("(The .tflite files lived in a temporary folder: see --out.)")
    else:
        deploy(gated, dense, data, args.out, args.quick)
    print(f"\nDone in {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
