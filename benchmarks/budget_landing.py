"""Where `BudgetController` lands, per optimizer, with its default settings.

For each optimizer at its Keras default learning rate (and SGD at 1), each
budget and each task, trains a `GatedLSTM` under `BudgetController(budget)`
for about `--steps` optimizer steps and prints: the kept size over the target
(`reached`), test accuracy of the gated model (inference gates) next to the
plain `keras.layers.LSTM` trained the same way and next to a plain LSTM of the
gated model's kept sizes (its kept input features, its kept units) trained
from scratch the same way (`acc small`: what a network of the reached size
learns in these steps), next to a random sub-network of the plain LSTM(64)
of the same kept sizes, gates fixed at 0/1 from the first step
(`keras_l0.fixed_gate_model`) and trained the same way (`acc sub`: what
those units of the large network's initialisation learn), and `fit` time of the gated model with and without
the controller (same model, same steps, timed side by side in this run).
With `--seeds N` every figure is the mean over N seeds (each seed draws the
train/test split and the initial weights; 500-step accuracies vary by 1-3
points from seed to seed).

    python benchmarks/budget_landing.py            # full table (minutes)
    python benchmarks/budget_landing.py --quick    # one task, one budget
"""

import argparse
import math
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_l0  # noqa: E402
from keras_l0.callbacks import BudgetController  # noqa: E402
from keras_l0.callbacks import model_size  # noqa: E402
from keras_l0.datasets.synthetic import feature_selection_task  # noqa: E402

OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(),
    "adamw": lambda: keras.optimizers.AdamW(),
    "rmsprop": lambda: keras.optimizers.RMSprop(),
    "sgd-m0.9": lambda: keras.optimizers.SGD(momentum=0.9),
    "sgd-lr1": lambda: keras.optimizers.SGD(1.0),
}


def synthetic_task(seed=0):
    """2000 sequences of 8 steps x 16 features; the label is the sign of
    the sum of two of the features: plain LSTM(64) learns it in 500 steps
    with every optimizer here (test accuracy about 0.9-0.95)."""
    x, y, x_test, y_test, _ = feature_selection_task(
        num_train=2000, num_test=1000, timesteps=8, num_features=16,
        num_informative=2, seed=seed,
    )
    return x, y, x_test, y_test


def digits_task(seed=0):
    """scikit-learn's `load_digits`, row by row: 8 steps x 8 features."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")
    y = digits.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return x[:1200], y[:1200], x[1200:], y[1200:]


TASKS = {"synthetic": synthetic_task, "digits": digits_task}


def build(x, classes, gated, units=64, seed=0, **gate_kwargs):
    keras.backend.clear_session()  # Fits late in the run as fast as early.
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(x.shape[1:])
    if gated:
        h = keras_l0.GatedLSTM(units, seed=seed, **gate_kwargs)(inputs)
    else:
        h = keras.layers.LSTM(units, seed=seed)(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes)(h))


def train(model, optimizer, x, y, epochs, batch_size, callbacks=()):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,
        callbacks=list(callbacks),
    )
    return time.perf_counter() - start


def accuracy(model, x, y):
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == y))


def run_case(task, optimizer_name, budget, steps, batch_size, metric="params",
             seed=0):
    """Gated model under `BudgetController(budget)`; `budget=None`: the same
    model without a controller (the default λ alone)."""
    x, y, x_test, y_test = TASKS[task](seed)
    classes = int(y.max()) + 1
    epochs = math.ceil(steps / math.ceil(len(x) / batch_size))
    model = build(x, classes, gated=True, seed=seed)
    if budget is None:
        seconds = train(
            model, OPTIMIZERS[optimizer_name](), x, y, epochs, batch_size
        )
        kept, dense = model_size(model, metric)
        return dict(reached=kept / dense, seconds=seconds,
                    accuracy=accuracy(model, x_test, y_test))
    controller = BudgetController(budget, metric=metric)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seconds = train(
            model, OPTIMIZERS[optimizer_name](), x, y, epochs, batch_size,
            [controller],
        )
    kept, _ = model_size(model, metric)
    accuracy_gated = accuracy(model, x_test, y_test)
    gated = next(l for l in model.layers if isinstance(l, keras_l0.GatedLSTM))
    z_in, z_h = (
        None if z is None else np.asarray(keras.ops.convert_to_numpy(z)) > 0
        for z in gated.cell.gates(training=False)
    )
    columns = np.flatnonzero(z_in) if z_in is not None else slice(None)
    units = max(1, int(z_h.sum()))
    small = build(x[..., columns], classes, gated=False, units=units,
                  seed=seed)
    train(small, OPTIMIZERS[optimizer_name](), x[..., columns], y, epochs,
          batch_size)
    small_accuracy = accuracy(small, x_test[..., columns], y_test)
    plain = build(x, classes, gated=False, seed=seed)
    lstm = plain.layers[1].name
    drawn = np.random.default_rng(seed).permutation(z_h.size)[:units]
    sub = keras_l0.fixed_gate_model(
        plain, {lstm: np.sort(drawn)},
        None if z_in is None else {lstm: np.flatnonzero(z_in)},
    )
    train(sub, OPTIMIZERS[optimizer_name](), x, y, epochs, batch_size)
    return dict(
        small_accuracy=small_accuracy,
        sub_accuracy=accuracy(sub, x_test, y_test),
        reached=kept / controller.target_size,
        accuracy=accuracy_gated,
        seconds=seconds,
        own=controller.seconds,
        warned=any(issubclass(w.category, UserWarning) for w in caught),
        steps=epochs * math.ceil(len(x) / batch_size),
    )


def plain_accuracy(task, optimizer_name, steps, batch_size, seed=0, units=64):
    x, y, x_test, y_test = TASKS[task](seed)
    epochs = math.ceil(steps / math.ceil(len(x) / batch_size))
    model = build(x, int(y.max()) + 1, gated=False, units=units, seed=seed)
    train(model, OPTIMIZERS[optimizer_name](), x, y, epochs, batch_size)
    return accuracy(model, x_test, y_test)


def overhead(task, steps, batch_size, repeats=5):
    """`fit` seconds of the gated model without and with the controller,
    alternated `repeats` times: the medians and the minima (the CPUs may
    be shared: a run's minimum is the least disturbed), and the median
    share of the controller's own hooks in its fits."""
    x, y, _, _ = TASKS[task]()
    classes = int(y.max()) + 1
    epochs = math.ceil(steps / math.ceil(len(x) / batch_size))
    times = {False: [], True: []}
    own = []
    for _ in range(repeats):
        for controlled in (False, True):
            model = build(x, classes, gated=True, units=16)
            callbacks = [BudgetController(0.25)] if controlled else []
            train(model, "adam", x, y, 1, batch_size)  # compile and warm up
            start = time.perf_counter()
            model.fit(
                x, y, batch_size=batch_size, epochs=epochs, verbose=0,
                callbacks=callbacks,
            )
            times[controlled].append(time.perf_counter() - start)
            if controlled:
                own.append(callbacks[0].seconds / times[True][-1])
    return (float(np.median(times[False])), float(np.median(times[True])),
            float(np.median(own)), float(np.min(times[False])),
            float(np.min(times[True])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS),
                        choices=list(TASKS))
    parser.add_argument("--budgets", nargs="+", type=float,
                        default=[0.5, 0.25, 0.1])
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS),
                        choices=list(OPTIMIZERS))
    parser.add_argument("--metric", default="params")
    parser.add_argument("--seeds", type=int, default=1,
                        help="mean of every figure over this many seeds")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.budgets = args.tasks[:1], [0.25]
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    seeds = range(args.seeds)

    def mean(results):
        first = results[0]
        if isinstance(first, dict):
            return {k: mean([r[k] for r in results]) for k in first}
        if isinstance(first, bool):
            return any(results)
        return float(np.mean(results))

    print(f"backend {keras.backend.backend()}, ~{args.steps} steps, batch "
          f"{args.batch_size}, metric {args.metric}, mean of {args.seeds} "
          "seed(s)")
    print("reached: kept / target (no controller: kept / dense); fit s: "
          "gated fit with the controller | the same model without it; "
          "hooks: time inside the controller's hooks, share of its fit")
    print(f"{'task':10} {'optimizer':9} {'budget':>6} {'reached':>8} "
          f"{'acc gated':>9} {'acc plain':>9} {'acc small':>9} "
          f"{'acc sub':>7} "
          f"{'fit s with|without':>18} "
          "warned hooks")
    for task in args.tasks:
        for name in args.optimizers:
            plain = mean([plain_accuracy(task, name, args.steps,
                                         args.batch_size, seed)
                          for seed in seeds])
            alone = mean([run_case(task, name, None, args.steps,
                                   args.batch_size, args.metric, seed)
                          for seed in seeds])
            print(f"{task:10} {name:9} {'none':>6} {alone['reached']:8.3f} "
                  f"{alone['accuracy']:9.3f} {plain:9.3f} {'-':>9} {'-':>7} "
                  f"{'-':>9}|{alone['seconds']:<8.1f} -", flush=True)
            for budget in args.budgets:
                r = mean([run_case(task, name, budget, args.steps,
                                   args.batch_size, args.metric, seed)
                          for seed in seeds])
                print(f"{task:10} {name:9} {budget:6.2f} {r['reached']:8.3f} "
                      f"{r['accuracy']:9.3f} {plain:9.3f} "
                      f"{r['small_accuracy']:9.3f} {r['sub_accuracy']:7.3f} "
                      f"{r['seconds']:9.1f}|{alone['seconds']:<8.1f} "
                      f"{'yes' if r['warned'] else 'no':6} "
                      f"{100 * r['own'] / r['seconds']:.1f}%", flush=True)
    without, with_, own, least, least_with = overhead(
        args.tasks[0], args.steps, 8, repeats=7)
    print(f"fit time, GatedLSTM(16), batch 8, {args.tasks[0]}, 7 alternated "
          f"runs: medians without controller {without:.2f} s, with "
          f"{with_:.2f} s ({100 * (with_ / without - 1):+.1f}%), minima "
          f"{least:.2f} s, {least_with:.2f} s "
          f"({100 * (least_with / least - 1):+.1f}%); time inside the "
          f"controller's hooks {100 * own:.1f}% of fit")


if __name__ == "__main__":
    main()
