"""Random graphs of the layer kinds shrink handles: never a wrong number,
never a crash (every refusal is a ShrinkError naming a layer)."""

import os
import re
import time
import warnings

import keras
import numpy as np
import pytest
from hypothesis import Phase
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from keras import layers

import keras_l0
from architectures import randomize
from keras_l0.shrink import ShrinkError
from keras_l0.shrink import shrink
from keras_l0.summary import count_params_after_shrink

# JAX and torch compile every new model's time loop: fewer examples there.
DEFAULT_EXAMPLES = 500 if keras.backend.backend() == "tensorflow" else 20
EXAMPLES = int(os.environ.get("SHRINK_EXAMPLES", 0)) or DEFAULT_EXAMPLES
# clear_session collects garbage (~0.4 s): only every so many graphs.
CLEAR_EVERY = 50
RNN = {
    "lstm": keras_l0.GatedLSTM,
    "gru": keras_l0.GatedGRU,
    "simple": keras_l0.GatedSimpleRNN,
}
RUNS = {"examples": 0, "refused": 0, "seconds": 0.0}


def normalised(x):
    return x / (keras.ops.sum(keras.ops.abs(x), axis=-1, keepdims=True) + 1.0)


def source(spec, inputs):
    kind = spec["source"]
    if kind == "embedding":
        return layers.Embedding(12, 5, mask_zero=spec["mask"])(inputs)
    if kind == "conv":
        x = layers.Conv1D(
            5, 2, padding=spec["padding"], activation="relu"
        )(inputs)
        return layers.MaxPooling1D(2, padding="same")(x)
    if kind.startswith("dense:"):
        activation = kind[6:]
        if activation == "custom":
            activation = normalised
        return layers.Dense(5, activation=activation)(inputs)
    return inputs


def connector(kind, x):
    if kind == "dropout":
        return layers.Dropout(0.3)(x)
    if kind == "batchnorm":
        return layers.BatchNormalization()(x)
    if kind == "sigmoid":
        return layers.Activation("sigmoid")(x)
    if kind == "relu":
        return layers.ReLU()(x)
    if kind == "layernorm":
        return layers.LayerNormalization()(x)
    if kind == "lambda":
        return layers.Lambda(lambda t: t * 1.5)(x)
    return x


def recurrent(kind, units, merge, **kwargs):
    rnn = RNN[kind](units, **kwargs)
    if merge == "none":
        return rnn
    return layers.Bidirectional(rnn, merge_mode=merge)


def head(kind, x):
    if kind == "dense":
        return layers.Dense(3)(x)
    if kind == "time_distributed":
        return layers.TimeDistributed(layers.Dense(3))(x)
    if kind == "mha":
        x = layers.MultiHeadAttention(num_heads=2, key_dim=2)(x, x)
        return layers.GlobalAveragePooling1D()(x)
    if kind == "attention":
        x = layers.Attention()([x, x])
        return layers.GlobalMaxPooling1D()(x)
    if kind == "additive":
        x = layers.AdditiveAttention()([x, x])
        return layers.GlobalAveragePooling1D()(x)
    return x


def build(spec):
    if spec["source"] == "embedding":
        inputs = keras.Input((None,), dtype="int32")
    else:
        inputs = keras.Input((None, 4))
    x = source(spec, inputs)
    first, second = spec["first"], spec["second"]
    units = spec["units"]
    if spec["topology"] == "encoder_decoder":
        encoded = RNN[first](units, return_state=True)(x)
        states = list(encoded[1:])
        x = RNN[first](units, return_sequences=True)(x, initial_state=states)
    else:
        x = recurrent(first, units, spec["merge"], return_sequences=True)(x)
        x = connector(spec["connector"], x)
        if spec["topology"] == "residual":
            width = x.shape[-1]
            y = RNN[second](width, return_sequences=True)(x)
            x = (layers.Add() if spec["sum"] else layers.Multiply())([x, y])
        elif spec["topology"] == "concat":
            y = RNN[second](units, return_sequences=True)(x)
            x = layers.Concatenate()([x, y])
        elif spec["topology"] == "stack":
            x = RNN[second](units, return_sequences=True)(x)
    return keras.Model(inputs, head(spec["head"], x))


GRAPHS = st.fixed_dictionaries(
    {
        "source": st.sampled_from(
            ["raw", "embedding", "conv", "dense:tanh", "dense:relu",
             "dense:sigmoid", "dense:sparsemax", "dense:softmax",
             "dense:custom"]
        ),
        "mask": st.booleans(),
        "padding": st.sampled_from(["valid", "same", "causal"]),
        "topology": st.sampled_from(
            ["single", "stack", "residual", "concat", "encoder_decoder"]
        ),
        "first": st.sampled_from(sorted(RNN)),
        "second": st.sampled_from(sorted(RNN)),
        "units": st.integers(1, 4),
        "merge": st.sampled_from(["none", "none", "concat", "sum", "ave", "mul"]),
        "connector": st.sampled_from(
            ["none", "dropout", "batchnorm", "sigmoid", "relu", "layernorm",
             "lambda"]
        ),
        "sum": st.booleans(),
        "head": st.sampled_from(
            ["dense", "time_distributed", "mha", "attention", "additive", "none"]
        ),
        "seed": st.integers(0, 2**16),
    }
)


def outputs(model, x, **kwargs):
    return [
        np.asarray(keras.ops.convert_to_numpy(y))
        for y in keras.tree.flatten(model(x, **kwargs))
    ]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.generate],
)
@given(GRAPHS)
def test_random_graphs_exact_or_refused_by_name(spec):
    start = time.perf_counter()
    RUNS["examples"] += 1
    model = build(spec)
    randomize(model, seed=spec["seed"])
    rng = np.random.default_rng(spec["seed"])
    if spec["source"] == "embedding":
        x = rng.integers(0, 12, size=(2, 4))
        x[0, :2] = 0
    else:
        x = rng.normal(size=(2, 4, 4)).astype("float32")
    expected = outputs(model, x, training=False)
    names = {layer.name for layer in model.layers}
    for layer in model.layers:
        if isinstance(layer, layers.Bidirectional):
            names |= {
                f"{layer.name}/{d.name}"
                for d in (layer.forward_layer, layer.backward_layer)
            }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            slim = shrink(model)
        except ShrinkError as error:
            RUNS["refused"] += 1
            quoted = set(re.findall(r"'([^']+)'", str(error)))
            assert quoted & names, f"no layer named in: {error}"
            return
        planned = count_params_after_shrink(model)
    got = outputs(slim, x)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=0)
    assert slim.count_params() == planned
    RUNS["seconds"] += time.perf_counter() - start
    if RUNS["examples"] % CLEAR_EVERY == 0:
        keras.backend.clear_session()


def test_enough_random_graphs_ran():
    if RUNS["examples"] == 0:
        pytest.skip("run together with test_random_graphs_exact_or_refused_by_name")
    print(
        f"\n{RUNS['examples']} random graphs, {RUNS['refused']} refused "
        "with a ShrinkError naming a layer"
    )
    assert RUNS["examples"] >= EXAMPLES
    assert RUNS["refused"] < RUNS["examples"] / 2
