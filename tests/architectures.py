"""The architecture catalogue: recurrent models as users build them.

Shared by the shrink tests and the export tests. Every `Case` builds a gated
model (`build(seed)`), sets random weights and gates (`randomize`), and makes
inputs for it (`inputs`). What a case expects:

- `shrink_error`: `None` where `keras_l0.shrink` must rebuild the model
  exactly; otherwise a regex that the `ShrinkError` message must match
  (given the gates `randomize` sets, which always close some units).
- `modes`: the TFLite sequence modes that apply after shrinking: `"fixed"`
  (the model's own length, or `LENGTH`), `"variable"` and `"streaming"` (one
  time step per call, states in and out). Streaming applies to causal
  per-step models only.
- `batch_size`: a fixed batch size (stateful models), else `None`.
- `padding`: the padding token of a masked token input (pre-padded inputs
  are generated), or `None`.

`CASES` are the architectures every test covers; `SHRINK_CASES` add the
shrink-only ones (layers holding Python functions), `ALL_CASES` both.
"""

import dataclasses

import keras
import numpy as np
from keras import layers

import keras_l0

LENGTH = 6
FEATURES = 5
VOCABULARY = 20
# Inference gates: closed, open, and three fractional values.
LOG_ALPHAS = np.array([-10.0, 10.0, -1.0, 0.5, 1.5], "float32")
CLOSED = -10.0
OPEN = 10.0


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    build: object
    modes: tuple = ("fixed", "variable")
    shrink_error: str = None
    batch_size: int = None
    padding: int = None

    def __str__(self):
        return self.name

    def model(self, seed=0):
        """The gated model with random weights and gates."""
        keras.utils.set_random_seed(seed)
        model = self.build()
        randomize(model, seed)
        return model

    def inputs(self, model, seed=0, batch=None, length=LENGTH):
        """Random inputs for `model`: one array per model input."""
        rng = np.random.default_rng(seed)
        batch = self.batch_size or batch or 2
        arrays = []
        for tensor in model.inputs:
            shape = tuple(tensor.shape[1:])
            shape = tuple(length if d is None else d for d in shape)
            if "int" in str(tensor.dtype):
                x = rng.integers(1, VOCABULARY, size=(batch, *shape))
                if self.padding is not None:
                    pads = rng.integers(0, shape[0] // 2 + 1, size=batch)
                    for row, pad in enumerate(pads):
                        x[row, :pad] = self.padding
                arrays.append(x.astype("int32"))
            else:
                arrays.append(
                    rng.normal(size=(batch, *shape)).astype("float32")
                )
        return arrays


def randomize(model, seed=0):
    """Random weights, and a random mix of closed, open and fractional
    gates with at least one closed and one open gate per gate vector."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        path = w.path
        if path.endswith("log_alpha"):
            values = rng.choice(LOG_ALPHAS, size=w.shape)
            if w.shape[0] >= 2:
                values[rng.choice(w.shape[0], 2, replace=False)] = [
                    CLOSED,
                    OPEN,
                ]
            w.assign(values.astype("float32"))
        elif path.endswith(("l0_penalty", "gate_scale", "step_scale")):
            continue
        elif path.endswith("moving_variance"):
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype("float32"))
        elif w.dtype in ("float32", "float16", "bfloat16"):
            w.assign(rng.normal(0.0, 0.5, w.shape).astype("float32"))


def _sequence(dtype="float32", features=FEATURES, length=None, **kwargs):
    shape = (length,) if dtype == "int32" else (length, features)
    return keras.Input(shape, dtype=dtype, **kwargs)


def masked_text_bilstm():
    tokens = _sequence("int32", name="tokens")
    x = layers.Embedding(VOCABULARY, 6, mask_zero=True)(tokens)
    x = layers.Bidirectional(keras_l0.GatedLSTM(5, return_sequences=True))(x)
    pooled = layers.Concatenate()(
        [layers.GlobalMaxPooling1D()(x), layers.GlobalAveragePooling1D()(x)]
    )
    return keras.Model(tokens, layers.Dense(3)(pooled))


def masked_sensor_lstm():
    series = _sequence(name="series")
    x = layers.Masking(0.0)(series)
    x = keras_l0.GatedLSTM(6)(x)
    return keras.Model(series, layers.Dense(3, activation="softmax")(x))


def cnn_lstm():
    series = _sequence(name="series")
    x = layers.Conv1D(8, 3, padding="same", activation="relu")(series)
    x = layers.MaxPooling1D(2)(x)
    x = keras_l0.GatedLSTM(6)(x)
    return keras.Model(series, layers.Dense(3)(x))


def lstm_batchnorm_lstm():
    series = _sequence()
    x = keras_l0.GatedLSTM(6, return_sequences=True)(series)
    x = layers.BatchNormalization()(x)
    x = keras_l0.GatedLSTM(5, return_sequences=True)(x)
    return keras.Model(series, layers.Dense(2)(x))


def residual_add():
    series = _sequence()
    x = keras_l0.GatedLSTM(6, return_sequences=True)(series)
    y = keras_l0.GatedLSTM(6, return_sequences=True)(x)
    x = layers.Add()([x, y])
    return keras.Model(series, layers.Dense(2)(x))


def _encoder_decoder(gated, states):
    source = _sequence(name="source")
    target = _sequence(name="target")
    encoded = gated(6, return_state=True)(source)
    decoded = gated(6, return_sequences=True)(
        target, initial_state=list(encoded[1 : 1 + states])
    )
    return keras.Model(
        [source, target], layers.TimeDistributed(layers.Dense(4))(decoded)
    )


def encoder_decoder_lstm():
    return _encoder_decoder(keras_l0.GatedLSTM, 2)


def encoder_decoder_gru():
    return _encoder_decoder(keras_l0.GatedGRU, 1)


def lstm_attention():
    series = _sequence()
    x = keras_l0.GatedLSTM(6, return_sequences=True)(series)
    x = layers.MultiHeadAttention(num_heads=2, key_dim=3)(x, x)
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(series, layers.Dense(2)(x))


def lstm_dot_attention():
    series = _sequence()
    x = keras_l0.GatedLSTM(6, return_sequences=True)(series)
    x = layers.Attention()([x, x])
    x = layers.GlobalMaxPooling1D()(x)
    return keras.Model(series, layers.Dense(2)(x))


def _bidirectional(merge_mode):
    def build():
        series = _sequence()
        x = layers.Bidirectional(
            keras_l0.GatedGRU(5, return_sequences=True), merge_mode=merge_mode
        )(series)
        return keras.Model(series, layers.Dense(2)(x))

    build.__name__ = f"bidirectional_{merge_mode}"
    return build


def two_inputs_concatenated():
    a = _sequence(name="audio")
    b = _sequence(features=3, name="motion")
    x = layers.Concatenate()(
        [
            keras_l0.GatedLSTM(4, return_sequences=True)(a),
            keras_l0.GatedGRU(3, return_sequences=True)(b),
        ]
    )
    return keras.Model([a, b], layers.Dense(2)(keras_l0.GatedLSTM(4)(x)))


def stateful_lstm():
    series = keras.Input((LENGTH, FEATURES), batch_size=2)
    x = keras_l0.GatedLSTM(6, return_sequences=True, stateful=True)(series)
    return keras.Model(series, layers.Dense(2)(x))


def gru_reset_before():
    series = _sequence()
    x = keras_l0.GatedGRU(6, reset_after=False, return_sequences=True)(series)
    return keras.Model(series, layers.Dense(2)(x))


def simple_rnn_relu_unrolled():
    series = _sequence(length=LENGTH)
    x = keras_l0.GatedSimpleRNN(
        6, activation="relu", unroll=True, return_sequences=True
    )(series)
    return keras.Model(series, layers.Dense(2)(x))


def time_distributed_head():
    tokens = _sequence("int32")
    x = layers.Embedding(VOCABULARY, 6)(tokens)
    x = keras_l0.GatedLSTM(6, return_sequences=True)(x)
    x = keras_l0.GatedLSTM(5, return_sequences=True)(x)
    return keras.Model(tokens, layers.TimeDistributed(layers.Dense(VOCABULARY))(x))


def sequential_with_add():
    model = keras.Sequential()
    model.add(keras.Input((None, FEATURES)))
    model.add(layers.Dense(6, activation="tanh"))
    model.add(keras_l0.GatedLSTM(6, return_sequences=True))
    model.add(layers.Dropout(0.2))
    model.add(keras_l0.GatedGRU(4, return_sequences=True))
    model.add(layers.Dense(2))
    return model


def lstm_layer_normalization():
    series = _sequence()
    x = keras_l0.GatedLSTM(6, return_sequences=True)(series)
    x = layers.LayerNormalization()(x)
    return keras.Model(series, layers.Dense(2)(x))


STREAMING = ("fixed", "variable", "streaming")

CASES = (
    Case("masked_text_bilstm", masked_text_bilstm, padding=0),
    Case("masked_sensor_lstm", masked_sensor_lstm),
    Case("cnn_lstm", cnn_lstm),
    Case("lstm_batchnorm_lstm", lstm_batchnorm_lstm, modes=STREAMING),
    Case("residual_add", residual_add, modes=STREAMING),
    Case("encoder_decoder_lstm", encoder_decoder_lstm),
    Case("encoder_decoder_gru", encoder_decoder_gru),
    Case("lstm_attention", lstm_attention),
    Case("lstm_dot_attention", lstm_dot_attention),
    Case("bidirectional_sum", _bidirectional("sum")),
    Case("bidirectional_ave", _bidirectional("ave")),
    Case("two_inputs_concatenated", two_inputs_concatenated, modes=STREAMING),
    Case("stateful_lstm", stateful_lstm, modes=("fixed",), batch_size=2),
    Case("gru_reset_before", gru_reset_before, modes=STREAMING),
    Case("simple_rnn_relu_unrolled", simple_rnn_relu_unrolled, modes=("fixed",)),
    Case("time_distributed_head", time_distributed_head, modes=STREAMING),
    Case("sequential_with_add", sequential_with_add, modes=STREAMING),
    Case(
        "lstm_layer_normalization",
        lstm_layer_normalization,
        shrink_error="layer_normalization",
    ),
)


def _across_features(x):
    """A custom activation that normalises across features."""
    return x / (keras.ops.sum(keras.ops.abs(x), axis=-1, keepdims=True) + 1.0)


def _soft_sign(x):
    return x / (1.0 + keras.ops.abs(x))


def dense_sparsemax_lstm():
    series = _sequence()
    x = layers.Dense(6, activation="sparsemax")(series)
    x = keras_l0.GatedLSTM(5)(x)
    return keras.Model(series, layers.Dense(2)(x))


def dense_custom_activation_lstm():
    series = _sequence()
    x = layers.Dense(6, activation=_across_features)(series)
    x = keras_l0.GatedLSTM(5)(x)
    return keras.Model(series, layers.Dense(2)(x))


def python_function_layers():
    series = _sequence()
    x = layers.Lambda(lambda t: 2.0 * t)(series)
    x = keras_l0.GatedLSTM(5, return_sequences=True)(x)
    x = layers.Dense(4, activation=_soft_sign)(x)
    return keras.Model(series, layers.Dense(2, activation=_soft_sign)(x))


# Cases for shrink only: layers holding Python functions do not save or
# export, and the export tests iterate over `CASES`.
SHRINK_CASES = (
    Case("dense_sparsemax_lstm", dense_sparsemax_lstm),
    Case("dense_custom_activation_lstm", dense_custom_activation_lstm),
    Case("python_function_layers", python_function_layers),
)
ALL_CASES = CASES + SHRINK_CASES
BY_NAME = {case.name: case for case in ALL_CASES}
