"""GateMonitor, L0Warmup and BudgetController in `fit`."""

import math

import keras
import numpy as np
import pytest

import keras_l0
from keras_l0 import hard_concrete
from keras_l0.callbacks import BudgetController
from keras_l0.callbacks import GateMonitor
from keras_l0.callbacks import L0Warmup
from keras_l0.callbacks import model_size
from keras_l0.callbacks import named_gated_layers
from keras_l0.datasets.synthetic import feature_selection_task

# log_alpha of a gate that is exactly 1 in training and inference.
OPEN = 20.0


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def manual_gate_stats(log_alpha, size):
    """(active, keep probabilities) by the hard-concrete formulas."""
    if log_alpha is None:
        return size, np.ones(size)
    stretched = sigmoid(log_alpha) * (hard_concrete.ZETA - hard_concrete.GAMMA)
    active = int(np.sum(stretched + hard_concrete.GAMMA > 0))
    ratio = -hard_concrete.GAMMA / hard_concrete.ZETA
    shift = hard_concrete.BETA * math.log(ratio)
    return active, sigmoid(log_alpha - shift)


def manual_expected_l0(p_in, p_h, num_blocks, bias_rows, hidden_gated):
    n_in, n_h = p_in.sum(), p_h.sum()
    recurrent = n_h * n_h - np.sum(p_h * p_h) + n_h if hidden_gated else n_h**2
    return num_blocks * (n_in * n_h + recurrent + bias_rows * n_h)


def fixed_data(timesteps=5, features=6, samples=32, classes=3):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((samples, timesteps, features)).astype("float32")
    return x, rng.integers(0, classes, samples).astype("int32")


def compile_frozen(model):
    """Learning rate 0: every weight, and so every gate, stays put."""
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def set_log_alpha(variable, values):
    variable.assign(np.asarray(values, "float32"))


@pytest.fixture
def monitored_model():
    inputs = keras.Input((5, 6))
    x = keras.layers.Bidirectional(
        keras_l0.GatedLSTM(4, return_sequences=True, l0_penalty=2e-3)
    )(inputs)
    x = keras_l0.GatedGRU(3, input_gates=False, l0_penalty=5e-4)(x)
    x = keras.layers.Dense(3)(keras.layers.Dense(4)(x))
    model = compile_frozen(keras.Model(inputs, x))
    bidirectional, gru = model.layers[1], model.layers[2]
    rng = np.random.default_rng(1)
    for layer in (bidirectional.forward_layer, bidirectional.backward_layer):
        set_log_alpha(layer.cell.input_log_alpha, rng.uniform(-6, 4, 6))
        set_log_alpha(layer.cell.hidden_log_alpha, rng.uniform(-6, 4, 4))
    set_log_alpha(gru.cell.hidden_log_alpha, [-5.0, 1.0, 3.0])
    return model


def test_named_gated_layers_finds_both_directions(monitored_model):
    names = list(named_gated_layers(monitored_model))
    bidirectional = monitored_model.layers[1]
    assert names == [
        f"{bidirectional.name}/{bidirectional.forward_layer.name}",
        f"{bidirectional.name}/{bidirectional.backward_layer.name}",
        monitored_model.layers[2].name,
    ]


def test_gate_monitor_logs_match_manual_computation(monitored_model):
    x, y = fixed_data()
    history = monitored_model.fit(
        x, y, epochs=2, batch_size=16, verbose=0, callbacks=[GateMonitor()]
    )
    for name, layer in named_gated_layers(monitored_model).items():
        cell = layer.cell
        log_alphas = [
            None if v is None else keras.ops.convert_to_numpy(v)
            for v in (cell.input_log_alpha, cell.hidden_log_alpha)
        ]
        input_active, p_in = manual_gate_stats(log_alphas[0], cell.input_dim)
        hidden_active, p_h = manual_gate_stats(log_alphas[1], cell.units)
        expected = manual_expected_l0(
            p_in, p_h, cell.num_blocks, cell.bias_rows, True
        )
        assert history.history[f"{name}/input_active"] == [input_active] * 2
        assert history.history[f"{name}/hidden_active"] == [hidden_active] * 2
        np.testing.assert_allclose(
            history.history[f"{name}/expected_l0"], [expected] * 2, rtol=1e-4
        )
        np.testing.assert_allclose(
            history.history[f"{name}/l0_penalty"],
            [cell.initial_l0_penalty] * 2,
            rtol=1e-6,
        )
    gru = monitored_model.layers[2].name
    assert history.history[f"{gru}/hidden_active"] == [2, 2]
    assert history.history[f"{gru}/input_active"] == [8, 8]
    assert 0 < history.history[f"{gru}/expected_l0"][0]


def test_gate_monitor_skips_ungated_layers():
    inputs = keras.Input((5, 6))
    x = keras.layers.LSTM(4, return_sequences=True)(inputs)
    x = keras_l0.GatedLSTM(4, input_gates=False, hidden_gates=False)(x)
    model = compile_frozen(keras.Model(inputs, keras.layers.Dense(3)(x)))
    x, y = fixed_data()
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[GateMonitor()])
    assert not [k for k in history.history if "/" in k]


def test_gate_monitor_verbose_prints_one_line(monitored_model, capsys):
    x, y = fixed_data()
    monitored_model.fit(
        x, y, epochs=1, verbose=0, callbacks=[GateMonitor(verbose=1)]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Epoch 1 gates:")


def open_gated_model(l0_penalty):
    """A gated model whose gates are fixed at 1: no gate noise, so with a
    learning rate of 0 the training loss changes only with λ."""
    inputs = keras.Input((5, 6))
    layer = keras_l0.GatedLSTM(4, l0_penalty=l0_penalty)
    model = compile_frozen(
        keras.Model(inputs, keras.layers.Dense(3)(layer(inputs)))
    )
    set_log_alpha(layer.cell.input_log_alpha, np.full(6, OPEN))
    set_log_alpha(layer.cell.hidden_log_alpha, np.full(4, OPEN))
    return model, layer


@pytest.mark.parametrize(
    "target, warmup_epochs, start_epoch, expected_fractions",
    [
        (None, 4, 1, [0, 0, 0.25, 0.5, 0.75, 1, 1]),
        (3e-3, 2, 0, [0, 0.5, 1, 1]),
        (None, 0, 2, [0, 0, 1, 1]),
    ],
)
def test_warmup_schedule_reaches_the_loss(
    target, warmup_epochs, start_epoch, expected_fractions
):
    model, layer = open_gated_model(l0_penalty=1e-3)
    x, y = fixed_data()
    warmup = L0Warmup(target, warmup_epochs, start_epoch=start_epoch)
    history = model.fit(
        x,
        y,
        epochs=len(expected_fractions),
        batch_size=32,
        shuffle=False,
        verbose=0,
        callbacks=[warmup, GateMonitor()],
    )
    lam = 1e-3 if target is None else target
    np.testing.assert_allclose(
        history.history[f"{layer.name}/l0_penalty"],
        np.array(expected_fractions) * lam,
        rtol=1e-6,
        atol=1e-12,
    )
    # The compiled train step sees the new λ: the loss grows by λ * E[L0].
    dense_l0 = history.history[f"{layer.name}/expected_l0"][0]
    losses = np.array(history.history["loss"])
    np.testing.assert_allclose(
        losses - losses[0],
        (np.array(expected_fractions) - expected_fractions[0])
        * lam
        * dense_l0,
        rtol=1e-3,
        atol=1e-6,
    )


def test_warmup_per_batch():
    model, layer = open_gated_model(l0_penalty=1e-3)
    x, y = fixed_data(samples=32)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            value = self.model.layers[1].cell.l0_penalty
            seen.append(float(keras.ops.convert_to_numpy(value)))

    model.fit(
        x,
        y,
        epochs=2,
        batch_size=8,
        verbose=0,
        callbacks=[L0Warmup(warmup_epochs=2, per_batch=True), Record()],
    )
    expected = [1e-3 * min(1.0, (step / 4) / 2) for step in range(8)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warmup_epochs": -1},
        {"warmup_epochs": 1.5},
        {"start_epoch": -2},
        {"target": -1e-3},
    ],
)
def test_warmup_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        L0Warmup(**kwargs)


def test_keep_threshold_is_where_the_inference_gate_opens():
    edge = keras_l0.callbacks.KEEP_THRESHOLD
    log_alpha = np.array([edge - 1e-4, edge + 1e-4], "float32")
    gates = keras.ops.convert_to_numpy(hard_concrete.eval_gate(log_alpha))
    assert gates[0] == 0 and gates[1] > 0


def fixed(*open_gates):
    """log_alpha of gates fixed open (1) or closed (0)."""
    return [OPEN if g else -OPEN for g in open_gates]


def stacked_model():
    """GatedLSTM -> GatedLSTM without input gates -> Dense, gates set so
    that the second layer loses input rows to the first one's units."""
    inputs = keras.Input((5, 6))
    first = keras_l0.GatedLSTM(8, return_sequences=True, l0_penalty=1e-3)
    second = keras_l0.GatedGRU(5, input_gates=False, l0_penalty=1e-3)
    model = keras.Model(inputs, keras.layers.Dense(3)(second(first(inputs))))
    set_log_alpha(first.cell.input_log_alpha, fixed(1, 0, 1, 1, 0, 1))
    set_log_alpha(first.cell.hidden_log_alpha, fixed(1, 0, 0, 1, 1, 0, 1, 1))
    set_log_alpha(second.cell.hidden_log_alpha, fixed(1, 0, 1, 1, 0))
    return model


def test_model_size_counts_what_shrink_keeps():
    from keras_l0.shrink import shrink

    model = stacked_model()
    slim = shrink(model)
    recurrent = [
        layer for layer in slim.layers if isinstance(layer, keras.layers.RNN)
    ]
    assert [layer.units for layer in recurrent] == [5, 3]
    # The slim first layer reads the raw input (width kept), the second
    # only the 5 kept units of the first.
    params = sum(layer.count_params() for layer in recurrent)
    dense = 4 * (6 * 8 + 8 * 8 + 8) + 3 * (8 * 5 + 5 * 5 + 2 * 5)
    assert model_size(model, "params") == (params, dense)
    flops = 2 * (4 * (6 * 5 + 5 * 5) + 3 * (5 * 3 + 3 * 3))
    assert model_size(model, "flops")[0] == flops
    # Neurons: units of both layers and the gated inputs of the first.
    assert model_size(model, "neurons") == (4 + 5 + 3, 6 + 8 + 5)


class Wrapper(keras.Model):
    """A subclassed model that trains copies of a functional model's
    layers, as training wrappers do: `shrink` cannot plan it."""

    def __init__(self, functional):
        super().__init__(name="wrapper")
        self.stack = []
        for layer in functional.layers[1:]:
            self.stack.append(layer.__class__.from_config(layer.get_config()))
        self(np.zeros((1,) + tuple(functional.input_shape[1:]), "float32"))
        for source, copy in zip(functional.layers[1:], self.stack):
            copy.set_weights(source.get_weights())

    def call(self, x, training=False):
        for layer in self.stack:
            x = layer(x, training=training)
        return x


def test_budget_controller_counts_a_wrapped_model_on_its_functional_twin():
    functional = stacked_model()
    wrapper = compile_frozen(Wrapper(functional))
    x, y = fixed_data()
    with pytest.warns(UserWarning, match="own gates only"):
        alone = BudgetController(0.5, update_every=1, control="lambda")
        wrapper.fit(
            x, y, epochs=1, batch_size=16, verbose=0, callbacks=[alone]
        )
    twin = BudgetController(
        0.5, update_every=1, model=functional, control="lambda"
    )
    wrapper.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[twin])
    exact = model_size(functional, "params")[0]
    assert twin.size == exact
    # Alone, each layer counts with its own gates: the first its 4 open
    # inputs (shrink keeps the raw input's width, 6), the second all 8 of
    # its inputs (shrink keeps the first layer's 5 units).
    assert exact == 4 * (6 * 5 + 25 + 5) + 3 * (5 * 3 + 9 + 2 * 3)
    assert alone.size == 4 * (4 * 5 + 25 + 5) + 3 * (8 * 3 + 9 + 2 * 3)
    # Counting borrowed the trained gates for a moment only.
    twin_cell, trained_cell = functional.layers[1].cell, wrapper.stack[0].cell
    assert twin_cell.hidden_log_alpha is not trained_cell.hidden_log_alpha
    trained_cell.hidden_log_alpha.assign(np.full(8, -OPEN, "float32"))
    assert model_size(functional, "params")[0] == exact


def test_budget_controller_sets_lambda_and_logs():
    model, layer = open_gated_model(l0_penalty=1e-3)
    x, y = fixed_data(samples=64)
    controller = BudgetController(0.5, update_every=2, control="lambda")
    history = model.fit(
        x, y, epochs=2, batch_size=8, verbose=0, callbacks=[controller]
    )
    # Learning rate 0: the gates stay open, the network stays dense and
    # larger than scheduled, so λ rises.
    assert history.history["budget/size"] == [controller.dense_size] * 2
    assert controller.target_size == 0.5 * controller.dense_size
    scale = history.history["budget/l0_scale"]
    assert 1 < scale[0] < scale[1] == controller.l0_scale
    value = float(keras.ops.convert_to_numpy(layer.cell.l0_penalty))
    assert value == pytest.approx(1e-3 * controller.l0_scale, rel=1e-6)
    assert history.history["budget/scheduled"][1] < controller.dense_size


def test_budget_controller_rise_gain_sets_how_fast_lambda_rises():
    scales = {}
    for rise_gain in (0.05, 0.25):
        model, _ = open_gated_model(l0_penalty=1e-3)
        x, y = fixed_data(samples=64)
        controller = BudgetController(
            0.5, update_every=2, rise_gain=rise_gain, control="lambda"
        )
        model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[controller])
        scales[rise_gain] = controller.l0_scale
    assert BudgetController(0.5).rise_gain == 0.05
    # The same excess at every update (the gates cannot move): the
    # integral part of log λ grows 5 times faster.
    assert 1 < scales[0.05] < scales[0.25]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target": 0},
        {"target": -3},
        {"target": 0.5, "metric": "weights"},
        {"target": 0.5, "warmup_epochs": 0},
        {"target": 0.5, "update_every": 0},
        {"target": 0.5, "rise_gain": 0},
        {"target": 0.5, "rise_gain": -0.1},
        {"target": 0.5, "rise_gain": "fast"},
    ],
)
def test_budget_controller_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        BudgetController(**kwargs)


def test_budget_controller_rejects_a_target_above_dense():
    model, _ = open_gated_model(l0_penalty=1e-3)
    x, y = fixed_data()
    with pytest.raises(ValueError, match="exceeds"):
        model.fit(x, y, verbose=0, callbacks=[BudgetController(1e9)])


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="1,100 steps of the older lambda control: 160 s on torch's eager "
    "trainer; run on TensorFlow and JAX",
)
def test_budget_controller_lands_within_5_percent():
    x, y, _, _, _ = feature_selection_task(num_train=3000, seed=0)
    keras.utils.set_random_seed(0)
    inputs = keras.Input(x.shape[1:])
    hidden = keras_l0.GatedLSTM(64, l0_penalty=1e-4, seed=0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4)(hidden))
    epochs, batch_size = 12, 32
    learning_rate = keras.optimizers.schedules.ExponentialDecay(
        0.5, decay_steps=epochs * len(x) // batch_size, decay_rate=0.1
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    # The optimizer's own pace, as before the controller set one.
    controller = BudgetController(
        0.5, metric="params", pace=None, start_epoch=0, control="lambda"
    )
    model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,
        callbacks=[controller],
    )
    kept, dense = model_size(model, "params")
    assert controller.target_size == 0.5 * dense
    assert abs(kept / controller.target_size - 1) <= 0.05, kept


def test_shift_band_keeps_the_ranking_and_is_idempotent():
    from keras_l0.callbacks.shift import _band

    rng = np.random.default_rng(0)
    values = rng.normal(1.0, 2.0, 200)
    values[:3] = values[3]  # ties in, ties out; none made
    banded = _band(values, 3.75, 1.0)
    assert banded.min() == pytest.approx(3.75)
    np.testing.assert_array_equal(np.argsort(banded, kind="stable"),
                                  np.argsort(values, kind="stable"))
    assert len(np.unique(banded)) == len(np.unique(values))
    gaps = np.diff(np.sort(values))
    banded_gaps = np.diff(np.sort(banded))
    np.testing.assert_allclose(banded_gaps, np.minimum(gaps, 1.0), atol=1e-9)
    np.testing.assert_array_equal(_band(banded, 3.75, 1.0), banded)
    high = values + 10
    np.testing.assert_allclose(np.sort(_band(high, 3.75, 100.0)),
                               np.sort(high))


def test_budget_controller_resumes_from_the_current_lambda():
    model, layer = open_gated_model(l0_penalty=1e-3)
    layer.cell.l0_penalty.assign(4e-3)
    x, y = fixed_data(samples=64)
    controller = BudgetController(0.5, update_every=100)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[controller])
    assert controller.l0_scale == pytest.approx(4.0, rel=1e-6)


def test_controller_starts_open_gates_where_they_can_be_ranked():
    inputs = keras.Input((5, 6))
    layer = keras_l0.GatedLSTM(8)
    model = keras.Model(inputs, keras.layers.Dense(3)(layer(inputs)))
    cell = layer.cell
    assert float(keras.ops.min(cell.input_log_alpha)) > 7.0  # the default
    values = np.linspace(4.0, 9.0, cell.units).astype("float32")
    values[:2] = [1.0, -5.0]
    cell.hidden_log_alpha.assign(values)
    controller = BudgetController(0.5, start_epoch=100)  # never shifts
    controller.set_model(model)
    controller.params = {"epochs": 1, "steps": 4}
    controller.on_train_begin()
    lowered = keras.ops.convert_to_numpy(cell.hidden_log_alpha)
    expected = values.copy()
    expected[2:] -= values[2] - BudgetController.ranking_log_alpha
    np.testing.assert_allclose(lowered, expected, atol=1e-6)
    assert float(keras.ops.max(cell.input_log_alpha)) == pytest.approx(3.0)


def test_controller_start_shares_its_summaries(monkeypatch):
    # Two stacked gated layers: the start of `fit` needs the base rows
    # once (plannability, kept size and the counter share them), one probe
    # per input-gated layer and one per hidden-gated layer that feeds
    # another, and no more `keras_l0.summary` calls than that.
    from keras_l0.callbacks import sizing

    calls = []
    real = sizing.summary

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sizing, "summary", counted)
    inputs = keras.Input((5, 6))
    h = keras_l0.GatedLSTM(8, return_sequences=True)(inputs)
    outputs = keras.layers.Dense(3)(keras_l0.GatedLSTM(4)(h))
    model = keras.Model(inputs, outputs)
    controller = BudgetController(0.5)
    controller.set_model(model)
    controller.params = {"epochs": 1, "steps": 4}
    controller.on_train_begin()
    assert controller._counter.exact
    assert len(calls) == 1 + 2 + 1
    size = controller.size
    controller.on_epoch_end(0)
    assert controller.size == size
    assert len(calls) == 4
