"""Input and neuron selection on the synthetic task, against a plain LSTM.

Two ways to train the gates: `BudgetController` (with λ raised so that it
closes the raw inputs, which no budget counts) and a fixed penalty from
gates that start at keep probability 0.9.
"""

import keras
import numpy as np
import pytest

import keras_l0
from keras_l0.callbacks import BudgetController
from keras_l0.callbacks import kept_neurons
from keras_l0.datasets.synthetic import feature_selection_task

SEED = 0
UNITS = 16
EPOCHS = 20
BATCH_SIZE = 64
LEARNING_RATE = 1e-2
L0_PENALTY = 1e-4
BUDGET = 0.15
INPUT_PENALTY = 1e-3


def train(recurrent_layer, data, callbacks=()):
    x, y, x_test, y_test, _ = data
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input(x.shape[1:])
    outputs = keras.layers.Dense(int(y.max()) + 1)(recurrent_layer(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=EPOCHS,
        verbose=0,
        callbacks=list(callbacks),
    )
    return model, model.evaluate(x_test, y_test, verbose=0)[1]


@pytest.fixture(scope="module")
def data():
    return feature_selection_task(seed=SEED)


@pytest.fixture(scope="module", params=["budget", "fixed_penalty"])
def gated(request, data):
    if request.param == "budget":
        # The controller sizes the hidden units; λ closes the raw inputs.
        layer = keras_l0.GatedLSTM(UNITS, l0_penalty=INPUT_PENALTY, seed=SEED)
        return train(layer, data, [BudgetController(BUDGET)])
    layer = keras_l0.GatedLSTM(
        UNITS,
        l0_penalty=L0_PENALTY,
        initial_keep_probability=0.9,
        seed=SEED,
    )
    return train(layer, data)


@pytest.fixture(scope="module")
def ungated_accuracy(data):
    return train(keras.layers.LSTM(UNITS, seed=SEED), data)[1]


def kept_inputs(model):
    cell = model.layers[1].cell
    gate = keras.ops.convert_to_numpy(cell.gates(training=False)[0])
    return set(np.flatnonzero(gate).tolist())


def test_keeps_every_informative_input(data, gated):
    informative = set(data[4].tolist())
    assert informative <= kept_inputs(gated[0])


def test_gates_off_most_noise_inputs(data, gated):
    noise = set(range(data[0].shape[-1])) - set(data[4].tolist())
    kept_noise = kept_inputs(gated[0]) & noise
    assert len(kept_noise) <= 0.1 * len(noise), sorted(kept_noise)


def test_removes_hidden_units(gated):
    assert kept_neurons(gated[0].layers[1])[1] < UNITS


def test_accuracy_matches_ungated_lstm(gated, ungated_accuracy):
    assert gated[1] >= ungated_accuracy - 0.01, (gated[1], ungated_accuracy)


def test_task_is_deterministic_and_balanced():
    first = feature_selection_task(num_train=500, num_test=100, seed=3)
    second = feature_selection_task(num_train=500, num_test=100, seed=3)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    x, y, x_test, y_test, informative = first
    assert x.shape == (500, 16, 40) and x.dtype == np.float32
    assert x_test.shape == (100, 16, 40) and y.dtype == np.int32
    assert len(informative) == 4 and len(set(informative.tolist())) == 4
    assert np.all(np.bincount(y, minlength=4) > 500 / 4 * 0.7)
    other = feature_selection_task(num_train=500, num_test=100, seed=4)
    assert not np.array_equal(x, other[0])


def test_labels_follow_the_documented_rule():
    x, y, _, _, informative = feature_selection_task(
        num_train=300, num_test=1, seed=5
    )
    expected_first_bit = x[:, :, informative[:2]].sum(axis=(1, 2)) > 0
    np.testing.assert_array_equal(y // 2, expected_first_bit)
    late = x[:, 8:, informative[2:]].sum(axis=1)
    np.testing.assert_array_equal(y % 2, late[:, 0] > late[:, 1])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_informative": 3},
        {"num_informative": 42},
        {"timesteps": 1},
        {"num_train": 0},
        {"num_features": 2.5},
    ],
)
def test_task_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        feature_selection_task(**kwargs)
