"""`keras_l0.gate_model` and `keras_l0.fixed_gate_model`: gated copies of
trained plain models."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_l0
from keras_l0 import fixed_gate_model
from keras_l0.hard_concrete import eval_gate
from test_shrink import CLOSED
from test_shrink import OPEN
from test_shrink import assert_exact
from test_shrink import outputs
from test_shrink import randomize
from test_shrink import sequences
from test_shrink import set_hidden


def plain_lstm_bigru(seed):
    """A plain LSTM -> Bidirectional(GRU) -> Dense model, random weights."""
    inputs = keras.Input((None, 6))
    x = layers.LSTM(5, return_sequences=True, name="lstm")(inputs)
    x = layers.Bidirectional(
        layers.GRU(4, name="gru"), merge_mode="concat", name="bidirectional"
    )(x)
    model = keras.Model(inputs, layers.Dense(2)(x))
    randomize(model, seed=seed)
    return model


def test_fixed_gate_model_makes_a_pruning_baseline():
    model = plain_lstm_bigru(seed=14)
    x = sequences()
    everything = fixed_gate_model(
        model, {"lstm": range(5)}, keep_inputs={"lstm": range(6)}
    )
    np.testing.assert_array_equal(
        outputs(everything, x, training=True)[0], outputs(model, x)[0]
    )

    gated = fixed_gate_model(model, {"bidirectional/backward_gru": [1, 2]})
    assert type(gated.get_layer("lstm")) is layers.LSTM
    assert type(gated.get_layer("bidirectional").forward_layer) is layers.GRU

    keep = {
        "lstm": [0, 3],
        "bidirectional/forward_gru": [0, 2, 3],
        "bidirectional/backward_gru": [1, 2, 3],
    }
    gated = fixed_gate_model(model, keep)
    assert isinstance(gated.get_layer("lstm"), keras_l0.GatedLSTM)
    slim = assert_exact(gated, x)
    assert slim.get_layer("lstm").units == 2
    assert slim.get_layer("bidirectional").backward_layer.units == 3
    assert model.get_layer("lstm").units == 5

    with pytest.raises(ValueError, match="No recurrent layer named 'gru'"):
        fixed_gate_model(model, {"gru": [0]})
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        fixed_gate_model(model, {"lstm": [5]})


def test_gate_model_gates_a_trained_model():
    model = plain_lstm_bigru(seed=15)
    x = sequences()
    expected = outputs(model, x)[0]

    gated = keras_l0.gate_model(
        model,
        ["lstm", "bidirectional/backward_gru"],
        input_gates=["lstm"],
        l0_penalty=1e-3,
        initial_keep_probability=0.8,
    )
    lstm = gated.get_layer("lstm")
    wrapper = gated.get_layer("bidirectional")
    assert isinstance(lstm, keras_l0.GatedLSTM)
    assert lstm.cell.input_gates and lstm.cell.hidden_gates
    assert lstm.get_config()["l0_penalty"] == 1e-3
    assert type(wrapper.forward_layer) is layers.GRU
    backward = wrapper.backward_layer
    assert isinstance(backward, keras_l0.GatedGRU)
    assert backward.cell.hidden_gates and not backward.cell.input_gates
    assert type(model.get_layer("lstm")) is layers.LSTM

    keep = float(keras.ops.convert_to_numpy(eval_gate(lstm.cell.hidden_log_alpha))[0])
    assert 0.0 < keep < 1.0
    gated(x, training=True)
    assert gated.losses and float(sum(gated.losses)) > 0.0
    for w in gated.weights:
        if w.path.endswith("log_alpha"):
            assert w.trainable
            w.assign(np.full(w.shape, OPEN, "float32"))
    np.testing.assert_allclose(outputs(gated, x)[0], expected, atol=1e-6)

    set_hidden(lstm, [CLOSED, OPEN, OPEN, CLOSED, 1.5])
    assert assert_exact(gated, x).get_layer("lstm").units == 3

    with pytest.raises(ValueError, match="Unknown gate arguments"):
        keras_l0.gate_model(model, ["lstm"], units=3)
    with pytest.raises(ValueError, match="at least one layer"):
        keras_l0.gate_model(model, [])
    with pytest.raises(ValueError, match="sequences of layer names"):
        keras_l0.gate_model(model, "lstm")
    with pytest.raises(ValueError, match="No recurrent layer named 'gru'"):
        keras_l0.gate_model(model, ["gru"])
    with pytest.raises(ValueError, match="only plain"):
        keras_l0.gate_model(gated, ["lstm"])


def test_gate_model_copy_computes_the_trained_model_before_training():
    model = plain_lstm_bigru(seed=3)
    x = sequences()
    expected = outputs(model, x)[0]
    gated = keras_l0.gate_model(
        model, ["lstm", "bidirectional/backward_gru"], input_gates=["lstm"]
    )
    for layer in (gated.get_layer("lstm"),
                  gated.get_layer("bidirectional").backward_layer):
        for gate in layer.cell.gates(training=False):
            if gate is not None:
                assert np.all(keras.ops.convert_to_numpy(gate) == 1.0)
    np.testing.assert_allclose(outputs(gated, x)[0], expected, atol=1e-6)
