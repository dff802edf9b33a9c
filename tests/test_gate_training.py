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
    "rmsprop": lambda: keras.optimizers.RMSprop(),
    "sgd_momentum": lambda: keras.optimizers.SGD(momentum=0.9),
}


def train(optimizer, pace="auto", steps=400, budget=0.25):
    x, y, _, _, _ = feature_selection_task(num_train=300, num_test=1, seed=0)
    keras.utils.set_random_seed(0)
    inputs = keras.Input(x.shape[1:])
    hidden = keras_l0.GatedLSTM(32, seed=0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4)(hidden))
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    controller = BudgetController(budget, pace=pace)
    epochs = math.ceil(steps / math.ceil(len(x) / 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y, batch_size=16, epochs=epochs, verbose=0,
                  callbacks=[controller])
    return model_size(model)[0] / controller.target_size, model, controller


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_default_pace_prunes_towards_the_budget(name):
    reached, model, _ = train(OPTIMIZERS[name]())
    # Before the controller set the pace: Adam and RMSprop 4.0x (nothing
    # closed), SGD with momentum 0.01x (everything closed).
    assert 0.6 < reached < 1.5, reached
    # The variables hold log α again after `fit`.
    for layer in model.layers:
        if isinstance(layer, keras_l0.GatedLSTM):
            assert float(keras.ops.convert_to_numpy(layer.cell.gate_scale)) == 1.0


def test_optimizer_pace_alone_does_not_prune_under_adam():
    reached, _, _ = train(keras.optimizers.Adam(), pace=None)
    assert reached > 2.0, reached


def test_warns_once_when_the_steps_cannot_reach_the_target():
    x, y, _, _, _ = feature_selection_task(num_train=64, num_test=1, seed=0)
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(
        inputs, keras.layers.Dense(4)(keras_l0.GatedLSTM(16, seed=0)(inputs))
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(True))
    with pytest.warns(UserWarning, match="cannot reach its target") as record:
        model.fit(x, y, batch_size=8, epochs=2, verbose=0,
                  callbacks=[BudgetController(0.1, pace=None)])
    assert sum("cannot reach" in str(w.message) for w in record) == 1
