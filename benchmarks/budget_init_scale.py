"""Gated models initialised at the scale of their target width.

A `GatedLSTM(64)` pruned to a quarter of its parameters keeps about 30
units, with the initial weight scale of a 64-unit layer (Glorot and
orthogonal initialisers shrink with the width) and a head initialised for 64
inputs. In a short run it then learns less than a fresh `LSTM(30)`
(`budget_landing.py`'s `acc small`). This study trains, on `load_digits`
(`budget_landing.digits_task`) under `BudgetController(budget)`, per
optimizer and seed, the same gated model twice, side by side:

- `default`: Keras's initialisers;
- `target width`: the LSTM kernel, recurrent kernel and the head's kernel
  drawn with the variance that Keras gives a layer of the width `w` that
  holds `budget` of the parameters (kernel: Glorot with `(d + 4u) / (d +
  4w)` times the variance, recurrent kernel: orthogonal with gain
  `sqrt(u / w)`, head: Glorot with `(u + c) / (w + c)`), everything else
  the same.

It prints the mean test accuracy of both.

    python benchmarks/budget_init_scale.py --seeds 10
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
from budget_landing import train  # noqa: E402
from keras_l0.callbacks import BudgetController  # noqa: E402


def target_width(inputs, units, budget):
    """The width `w` of an LSTM on `inputs` features with `budget` of the
    parameters of one with `units` (4 (w (d + w) + w) = budget x dense)."""
    dense = units * (inputs + units) + units
    return (-(inputs + 1) + math.sqrt((inputs + 1) ** 2 + 4 * budget * dense)) / 2


def build(x, classes, units, seed, width=None):
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(x.shape[1:])
    lstm, head = {}, {}
    if width is not None:
        d = x.shape[-1]
        lstm = dict(
            kernel_initializer=keras.initializers.VarianceScaling(
                (d + 4 * units) / (d + 4 * width), "fan_avg", "uniform",
                seed=seed,
            ),
            recurrent_initializer=keras.initializers.Orthogonal(
                math.sqrt(units / width), seed=seed
            ),
        )
        head = dict(
            kernel_initializer=keras.initializers.VarianceScaling(
                (units + classes) / (width + classes), "fan_avg", "uniform",
                seed=seed,
            )
        )
    hidden = keras_l0.GatedLSTM(units, seed=seed, **lstm)(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes, **head)(hidden))


def run(optimizer, budget, steps, batch_size, units, seed, scaled):
    x, y, x_test, y_test = digits_task(seed)
    classes = int(y.max()) + 1
    width = target_width(x.shape[-1], units, budget) if scaled else None
    model = build(x, classes, units, seed, width)
    epochs = math.ceil(steps / math.ceil(len(x) / batch_size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(model, OPTIMIZERS[optimizer](), x, y, epochs, batch_size,
              [BudgetController(budget)])
    return accuracy(model, x_test, y_test)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--budget", type=float, default=0.25)
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS),
                        choices=list(OPTIMIZERS))
    args = parser.parse_args()
    if args.seeds < 1 or not 0 < args.budget <= 1 or args.units < 1:
        parser.error("need --seeds >= 1, 0 < --budget <= 1, --units >= 1")
    features = digits_task()[0].shape[-1]
    print(f"load_digits, GatedLSTM({args.units}), ~{args.steps} steps, batch "
          f"{args.batch_size}, BudgetController({args.budget}), mean of "
          f"{args.seeds} seed(s); target width "
          f"{target_width(features, args.units, args.budget):.1f}")
    print(f"{'optimizer':9} {'default':>8} {'target width':>12}")
    for name in args.optimizers:
        means = [
            np.mean([run(name, args.budget, args.steps, args.batch_size,
                         args.units, seed, scaled)
                     for seed in range(args.seeds)])
            for scaled in (False, True)
        ]
        print(f"{name:9} {means[0]:8.3f} {means[1]:12.3f}", flush=True)


if __name__ == "__main__":
    main()
