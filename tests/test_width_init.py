"""New gated models started at the weight scale of the width they keep."""

import math

import keras
import numpy as np
import pytest

import architectures
import keras_l0
from keras_l0.callbacks import BudgetController
from keras_l0.callbacks import layer_size
from keras_l0.callbacks import named_gated_layers
from keras_l0.callbacks.width_init import factor
from keras_l0.callbacks.width_init import kept_fraction
from keras_l0.callbacks.width_init import scale_to_kept_width

INITS = keras.initializers


@pytest.mark.parametrize(
    "initializer, expected",
    [
        (INITS.GlorotUniform(), (10 + 40) / (10 + 20)),
        (INITS.GlorotNormal(), (10 + 40) / (10 + 20)),
        (INITS.HeNormal(), 1.0),
        (INITS.LecunUniform(), 1.0),
        (INITS.VarianceScaling(mode="fan_out"), 40 / 20),
        (INITS.Orthogonal(), 40 / 20),
        (INITS.RandomUniform(-0.1, 0.1), 1.0),
        (INITS.Zeros(), 1.0),
    ],
)
def test_factor_matches_the_initialisers_variance(initializer, expected):
    assert factor(initializer, (10, 40), (10, 20)) == pytest.approx(
        math.sqrt(expected)
    )


@pytest.mark.parametrize(
    "initializer", [INITS.GlorotUniform(seed=1), INITS.Orthogonal(seed=1)]
)
def test_rescaled_draw_has_the_kept_widths_spread(initializer):
    wide = keras.ops.convert_to_numpy(initializer((64, 256)))
    narrow = keras.ops.convert_to_numpy(initializer((16, 64)))
    scaled = wide * factor(initializer, (64, 256), (16, 64))
    assert scaled.std() == pytest.approx(narrow.std(), rel=0.05)


def single(units=64, features=8, classes=10, middle=None, **lstm_kwargs):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, features))
    h = keras_l0.GatedLSTM(units, seed=0, **lstm_kwargs)(inputs)
    if middle is not None:
        h = middle(h)
    return keras.Model(inputs, keras.layers.Dense(classes)(h))


def weights(model):
    return {w.path: keras.ops.convert_to_numpy(w).copy() for w in model.weights}


def test_kept_fraction_solves_the_params_budget():
    model = single()
    layers = named_gated_layers(model)
    s = kept_fraction(layers, 0.25 * 4 * 64 * (8 + 64 + 1), "params", set())
    width = 64 * s
    assert 4 * width * (8 + width + 1) == pytest.approx(
        0.25 * 4 * 64 * 73, rel=1e-6
    )
    assert kept_fraction(layers, 1e9, "params", set()) == 1.0


@pytest.mark.parametrize(
    "middle",
    [None, keras.layers.Dropout(0.2), keras.layers.LayerNormalization()],
)
def test_lstm_and_its_head_get_the_kept_widths_scale(middle):
    model = single(middle=middle)
    before = weights(model)
    layers = named_gated_layers(model)
    target = 0.25 * 4 * 64 * 73
    applied = scale_to_kept_width(model, layers, target, "params")
    w = 64 * kept_fraction(layers, target, "params", set())
    head = model.layers[-1].kernel.path
    cell = "gated_lstm/gated_lstm_cell/"
    expected = {
        cell + "kernel": math.sqrt((8 + 256) / (8 + 4 * w)),
        cell + "recurrent_kernel": math.sqrt(64 / w),
        head: math.sqrt((64 + 10) / (w + 10)),
    }
    assert applied == pytest.approx(expected)
    after = weights(model)
    for path, value in before.items():
        np.testing.assert_allclose(
            after[path], value * expected.get(path, 1.0), rtol=1e-6
        )


def test_stacked_layers_scale_the_second_kernel_for_its_kept_inputs():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8))
    h = keras_l0.GatedLSTM(32, return_sequences=True, seed=0)(inputs)
    h = keras.layers.Bidirectional(keras_l0.GatedGRU(16, seed=0))(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    layers = named_gated_layers(model)
    dense = sum(
        layer.cell.num_blocks
        * layer.cell.units
        * (layer.cell.input_dim + layer.cell.units + layer.cell.bias_rows)
        for layer in layers.values()
    )
    applied = scale_to_kept_width(model, layers, 0.3 * dense, "params")
    fed = {name for name in layers if name != "gated_lstm"}
    s = kept_fraction(layers, 0.3 * dense, "params", fed)
    assert 0 < s < 1
    gru = "bidirectional/forward_gated_gru/gated_gru_cell/kernel"
    assert applied[gru] == pytest.approx(
        math.sqrt((32 + 48) / (32 * s + 48 * s))
    )
    head = model.layers[-1].kernel.path
    assert applied[head] == pytest.approx(math.sqrt((32 + 3) / (32 * s + 3)))
    assert len(applied) == 2 + 4 + 1


def test_width_independent_initialisers_are_left_alone():
    init = INITS.RandomUniform(-0.1, 0.1, seed=0)
    model = single(kernel_initializer=init, recurrent_initializer=init)
    applied = scale_to_kept_width(
        model, named_gated_layers(model), 0.25 * 4 * 64 * 73, "params"
    )
    assert list(applied) == [model.layers[-1].kernel.path]


def fit(model, controller, epochs=1):
    x = np.random.default_rng(0).normal(size=(64, 8, 8)).astype("float32")
    y = np.arange(64) % 10
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0,
              callbacks=[controller])


def test_controller_rescales_a_new_model_once():
    model = single()
    controller = BudgetController(0.25)
    fit(model, controller)
    assert len(controller.rescaled) == 3
    fit(model, controller)
    assert controller.rescaled == {}


class Snapshot(keras.callbacks.Callback):
    """The weights at the first batch, after the controller's start."""

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0 and not hasattr(self, "weights"):
            self.weights = weights(self.model)


@pytest.mark.parametrize("width_init", [True, False])
def test_controller_applies_the_factors_before_the_first_step(width_init):
    model = single()
    before = weights(model)
    controller = BudgetController(0.25, width_init=width_init)
    snapshot = Snapshot()
    x = np.random.default_rng(0).normal(size=(32, 8, 8)).astype("float32")
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, np.arange(32) % 10, batch_size=16, epochs=1, verbose=0,
              callbacks=[controller, snapshot])
    assert bool(controller.rescaled) == width_init
    for path, factor_ in controller.rescaled.items():
        np.testing.assert_allclose(
            snapshot.weights[path], before[path] * factor_, rtol=1e-6
        )
    kernel = "gated_lstm/gated_lstm_cell/kernel"
    np.testing.assert_allclose(
        snapshot.weights[kernel],
        before[kernel] * controller.rescaled.get(kernel, 1.0),
        rtol=1e-6,
    )


@pytest.mark.parametrize("how", ["set_weights", "load_weights", "gate_model"])
def test_models_with_given_weights_are_not_rescaled(how, tmp_path):
    model = single()
    if how == "set_weights":
        model.set_weights([w * 0.5 for w in model.get_weights()])
    elif how == "load_weights":
        donor = single()
        donor.set_weights([w * 0.5 for w in donor.get_weights()])
        path = str(tmp_path / "donor.weights.h5")
        donor.save_weights(path)
        model.load_weights(path)
    else:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8, 8))
        h = keras.layers.LSTM(64)(inputs)
        plain = keras.Model(inputs, keras.layers.Dense(10)(h))
        model = keras_l0.gate_model(plain, [plain.layers[1].name])
    before = weights(model)
    layers = named_gated_layers(model)
    assert not any(l.cell.holds_initial_weights() for l in layers.values())
    applied = scale_to_kept_width(model, layers, 0.25 * 4 * 64 * 73, "params")
    assert applied == {}
    for path, value in weights(model).items():
        np.testing.assert_array_equal(value, before[path])



@pytest.mark.parametrize("case", architectures.ALL_CASES, ids=str)
def test_every_catalogue_architecture_is_rescaled(case):
    keras.utils.set_random_seed(0)
    model = case.build()
    layers = named_gated_layers(model)
    before = weights(model)
    dense = sum(
        layer_size(layer, layer.cell.input_dim, layer.cell.units)
        for layer in layers.values()
    )
    applied = scale_to_kept_width(model, layers, 0.5 * dense, "params")
    for layer in layers.values():
        cell = layer.cell
        for weight in (cell.kernel, cell.recurrent_kernel):
            assert applied[weight.path] > 1.0, weight.path
    after = weights(model)
    for path, value in before.items():
        np.testing.assert_allclose(
            after[path], value * applied.get(path, 1.0), rtol=1e-6
        )
