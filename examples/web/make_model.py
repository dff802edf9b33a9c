"""Trains the demo's next-word model: a small gated LSTM language model on
Penn Treebank (the 10,000-word vocabulary), briefly, on the CPU.

Writes into `--out`:

- `gated.keras`: the trained model with its L0 gates (`keras_l0.GatedLSTM`),
  steered onto `--budget` of its LSTM parameters by
  `keras_l0.callbacks.BudgetController`; what `keras-l0-shrink` takes;
- `dense.keras`: the same network with every gate open, shrunk (nothing is
  removed): the plain LSTM model at full size, for the dense vs slim
  latency comparison (`keras-l0-shrink --export-ungated`);
- `vocabulary.txt`: one word a line, line `i` is token id `i`.

This is a demo model, trained for minutes (`--epochs` short epochs of
`--steps-per-epoch` batches, each window from zero states), not the PTB
study of `benchmarks/ptb/`; it prints its validation perplexity.
`make_model.sh` runs it, then the CLI and the manifest writer.

Example:

```
python examples/web/make_model.py --out examples/web/model/train \\
    --data-dir /path/to/ptb
```
"""

import argparse
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_l0  # noqa: E402
from keras_l0.datasets import ptb  # noqa: E402
from keras_l0.gate_copy import FIXED_LOG_ALPHA  # noqa: E402
from keras_l0.shrink import gated_layers  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(
        description="Train the web/Android demo's small gated PTB language "
        "model on the CPU."
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--data-dir",
        help=f"folder with ptb.{{train,valid,test}}.txt.gz (default: "
        f"${ptb.ENV_VAR})",
    )
    parser.add_argument("--embedding", type=int, default=128)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-steps", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps-per-epoch", type=int, default=40)
    parser.add_argument(
        "--budget",
        type=float,
        default=0.3,
        help="fraction of the LSTM parameters to keep (default: 0.3)",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=1.0,
        help="SGD learning rate (default: 1.0, Zaremba's; the gates' "
        "log alpha move at the pace of the optimizer, and Adam's "
        "normalized steps are too small to close them in minutes)",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser


def build_model(vocabulary_size, embedding, units, layers):
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocabulary_size, embedding, name="embedding")(
        tokens
    )
    for i in range(layers):
        x = keras_l0.GatedLSTM(
            units,
            return_sequences=True,
            input_gates=i == 0,
            # Larger than for a full PTB run, and gates starting nearer to
            # closed, so that BudgetController lands in minutes.
            l0_penalty=1e-4,
            initial_keep_probability=0.7,
            name=f"lstm{i + 1}",
        )(x)
    logits = keras.layers.Dense(vocabulary_size, name="logits")(x)
    return keras.Model(tokens, logits, name="ptb_demo")


def batches(ids, batch_size, num_steps, rng):
    """Endless random `(x, y)` windows of `num_steps` tokens."""
    limit = len(ids) - num_steps - 1
    while True:
        starts = rng.integers(0, limit, batch_size)
        x = np.stack([ids[s : s + num_steps] for s in starts])
        y = np.stack([ids[s + 1 : s + num_steps + 1] for s in starts])
        yield x.astype("int32"), y.astype("int32")


def perplexity(model, ids, num_steps, max_windows=60, batch_size=20):
    windows = ptb.Windows(ids, batch_size, num_steps)
    losses = []
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for k in range(min(len(windows), max_windows)):
        x, y = windows[k]
        losses.append(float(loss(y, model(x, training=False))))
    return math.exp(float(np.mean(losses)))


def dense_equivalent(model):
    """The network with every gate open, as plain Keras layers."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in gated_layers(copy):
        cell = layer.cell
        for variable in (cell.input_log_alpha, cell.hidden_log_alpha):
            if variable is not None:
                variable.assign(
                    np.full(variable.shape, FIXED_LOG_ALPHA, "float32")
                )
    return keras_l0.shrink(copy)


def main(argv=None):
    args = build_parser().parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    data = ptb.load(args.data_dir)
    os.makedirs(args.out, exist_ok=True)
    model = build_model(
        len(data.vocabulary), args.embedding, args.units, args.layers
    )
    model.compile(
        keras.optimizers.SGD(args.lr, global_clipnorm=5.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    controller = keras_l0.callbacks.BudgetController(
        args.budget,
        metric="params",
        warmup_epochs=max(1, args.epochs // 2),
        update_every=max(1, args.steps_per_epoch // 10),
        verbose=1,
    )
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    model.fit(
        batches(data.train, args.batch_size, args.num_steps, rng),
        steps_per_epoch=args.steps_per_epoch,
        epochs=args.epochs,
        callbacks=[controller],
        verbose=2,
    )
    seconds = time.perf_counter() - start
    slim = keras_l0.shrink(model)
    valid = perplexity(slim, data.valid, args.num_steps)
    kept = slim.count_params() / dense_equivalent(model).count_params()
    print(
        f"trained {seconds:.0f} s; validation perplexity {valid:.1f} "
        f"(first windows); parameters kept {kept:.1%}"
    )
    keras_l0.summary(model)
    model.save(os.path.join(args.out, "gated.keras"))
    dense_equivalent(model).save(os.path.join(args.out, "dense.keras"))
    with open(
        os.path.join(args.out, "vocabulary.txt"), "w", encoding="utf-8"
    ) as f:
        f.write("\n".join(data.vocabulary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
