"""Gate training under the user's optimizer at its default learning rate."""

import math
import warnings

import keras
import numpy as np
import pytest

import keras_l0
from keras_l0.callbacks import BudgetController
from keras_l0.callbacks import model_size
from keras_l0.datasets.synthetic import feature_selection_task

OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(),
    "adamw": lambda: keras.optimizers.AdamW(),
    "rmsprop": lambda: keras.optimizers.RMSprop(),
    "sgd_momentum": lambda: keras.optimizers.SGD(momentum=0.9),
    "sgd_lr1": lambda: keras.optimizers.SGD(1.0),
}


def task(num_train=256):
    x, y, _, _, _ = feature_selection_task(
        num_train=num_train, num_test=1, timesteps=8, num_features=16,
        num_informative=2, seed=0,
    )
    return x, y


def gated_model(front=None, units=32, mask=False):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 16))
    h = inputs
    if mask:
        h = keras.layers.Masking()(h)
    if front is not None:
        h = front(h)
    h = keras_l0.GatedLSTM(units, seed=0)(h)
    return keras.Model(inputs, keras.layers.Dense(2)(h))


def train(optimizer, steps=200, budget=0.25, model=None, x=None, y=None,
          metric="params", **controller_kwargs):
    if x is None:
        x, y = task()
    model = model or gated_model()
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    controller = BudgetController(budget, metric=metric, **controller_kwargs)
    epochs = math.ceil(steps / math.ceil(len(x) / 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(x, y, batch_size=16, epochs=epochs, verbose=0,
                            callbacks=[controller])
    reached = model_size(model, metric)[0] / controller.target_size
    return reached, model, history


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_lands_within_10_percent(name):
    reached, model, history = train(OPTIMIZERS[name]())
    # Before: Adam and RMSprop 4.0x (nothing closed), SGD with momentum
    # 0.01x (everything closed); round 1 (pace only) 0.83x.
    assert abs(reached - 1) <= 0.1, reached
    # The held part of the schedule is on target at every epoch end: the
    # controller's assignments persist into the train step (JAX re-reads
    # the state a callback touched), and it updates at least 25 times per
    # `fit` however cheap a step is (with only its 2% time share, 1.5 ms
    # JAX steps starved it: the hold sat at 1.22x).
    target = 0.25 * model_size(model)[1]
    scheduled = np.array(history.history["budget/scheduled"])
    held = np.isclose(scheduled, target, rtol=1e-6)
    assert held.sum() >= 2, scheduled / target
    sizes = np.array(history.history["budget/size"])[held]
    assert np.all(np.abs(sizes / target - 1) <= 0.1), sizes / target
    # The variables hold log α again after `fit`.
    cell = model.layers[1].cell
    assert float(keras.ops.convert_to_numpy(cell.gate_scale)) == 1.0


@pytest.mark.parametrize("budget", [0.5, 0.1])
@pytest.mark.parametrize("metric", ["neurons", "flops"])
def test_lands_on_other_budgets_and_metrics(budget, metric):
    reached, _, _ = train(keras.optimizers.Adam(), budget=budget,
                          metric=metric)
    assert abs(reached - 1) <= 0.1, reached


def test_the_pace_does_not_depend_on_the_data_set_size():
    # Four times the data, the same number of steps: the same landing.
    x, y = task(num_train=1024)
    reached, _, _ = train(keras.optimizers.Adam(), x=x, y=y)
    assert abs(reached - 1) <= 0.1, reached


def test_masked_variable_length_inputs_land():
    x, y = task()
    lengths = np.random.default_rng(0).integers(3, 9, len(x))
    for row, length in zip(x, lengths):
        row[: 8 - length] = 0.0  # pre-padded
    reached, _, _ = train(keras.optimizers.Adam(), x=x, y=y,
                          model=gated_model(mask=True))
    assert abs(reached - 1) <= 0.1, reached


def test_conv1d_front_end_lands():
    conv = keras.layers.Conv1D(12, 3, padding="same", activation="relu")
    reached, _, _ = train(keras.optimizers.Adam(), model=gated_model(conv))
    assert abs(reached - 1) <= 0.1, reached


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="Keras's torch trainer requires steps_per_execution=1",
)
def test_steps_per_execution_lands():
    x, y = task()
    model = gated_model()
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=4,
    )
    controller = BudgetController(0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y, batch_size=16, epochs=13, verbose=0,
                  callbacks=[controller])
    reached = model_size(model)[0] / controller.target_size
    assert abs(reached - 1) <= 0.1, reached


def test_optimizer_pace_alone_does_not_prune_under_adam():
    reached, _, _ = train(keras.optimizers.Adam(), control="lambda",
                          pace=None)
    assert reached > 2.0, reached


def test_warns_once_when_the_schedule_ends_after_fit():
    x, y = task(num_train=64)
    model = gated_model(units=16)
    model.compile(optimizer=keras.optimizers.Adam(),
                  loss=keras.losses.SparseCategoricalCrossentropy(True))
    with pytest.warns(UserWarning, match="cannot reach its target") as record:
        model.fit(x, y, batch_size=8, epochs=2, verbose=0,
                  callbacks=[BudgetController(0.1, warmup_epochs=10)])
    assert sum("cannot reach" in str(w.message) for w in record) == 1


def test_warns_once_when_the_gates_cannot_move_fast_enough():
    x, y = task(num_train=64)
    model = gated_model(units=16)
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(True))
    with pytest.warns(UserWarning, match="cannot reach its target") as record:
        model.fit(x, y, batch_size=8, epochs=2, verbose=0,
                  callbacks=[BudgetController(0.1, pace=None,
                                              control="lambda")])
    assert sum("cannot reach" in str(w.message) for w in record) == 1


class LowestKept(keras.callbacks.Callback):
    """The lowest kept hidden log α of the model's GatedLSTM, per epoch."""

    def __init__(self):
        super().__init__()
        self.lowest = []

    def on_epoch_end(self, epoch, logs=None):
        from keras_l0.callbacks.sizing import KEEP_THRESHOLD
        from keras_l0.callbacks.sizing import numpy_log_alphas

        # The hidden gates are counted (the input gates of a model input
        # are not: its features cannot be removed).
        hidden = numpy_log_alphas(self.model.layers[1].cell)[1]
        self.lowest.append(hidden[hidden > KEEP_THRESHOLD].min())


@pytest.mark.parametrize("open_log_alpha", [None, 1.0])
def test_open_log_alpha_sets_where_kept_gates_are_held(open_log_alpha):
    # Gates started low (log α -0.39), as the option is meant to be used.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 16))
    hidden = keras_l0.GatedLSTM(32, seed=0, initial_keep_probability=0.77)(
        inputs
    )
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    x, y = task()
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    controller = BudgetController(0.25, open_log_alpha=open_log_alpha)
    recorder = LowestKept()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y, batch_size=16, epochs=13, verbose=0,
                  callbacks=[controller, recorder])
    reached = model_size(model)[0] / controller.target_size
    assert abs(reached - 1) <= 0.1, reached
    floor = BudgetController.open_log_alpha if open_log_alpha is None else 1.0
    # From the first epoch end inside the descent on, kept gates stay at the
    # floor or above, give or take the optimizer's drift since the last
    # update (up to 0.6 seen on TF); with a low floor they sit at it during
    # the descent (the shift lowers them, the floor stops them), with the
    # default at 3.75 or above.
    first = math.ceil(BudgetController.start_fraction * 13)
    lowest = min(recorder.lowest[first:])
    assert lowest >= floor - 1.0, recorder.lowest
    if open_log_alpha is not None:
        assert lowest <= floor + 0.25, recorder.lowest


@pytest.mark.parametrize(
    "kwargs",
    [{"open_log_alpha": 0}, {"open_log_alpha": "low"},
     {"open_log_alpha": 1.0, "control": "lambda"}],
)
def test_rejects_a_bad_open_log_alpha(kwargs):
    with pytest.raises(ValueError, match="open_log_alpha"):
        BudgetController(0.5, **kwargs)


def test_rejects_an_unknown_control():
    with pytest.raises(ValueError, match="control"):
        BudgetController(0.5, control="magic")


class UpdateSteps(keras.callbacks.Callback):
    """The steps at which the controller's shift changed."""

    def __init__(self, controller):
        super().__init__()
        self.controller = controller
        self.steps = []
        self._shift = None
        self._step = 0

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self.controller.shift != self._shift:
            self._shift = self.controller.shift
            self.steps.append(self._step)


def test_updates_fall_on_fixed_steps_and_repeat_exactly():
    # The updates do not depend on the time they take: the same seed gives
    # the same gates on a loaded machine as on an idle one. 13 epochs of 16
    # steps: 208 steps, an update every 13 (at most 100 per fit, at least 25
    # steps apart unless fewer than 15 would run: 208 // 15 = 13).
    x, y = task()
    runs = []
    for _ in range(2):
        model = gated_model()
        model.compile(
            optimizer=keras.optimizers.Adam(),
            loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True),
        )
        controller = BudgetController(0.25)
        steps = UpdateSteps(controller)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            history = model.fit(x, y, batch_size=16, epochs=13, verbose=0,
                                shuffle=False, callbacks=[controller, steps])
        cell = model.layers[1].cell
        runs.append((steps.steps, history.history["budget/size"],
                     keras.ops.convert_to_numpy(cell.hidden_log_alpha)))
    assert controller._update_every == 13
    assert runs[0][0] == runs[1][0]
    assert all(b - a >= 13 for a, b in zip(runs[0][0], runs[0][0][1:]))
    assert runs[0][1] == runs[1][1]
    np.testing.assert_allclose(runs[0][2], runs[1][2], atol=1e-5)
    sizes = np.array(runs[0][1][-3:])
    assert np.all(np.abs(sizes / controller.target_size - 1) <= 0.1), sizes


def digits_accuracy(layer_fn, seed, epochs=5):
    """Test accuracy on scikit-learn's digits, row by row, after `epochs`
    of Adam at its default rate (375 steps)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")
    y = digits.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(x.shape[1:])
    hidden = layer_fn(seed)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10)(hidden))
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x[:1200], y[:1200], batch_size=16, epochs=epochs, verbose=0)
    return model.evaluate(x[1200:], y[1200:], verbose=0)[1]


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="four fits of 375 steps: minutes on torch's eager trainer",
)
def test_default_gates_learn_as_the_plain_layer():
    # At keep probability 0.99 (a fifth of the training gates below 1)
    # the gated layer learned 3-5 points less in these steps.
    def mean(layer_fn):
        return np.mean([digits_accuracy(layer_fn, seed) for seed in (0, 1)])

    plain = mean(lambda seed: keras.layers.LSTM(32, seed=seed))
    gated = mean(lambda seed: keras_l0.GatedLSTM(32, seed=seed))
    assert gated >= plain - 0.015, (gated, plain)


def test_gates_stay_open_until_the_schedule_starts():
    # A strong λ at the controller's fast gate pace pulled every gate down
    # together before the descent began (the feature-selection demo's size
    # was 19% of dense at the start, and the first shift put it back): the
    # controller lifts them, as one group, to the ranking level.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 16))
    hidden = keras_l0.GatedLSTM(32, seed=0, l0_penalty=1e-3)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    x, y = task()
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    controller = BudgetController(0.25)
    recorder = LowestKept()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(x, y, batch_size=16, epochs=10, verbose=0,
                            callbacks=[controller, recorder])
    before = math.floor(BudgetController.start_fraction * 10)
    dense = model_size(model)[1]
    sizes = history.history["budget/size"][:before]
    assert sizes == [dense] * before, sizes
    lowest = recorder.lowest[:before]
    assert min(lowest) >= BudgetController.ranking_log_alpha - 1.0, lowest
    assert abs(model_size(model)[0] / controller.target_size - 1) <= 0.1
