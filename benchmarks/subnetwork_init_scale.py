"""How much of a pruned layer's slower learning is its initial weight scale.

On `load_digits` (row by row, `budget_landing.digits_task`), Adam at its
default rate, about 500 steps, batch 16, for each seed it trains three plain
`LSTM(30)` + `Dense(10)` models and prints their test accuracy:

- `fresh`: initialised as Keras initialises an `LSTM(30)`;
- `sub`: 30 random units of an `LSTM(64)` + `Dense(10)`'s initial weights
  (what a gated `LSTM(64)` pruned to 30 units starts from);
- `sub_rescaled`: the same weights, each matrix (kernel, recurrent kernel,
  head) scaled to the standard deviation of a fresh `LSTM(30)`'s.

    python benchmarks/subnetwork_init_scale.py --seeds 3
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from budget_landing import digits_task  # noqa: E402


def lstm_model(x, units, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(x.shape[1:])
    hidden = keras.layers.LSTM(units)(inputs)
    return keras.Model(inputs, keras.layers.Dense(10)(hidden))


def accuracy(model, data, steps, batch_size):
    x, y, x_test, y_test = data
    epochs = -(-steps // -(-len(x) // batch_size))
    model.compile(
        keras.optimizers.Adam(),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    logits = model.predict(x_test, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == y_test))


def sub_weights(x, wide, units, seed):
    big = lstm_model(x, wide, seed)
    kernel, recurrent, bias = big.layers[1].get_weights()
    head, head_bias = big.layers[2].get_weights()
    kept = np.sort(np.random.default_rng(seed).permutation(wide)[:units])
    columns = np.concatenate([kept + block * wide for block in range(4)])
    return [kernel[:, columns], recurrent[kept][:, columns], bias[columns],
            head[kept], head_bias]  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--units", type=int, default=30)
    parser.add_argument("--wide", type=int, default=64)
    args = parser.parse_args()
    if args.seeds < 1 or not 0 < args.units <= args.wide:
        parser.error("need --seeds >= 1 and 0 < --units <= --wide")
    results = {"fresh": [], "sub": [], "sub_rescaled": []}
    for seed in range(args.seeds):
        data = digits_task(seed)
        x = data[0]
        fresh = lstm_model(x, args.units, seed)
        results["fresh"].append(
            accuracy(fresh, data, args.steps, args.batch_size)
        )
        sub = sub_weights(x, args.wide, args.units, seed)
        for name in ("sub", "sub_rescaled"):
            model = lstm_model(x, args.units, seed + 100)
            reference = model.get_weights()
            weights = [w.copy() for w in sub]
            if name == "sub_rescaled":
                for i in (0, 1, 3):
                    weights[i] *= reference[i].std() / weights[i].std()
            model.set_weights(weights)
            results[name].append(
                accuracy(model, data, args.steps, args.batch_size)
            )
        print(f"seed {seed}: " + ", ".join(
            f"{k} {v[-1]:.3f}" for k, v in results.items()), flush=True)
    print("mean: " + ", ".join(
        f"{k} {np.mean(v):.3f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
