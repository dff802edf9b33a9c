import warnings

import keras
import numpy as np
import pytest
from keras import layers

import keras_l0
from keras_l0.shrink import shrink
from keras_l0.summary import count_params_after_shrink
from keras_l0.summary import flops_per_step
from keras_l0.summary import summary

OPEN, CLOSED, HALF = 10.0, -10.0, 0.0


def set_gates(layer, hidden=None, inputs=None):
    if hidden is not None:
        layer.cell.hidden_log_alpha.assign(np.asarray(hidden, "float32"))
    if inputs is not None:
        layer.cell.input_log_alpha.assign(np.asarray(inputs, "float32"))


def lstm_model():
    inputs = keras.Input((None, 6))
    gated = keras_l0.GatedLSTM(8, return_sequences=True, name="gated")
    plain = layers.LSTM(5, name="plain")
    model = keras.Model(inputs, layers.Dense(2)(plain(gated(inputs))))
    set_gates(
        gated,
        hidden=[OPEN, CLOSED, HALF, CLOSED, CLOSED, OPEN, CLOSED, CLOSED],
        inputs=[OPEN, CLOSED, OPEN, HALF, CLOSED, OPEN],
    )
    return model


def test_rows_count_the_slim_layers():
    rows = summary(lstm_model(), print_fn=None)
    lstm = 4  # gate blocks
    assert rows == [
        {
            "name": "gated",
            "type": "GatedLSTM",
            "units": 8,
            "units_kept": 3,
            "inputs": 6,
            "inputs_kept": 4,
            # weights, then the 6 + 8 log_alphas, l0_penalty, gate_scale,
            # step_scale.
            "params": lstm * (6 * 8 + 8 * 8 + 8) + 6 + 8 + 3,
            # a raw model input keeps its 6 features.
            "params_kept": lstm * (6 * 3 + 3 * 3 + 3),
            "flops_per_step": 2 * lstm * (6 * 8 + 8 * 8),
            "flops_per_step_kept": 2 * lstm * (6 * 3 + 3 * 3),
        },
        {
            "name": "plain",
            "type": "LSTM",
            "units": 5,
            "units_kept": 5,
            "inputs": 8,
            "inputs_kept": 3,
            "params": lstm * (8 * 5 + 5 * 5 + 5),
            "params_kept": lstm * (3 * 5 + 5 * 5 + 5),
            "flops_per_step": 2 * lstm * (8 * 5 + 5 * 5),
            "flops_per_step_kept": 2 * lstm * (3 * 5 + 5 * 5),
        },
    ]


def test_prints_an_aligned_table():
    lines = []
    model = lstm_model()
    summary(model, print_fn=lines.append)
    assert lines[0].split() == [
        "Layer",
        "Type",
        "Units",
        "Inputs",
        "Params",
        "FLOPs/step",
    ]
    assert len(lines) == 4
    assert len({len(line) for line in lines}) == 1
    assert lines[1].split()[:4] == ["gated", "GatedLSTM", "3/8", "4/6"]
    assert lines[2].split()[:4] == ["plain", "LSTM", "5/5", "3/8"]
    total = lines[3].split()
    assert total[0] == "total"
    slim = shrink(model)
    assert total[1:4] == [
        f"{model.count_params():,}",
        "->",
        f"{slim.count_params():,}",
    ]
    assert total[4:] == [
        f"{flops_per_step(model):,}",
        "->",
        f"{flops_per_step(slim):,}",
    ]
    for line in lines[1:]:
        assert line.index("->") == lines[1].index("->")


def test_flops_per_step_by_hand():
    inputs = keras.Input((None, 3))
    x = layers.Bidirectional(layers.GRU(2, return_sequences=True))(inputs)
    x = layers.SimpleRNN(4)(x)
    model = keras.Model(inputs, layers.Dense(2)(x))
    gru = 2 * 3 * (3 * 2 + 2 * 2)
    simple = 2 * 1 * (4 * 4 + 4 * 4)
    assert flops_per_step(model) == 2 * gru + simple + 2 * 4 * 2


def test_plain_model_keeps_everything():
    inputs = keras.Input((None, 3))
    model = keras.Model(inputs, layers.GRU(4)(inputs))
    (row,) = summary(model, print_fn=None)
    assert row["units_kept"] == row["units"] == 4
    assert row["params_kept"] == row["params"] == model.count_params()
    assert count_params_after_shrink(model) == model.count_params()


def embedding_model():
    inputs = keras.Input((None,), dtype="int32")
    x = layers.Embedding(30, 6, mask_zero=True)(inputs)
    rnn = keras_l0.GatedGRU(4, return_sequences=True)
    model = keras.Model(inputs, layers.TimeDistributed(layers.Dense(3))(rnn(x)))
    set_gates(
        rnn,
        hidden=[OPEN, CLOSED, HALF, OPEN],
        inputs=[CLOSED, OPEN, OPEN, CLOSED, HALF, OPEN],
    )
    return model


def dense_fed_model():
    inputs = keras.Input((None, 5))
    x = layers.Dense(6, activation="relu")(inputs)
    rnn = keras_l0.GatedSimpleRNN(4, return_sequences=True)
    model = keras.Model(inputs, rnn(layers.Dropout(0.1)(x)))
    set_gates(
        rnn,
        hidden=[CLOSED, OPEN, HALF, OPEN],
        inputs=[OPEN, CLOSED, CLOSED, HALF, OPEN, OPEN],
    )
    return model


def bidirectional_model(merge_mode):
    inputs = keras.Input((None, 5))
    bi = layers.Bidirectional(
        keras_l0.GatedLSTM(4, return_sequences=True), merge_mode=merge_mode
    )
    rnn = keras_l0.GatedGRU(3, reset_after=False)
    model = keras.Model(inputs, layers.Dense(2)(rnn(bi(inputs))))
    set_gates(bi.forward_layer, [OPEN, CLOSED, HALF, CLOSED])
    set_gates(bi.backward_layer, [OPEN, OPEN, HALF, CLOSED])
    set_gates(rnn, [CLOSED] * 3)
    return model


def sequential_model():
    model = keras.Sequential(
        [
            keras.Input((None, 4)),
            keras_l0.GatedLSTM(5, return_sequences=True),
            keras_l0.GatedLSTM(3),
        ]
    )
    set_gates(model.layers[0], [OPEN, HALF, CLOSED, OPEN, CLOSED])
    set_gates(model.layers[1], [HALF, HALF, HALF])
    return model


@pytest.mark.parametrize(
    "make",
    [
        lstm_model,
        embedding_model,
        dense_fed_model,
        lambda: bidirectional_model("concat"),
        lambda: bidirectional_model("sum"),
        sequential_model,
    ],
    ids=["lstm", "embedding", "dense_fed", "bi_concat", "bi_sum", "sequential"],
)
def test_prediction_equals_the_slim_model(make):
    model = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rows = summary(model, print_fn=None)
        predicted = count_params_after_shrink(model)
        slim = shrink(model)
        lines = []
        summary(model, print_fn=lines.append)
    assert predicted == slim.count_params()
    assert predicted < model.count_params()
    slim_rows = summary(slim, print_fn=None)
    assert [r["name"] for r in slim_rows] == [r["name"] for r in rows]
    for row, slim_row in zip(rows, slim_rows):
        assert slim_row["units"] == row["units_kept"]
        assert slim_row["params"] == row["params_kept"]
        assert slim_row["flops_per_step"] == row["flops_per_step_kept"]
    assert lines[-1].split()[6] == f"{flops_per_step(slim):,}"
