"""Gated models with and without `BudgetController(width_init=...)` (or
`width_pace=...`).

A `GatedLSTM(64)` pruned to a quarter of its parameters keeps about 30
units, with the initial weight scale of a 64-unit layer (Glorot and
orthogonal initialisers shrink with the width) and a head initialised for 64
inputs. In a short run it then learns less than a fresh `LSTM(30)`
(`budget_landing.py`'s `acc small`). The controller's `width_init` (on by
default) rescales a new model's LSTM kernel, recurrent kernel and head kernel
to the variance Keras gives the kept width (`keras_l0.callbacks.width_init`).
This study trains, on `load_digits` (`budget_landing.digits_task`) under
`BudgetController(budget)`, per optimizer and seed, the same gated model
twice, side by side, with `width_init=False` and `True`, and prints the mean
test accuracy of both, the plain `LSTM(units)`'s trained as long, and the
factors applied.

`--switch width_pace` compares `width_pace=False` and `True` instead (both
with `width_init`): as units close, the controller scales the steps on the
weights that read them by dense / kept units, so the kept network learns at
the dense network's pace (`keras_l0.callbacks.width_pace`).
`--every-update` runs the controller's 100 updates per `fit` (its default
keeps them at least 25 steps apart: 20 here).

    python benchmarks/budget_init_scale.py --seeds 10
    python benchmarks/budget_init_scale.py --switch width_pace --seeds 10 \
        --every-update
"""

import argparse
import math
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_l0  # noqa: E402
from budget_landing import OPTIMIZERS  # noqa: E402
from budget_landing import accuracy  # noqa: E402
from budget_landing import digits_task  # noqa: E402
from budget_landing import plain_accuracy  # noqa: E402
from budget_landing import train  # noqa: E402
from keras_l0.callbacks import BudgetController  # noqa: E402


def build(x, classes, units, seed):
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(x.shape[1:])
    hidden = keras_l0.GatedLSTM(units, seed=seed)(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes)(hidden))


def run(optimizer, budget, steps, batch_size, units, seed, switch, on,
        every_update=False):
    """Test accuracy, and the factors `width_init` applied."""
    x, y, x_test, y_test = digits_task(seed)
    model = build(x, int(y.max()) + 1, units, seed)
    epochs = math.ceil(steps / math.ceil(len(x) / batch_size))
    controller = BudgetController(budget, **{switch: on})
    if every_update:
        controller.min_update_gap = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(model, OPTIMIZERS[optimizer](), x, y, epochs, batch_size,
              [controller])
    return accuracy(model, x_test, y_test), controller.rescaled


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--budget", type=float, default=0.25)
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS),
                        choices=list(OPTIMIZERS))
    parser.add_argument("--switch", choices=["width_init", "width_pace"],
                        default="width_init")
    parser.add_argument("--every-update", action="store_true")
    args = parser.parse_args()
    if args.seeds < 1 or not 0 < args.budget <= 1 or args.units < 1:
        parser.error("need --seeds >= 1, 0 < --budget <= 1, --units >= 1")
    print(f"load_digits, GatedLSTM({args.units}), ~{args.steps} steps, batch "
          f"{args.batch_size}, BudgetController({args.budget}), mean of "
          f"{args.seeds} seed(s)")
    head = f"{args.switch}=False"
    print(f"{'optimizer':9} {head:>16} {'True':>6} {'plain':>6}")
    for name in args.optimizers:
        results = [
            [run(name, args.budget, args.steps, args.batch_size, args.units,
                 seed, args.switch, on, args.every_update)
             for seed in range(args.seeds)]
            for on in (False, True)
        ]
        means = [np.mean([acc for acc, _ in arm]) for arm in results]
        plain = np.mean([
            plain_accuracy("digits", name, args.steps, args.batch_size, seed,
                           args.units)
            for seed in range(args.seeds)
        ])
        print(f"{name:9} {means[0]:16.3f} {means[1]:6.3f} {plain:6.3f}",
              flush=True)
    factors = ", ".join(f"{path} x{f:.3f}"
                        for path, f in results[1][0][1].items())
    print(f"factors applied: {factors or 'none'}")


if __name__ == "__main__":
    main()
