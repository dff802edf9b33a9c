"""A gated LSTM language model on Penn Treebank, from training to `.tflite`.

The whole keras-l0 path on one task, top to bottom:

1. the data: `keras_l0.datasets.ptb` (10,000 words, Mikolov split);
2. the model: Zaremba's small stack, `Embedding` -> 2 x `GatedLSTM(200)` ->
   `Dense(10000)`, where a plain model has `keras.layers.LSTM`;
3. training with Zaremba's SGD and a `BudgetController` that keeps 30% of
   the LSTM parameters;
4. `keras_l0.shrink`: the slim model of plain Keras layers;
5. `keras_l0.export.to_tflite`: the LiteRT file, checked against Keras;
6. test perplexity of the gated model, the slim model and the file.

Each 35-token window starts from zero states (the study in
`benchmarks/ptb/` carries states across windows, as Zaremba does, and
reaches lower perplexities). An epoch is 1,327 steps of 20 x 35 tokens;
`--steps-per-epoch 20 --epochs 1` runs the whole path briefly.

Example:

```
export KERAS_L0_PTB_DIR=../shared/data/ptb
python examples/ptb/ptb_example.py --out runs/ptb-example
```
"""

import argparse
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_l0  # noqa: E402
from keras_l0.callbacks import BudgetController  # noqa: E402
from keras_l0.callbacks import model_size  # noqa: E402
from keras_l0.datasets import ptb  # noqa: E402

NUM_STEPS = 35
BATCH_SIZE = 20


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not positive")
    return value


def budget(text):
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not in (0, 1]")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--data-dir", help=f"PTB folder (default: ${ptb.ENV_VAR})"
    )
    parser.add_argument("--units", type=positive_int, default=200)
    parser.add_argument("--epochs", type=positive_int, default=6)
    parser.add_argument(
        "--steps-per-epoch", type=positive_int,
        help="windows per epoch (default: the whole training text)",
    )
    parser.add_argument(
        "--budget", type=budget, default=0.3,
        help="share of the LSTM parameters to keep (default 0.3)",
    )
    parser.add_argument(
        "--eval-windows", type=positive_int, default=100,
        help="test windows (of 35 tokens) run through the .tflite file",
    )
    return parser.parse_args(argv)


def build_model(units, seed=0):
    keras.utils.set_random_seed(seed)
    init = keras.initializers.RandomUniform(-0.1, 0.1, seed=seed)
    tokens = keras.Input((NUM_STEPS,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(
        ptb.VOCABULARY_SIZE, units, embeddings_initializer=init
    )(tokens)
    for i in range(2):
        x = keras_l0.GatedLSTM(
            units, return_sequences=True, seed=seed + i,
            kernel_initializer=init, recurrent_initializer=init,
        )(x)
    logits = keras.layers.Dense(
        ptb.VOCABULARY_SIZE, kernel_initializer=init, name="logits"
    )(x)
    return keras.Model(tokens, logits)


def windows(ids, batch_size=BATCH_SIZE):
    """`ids` as rows of 35 tokens (inputs) and the 35 tokens after each
    (targets), in the order of `BATCH_SIZE` parallel streams."""
    cut = ptb.Windows(ids, batch_size, NUM_STEPS)
    pairs = [cut[i] for i in range(len(cut))]
    x = np.concatenate([p[0] for p in pairs]).astype("int32")
    y = np.concatenate([p[1] for p in pairs]).astype("int32")
    return x, y


def nll(logits, targets):
    """The summed next-token negative log-likelihood."""
    logits = logits - logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(log_probs, targets[..., None], -1).sum()


def keras_perplexity(model, x, y):
    total = 0.0
    for start in range(0, len(x), BATCH_SIZE):
        logits = model.predict_on_batch(x[start : start + BATCH_SIZE])
        total += nll(np.asarray(logits), y[start : start + BATCH_SIZE])
    return math.exp(total / y.size)


def train(model, x, y, epochs, steps_per_epoch, budget):
    if steps_per_epoch:
        rows = steps_per_epoch * BATCH_SIZE
        x, y = x[:rows], y[:rows]
    steps = len(x) // BATCH_SIZE
    # Zaremba small: SGD at 1, clip norm 5, halved every epoch after the 4th.
    boundaries = [steps * e for e in range(4, epochs)]
    rates = [0.5**i for i in range(len(boundaries) + 1)]
    schedule = 1.0
    if boundaries:
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, rates
        )
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, global_clipnorm=5.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    controller = BudgetController(budget, verbose=1)
    model.fit(
        x, y, batch_size=BATCH_SIZE, epochs=epochs, shuffle=False,
        callbacks=[controller], verbose=2,
    )
    return controller


def litert_perplexity(flatbuffer, x, y):
    """Runs the file itself, one window per call, over the windows `x`."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=flatbuffer).get_signature_runner()
    name = list(runner.get_input_details())[0]
    total = 0.0
    for row, targets in zip(x, y):
        logits = list(runner(**{name: row[None]}).values())[0]
        total += nll(logits, targets[None])
    return math.exp(total / y.size)


def main(argv=None):
    args = parse_args(argv)
    try:
        data = ptb.load(args.data_dir)
    except (FileNotFoundError, ptb.PTBChecksumError) as e:
        print(f"{os.path.basename(__file__)}: error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    train_x, train_y = windows(data.train)
    test_x, test_y = windows(data.test)

    gated = build_model(args.units)
    controller = train(
        gated, train_x, train_y, args.epochs, args.steps_per_epoch,
        args.budget,
    )
    gated.save(os.path.join(args.out, "gated.keras"))

    slim = keras_l0.shrink(gated)
    slim.save(os.path.join(args.out, "slim.keras"))
    kept, dense = model_size(gated, "params")
    print(
        f"LSTM parameters kept: {kept:,.0f} of {dense:,.0f} "
        f"({kept / dense:.1%}; target {controller.target_size:,.0f})"
    )
    keras_l0.summary(gated)

    from keras_l0.export import to_tflite

    path = os.path.join(args.out, "slim.tflite")
    flatbuffer = to_tflite(slim, path)  # checked against Keras, else refused
    print(f"wrote {path} ({len(flatbuffer):,} bytes)")

    print(
        f"test perplexity ({len(test_x)} windows): gated "
        f"{keras_perplexity(gated, test_x, test_y):.2f}, slim "
        f"{keras_perplexity(slim, test_x, test_y):.2f}"
    )
    x, y = test_x[: args.eval_windows], test_y[: args.eval_windows]
    print(
        f"on the first {len(x)} windows: slim (Keras) "
        f"{keras_perplexity(slim, x, y):.2f}, slim.tflite (LiteRT) "
        f"{litert_perplexity(flatbuffer, x, y):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
