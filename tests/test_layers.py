import json

import numpy as np
import pytest
import keras
from keras import ops

import keras_l0
from keras_l0 import hard_concrete

OPEN = 10.0  # log_alpha whose eval gate is exactly 1

PAIRS = [
    (keras_l0.GatedLSTM, keras.layers.LSTM, {}),
    (keras_l0.GatedGRU, keras.layers.GRU, {}),
    (keras_l0.GatedGRU, keras.layers.GRU, {"reset_after": False}),
    (keras_l0.GatedSimpleRNN, keras.layers.SimpleRNN, {}),
]
PAIR_IDS = ["lstm", "gru", "gru_reset_before", "simple_rnn"]


def _np(x):
    return ops.convert_to_numpy(x)


def _inputs(shape=(3, 6, 5), seed=0):
    return np.random.RandomState(seed).randn(*shape).astype("float32")


def _set_log_alpha(layer, value, which=("input", "hidden")):
    for var in layer.weights:
        for name in which:
            if var.path.endswith(f"{name}_log_alpha"):
                var.assign(np.broadcast_to(value, var.shape))


def _twins(gated_cls, keras_cls, kwargs, input_shape=(3, 6, 5)):
    gated = gated_cls(4, **kwargs)
    plain = keras_cls(4, **kwargs)
    gated.build(input_shape)
    plain.build(input_shape)
    plain.set_weights([_np(w) for w in gated.weights[: len(plain.weights)]])
    _set_log_alpha(gated, OPEN)
    return gated, plain


@pytest.mark.parametrize("gated_cls,keras_cls,extra", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"return_sequences": True},
        {"return_state": True},
        {"go_backwards": True, "return_sequences": True},
        {"unroll": True},
    ],
    ids=["last", "sequences", "state", "backwards", "unroll"],
)
def test_open_gates_match_keras_layer(gated_cls, keras_cls, extra, kwargs):
    gated, plain = _twins(gated_cls, keras_cls, {**extra, **kwargs})
    x = _inputs()
    for out_g, out_p in zip(
        keras.tree.flatten(gated(x)), keras.tree.flatten(plain(x))
    ):
        np.testing.assert_allclose(_np(out_g), _np(out_p), atol=1e-6, rtol=0)


@pytest.mark.parametrize("gated_cls,keras_cls,extra", PAIRS, ids=PAIR_IDS)
def test_open_gates_match_keras_layer_with_mask(gated_cls, keras_cls, extra):
    tokens = np.array([[3, 4, 0, 0], [5, 1, 2, 0]])
    outputs = []
    for cls in (gated_cls, keras_cls):
        keras.utils.set_random_seed(1)
        model = keras.Sequential(
            [
                keras.Input((4,), dtype="int32"),
                keras.layers.Embedding(7, 5, mask_zero=True),
                cls(4, return_sequences=True, **extra),
            ]
        )
        if cls is gated_cls:
            _set_log_alpha(model.layers[-1], OPEN)
        outputs.append(_np(model(tokens)))
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("gated_cls,keras_cls,extra", PAIRS, ids=PAIR_IDS)
def test_closed_and_fractional_gates_equal_scaled_kernels(
    gated_cls, keras_cls, extra
):
    gated, plain = _twins(
        gated_cls, keras_cls, {**extra, "return_sequences": True}
    )
    rng = np.random.RandomState(3)
    input_la = rng.choice([-10.0, 0.3, 10.0], size=5).astype("float32")
    hidden_la = rng.choice([-10.0, 0.5, 10.0], size=4).astype("float32")
    _set_log_alpha(gated, input_la, which=("input",))
    _set_log_alpha(gated, hidden_la, which=("hidden",))
    z_in = _np(hard_concrete.eval_gate(input_la))
    z_h = _np(hard_concrete.eval_gate(hidden_la))
    kernel, recurrent, *rest = plain.get_weights()
    plain.set_weights(
        [kernel * z_in[:, None], recurrent * z_h[:, None], *rest]
    )
    x = _inputs()
    np.testing.assert_allclose(
        _np(gated(x)), _np(plain(x)) * z_h, atol=1e-6, rtol=0
    )


def test_standalone_cell_applies_eval_gates():
    layer = keras_l0.GatedLSTM(4, return_sequences=True, seed=1)
    layer.build((3, 6, 5))
    _set_log_alpha(layer, np.linspace(-3, 3, 5), which=("input",))
    _set_log_alpha(layer, np.linspace(-2, 3, 4), which=("hidden",))
    rnn = keras.layers.RNN(
        keras_l0.GatedLSTMCell(4), return_sequences=True
    )
    rnn.build((3, 6, 5))
    rnn.set_weights(layer.get_weights())
    x = _inputs()
    np.testing.assert_allclose(
        _np(rnn(x)), _np(layer(x)), atol=1e-6, rtol=0
    )


def test_hard_concrete_monte_carlo_matches_closed_forms():
    values = np.array([-2.0, -0.5, 0.0, 0.7, 2.5], dtype="float32")
    log_alpha = ops.convert_to_tensor(values)
    n = 20000
    seed = keras.random.SeedGenerator(7)
    # n independent draws of each gate: one call on n stacked copies.
    draws = _np(
        hard_concrete.sample(
            ops.convert_to_tensor(np.tile(values, (n, 1))), seed=seed
        )
    )
    assert draws.min() >= 0.0 and draws.max() <= 1.0
    mean, stderr = draws.mean(0), draws.std(0) / np.sqrt(n)
    expected = _np(hard_concrete.expected_gate(log_alpha))
    assert np.all(np.abs(mean - expected) < 3 * stderr + 1e-4)
    nonzero = (draws > 0).mean(0)
    p = _np(hard_concrete.prob_nonzero(log_alpha))
    assert np.all(np.abs(nonzero - p) < 3 * np.sqrt(p * (1 - p) / n) + 1e-4)


def test_keep_probability_initialisation():
    layer = keras_l0.GatedGRU(6, initial_keep_probability=0.8)
    layer.build((2, 3, 4))
    p_in, p_h = layer.cell.keep_probabilities()
    np.testing.assert_allclose(_np(p_in), 0.8, rtol=1e-6)
    np.testing.assert_allclose(_np(p_h), 0.8, rtol=1e-6)
    with pytest.raises(ValueError, match="keep probability"):
        keras_l0.GatedGRU(6, initial_keep_probability=1.0)


def test_eval_gate_is_deterministic_and_training_gate_shared():
    layer = keras_l0.GatedLSTM(
        16, return_sequences=True, input_gates=False, seed=3
    )
    layer.build((8, 5, 3))
    _set_log_alpha(layer, 0.0)
    x = _inputs((8, 5, 3))
    np.testing.assert_array_equal(_np(layer(x)), _np(layer(x)))
    out = _np(layer(x, training=True))
    closed = np.all(out == 0.0, axis=(0, 1))
    some_zero = np.any(out == 0.0, axis=(0, 1))
    # one sample per batch: a unit is either off everywhere or nowhere
    np.testing.assert_array_equal(closed, some_zero)
    assert 0 < closed.sum() < 16
    assert not np.array_equal(out, _np(layer(x, training=True)))


def _expected_l0_by_hand(p_in, p_h, blocks, bias_rows):
    kernel = np.outer(p_in, p_h).sum()
    recurrent = np.outer(p_h, p_h)
    np.fill_diagonal(recurrent, p_h)
    return blocks * (kernel + recurrent.sum() + bias_rows * p_h.sum())


@pytest.mark.parametrize(
    "cls,kwargs,blocks,bias_rows",
    [
        (keras_l0.GatedLSTM, {}, 4, 1),
        (keras_l0.GatedGRU, {}, 3, 2),
        (keras_l0.GatedGRU, {"reset_after": False}, 3, 1),
        (keras_l0.GatedSimpleRNN, {"use_bias": False}, 1, 0),
    ],
)
def test_penalty_is_expected_number_of_weights(cls, kwargs, blocks, bias_rows):
    layer = cls(5, l0_penalty=0.01, **kwargs)
    layer.build((2, 3, 4))
    rng = np.random.RandomState(0)
    _set_log_alpha(layer, rng.randn(4), which=("input",))
    _set_log_alpha(layer, rng.randn(5), which=("hidden",))
    p_in, p_h = (_np(p) for p in layer.cell.keep_probabilities())
    expected = _expected_l0_by_hand(p_in, p_h, blocks, bias_rows)
    np.testing.assert_allclose(_np(layer.cell.expected_l0()), expected, 1e-5)
    layer(_inputs((2, 3, 4)))
    assert len(layer.losses) == 1
    np.testing.assert_allclose(_np(layer.losses[0]), 0.01 * expected, 1e-5)
    # all gates open with certainty: every weight counted
    _set_log_alpha(layer, 50.0)
    np.testing.assert_allclose(
        _np(layer.cell.expected_l0()),
        sum(np.prod(w.shape) for w in layer.trainable_weights[:3])
        if bias_rows
        else sum(np.prod(w.shape) for w in layer.trainable_weights[:2]),
        rtol=1e-5,
    )


def test_neuron_penalty_and_switched_off_gates():
    layer = keras_l0.GatedLSTM(5, penalty_form="neurons", input_gates=False)
    layer.build((2, 3, 4))
    assert layer.cell.input_log_alpha is None
    _set_log_alpha(layer, 50.0)
    np.testing.assert_allclose(_np(layer.cell.expected_l0()), 5.0, 1e-5)
    plain = keras_l0.GatedLSTM(5, input_gates=False, hidden_gates=False)
    plain(_inputs((2, 3, 4)))
    assert plain.losses == [] and len(plain.weights) == 3
    with pytest.raises(ValueError, match="penalty_form"):
        keras_l0.GatedLSTM(5, penalty_form="flops")


def test_one_loss_term_per_gated_layer_in_stacks_and_bidirectional():
    model = keras.Sequential(
        [
            keras.Input((6, 5)),
            keras.layers.Bidirectional(
                keras_l0.GatedLSTM(4, return_sequences=True)
            ),
            keras_l0.GatedGRU(4, return_sequences=True, unroll=True),
            keras_l0.GatedSimpleRNN(3),
            keras.layers.Dense(1),
        ]
    )
    model(_inputs())
    assert len(model.losses) == 4
    penalties = [
        _np(layer.cell.penalty())
        for layer in (
            model.layers[0].forward_layer,
            model.layers[0].backward_layer,
            model.layers[1],
            model.layers[2],
        )
    ]
    np.testing.assert_allclose(
        sorted(_np(loss) for loss in model.losses), sorted(penalties), 1e-6
    )


def _frozen_head_model(lam):
    keras.utils.set_random_seed(0)
    gated = keras_l0.GatedLSTM(
        6, l0_penalty=lam, penalty_form="neurons", input_gates=False
    )
    head = keras.layers.Dense(1, kernel_initializer="zeros", trainable=False)
    model = keras.Sequential([keras.Input((5, 3)), gated, head])
    model.compile(keras.optimizers.SGD(1.0), "mse")
    return model, gated


def test_penalty_gradient_reaches_log_alpha():
    lam = 0.1
    model, gated = _frozen_head_model(lam)
    rng = np.random.RandomState(0)
    _set_log_alpha(gated, rng.randn(6))
    before = _np(gated.cell.hidden_log_alpha)
    x, y = _inputs((4, 5, 3)), np.zeros((4, 1), "float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    after = _np(gated.cell.hidden_log_alpha)
    p = 1.0 / (1.0 + np.exp(-(before - hard_concrete._SHIFT)))
    np.testing.assert_allclose(before - after, lam * p * (1 - p), rtol=1e-4)


def _train_once(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((6, 5)),
            keras_l0.GatedLSTM(8, dropout=0.1, seed=seed),
            keras.layers.Dense(1),
        ]
    )
    model.compile("adam", "mse")
    rng = np.random.RandomState(0)
    model.fit(
        rng.randn(32, 6, 5), rng.randn(32, 1), batch_size=8, epochs=2,
        verbose=0, shuffle=False,
    )
    return [_np(w) for w in model.weights]


def test_seeded_training_is_repeatable():
    first, second = _train_once(5), _train_once(5)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert any(
        not np.array_equal(a, b) for a, b in zip(first, _train_once(6))
    )


ALL_LAYERS = [
    (keras_l0.GatedLSTM, {"l0_penalty": 3e-4, "input_gates": False}),
    (keras_l0.GatedGRU, {"reset_after": False, "penalty_form": "neurons"}),
    (keras_l0.GatedSimpleRNN, {"initial_keep_probability": 0.7}),
    (keras_l0.GatedLSTMCell, {"hidden_gates": False}),
    (keras_l0.GatedGRUCell, {"l0_penalty": 0.0}),
    (keras_l0.GatedSimpleRNNCell, {"dropout": 0.2}),
]


@pytest.mark.parametrize("cls,kwargs", ALL_LAYERS)
def test_get_config_round_trip(cls, kwargs):
    layer = cls(7, **kwargs)
    config = layer.get_config()
    for key, value in kwargs.items():
        assert config[key] == value
    clone = cls.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(restored) is cls and restored.get_config() == config


def _as_json(config):
    return json.loads(json.dumps(config))


def test_save_and_load_keras_file(tmp_path):
    inputs = keras.Input((6, 5))
    x = keras.layers.Bidirectional(
        keras_l0.GatedLSTM(4, return_sequences=True, l0_penalty=1e-3)
    )(inputs)
    x = keras_l0.GatedGRU(4, return_sequences=True)(x)
    x = keras_l0.GatedSimpleRNN(3)(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    model.compile("adam", "mse")
    rng = np.random.RandomState(0)
    model.fit(rng.randn(16, 6, 5), rng.randn(16, 2), epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = _inputs()
    np.testing.assert_array_equal(
        model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    )
    assert _as_json(loaded.get_config()) == _as_json(model.get_config())
    assert [type(layer) for layer in loaded.layers] == [
        type(layer) for layer in model.layers
    ]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_gates_stay_float32_under_mixed_precision(policy):
    keras.config.set_dtype_policy(policy)
    layer = keras_l0.GatedLSTM(4, return_sequences=True)
    out = layer(_inputs(), training=True)
    assert layer.compute_dtype != "float32"
    assert keras.backend.standardize_dtype(out.dtype) == layer.compute_dtype
    assert layer.cell.input_log_alpha.dtype == "float32"
    assert layer.cell.hidden_log_alpha.dtype == "float32"
    for gate in layer.cell.gates(training=True):
        assert keras.backend.standardize_dtype(gate.dtype) == "float32"
    assert keras.backend.standardize_dtype(layer.losses[0].dtype) == "float32"


def test_stateful_layer_carries_raw_state():
    layer = keras_l0.GatedLSTM(4, stateful=True, return_state=True)
    layer.build((3, 6, 5))
    _set_log_alpha(layer, np.linspace(-1, 3, 4), which=("hidden",))
    x = _inputs()
    _, h, c = layer(x)
    np.testing.assert_allclose(_np(layer.states[0]), _np(h), atol=0)
    fresh = keras_l0.GatedLSTM(4, return_state=True)
    fresh.build((3, 6, 5))
    fresh.set_weights(layer.get_weights())
    out2, _, _ = fresh(x, initial_state=[h, c])
    np.testing.assert_allclose(_np(layer(x)[0]), _np(out2), atol=1e-6)


@pytest.mark.parametrize("cls", [keras_l0.GatedLSTM, keras_l0.GatedGRU])
def test_bidirectional_never_takes_the_ungated_fused_path(cls):
    layer = keras.layers.Bidirectional(cls(4, return_sequences=True))
    clone = keras.layers.Bidirectional.from_config(layer.get_config())
    off = keras.layers.Bidirectional(cls(4, use_cudnn=False))
    layer.build((3, 6, 5))
    assert not layer._can_attempt_fused_lstm(None)
    assert not layer._can_attempt_fused_gru(None)
    seen = []
    inner_loop = layer.forward_layer.inner_loop

    def spy(*args, **kwargs):
        seen.append(layer.forward_layer.use_cudnn)
        return inner_loop(*args, **kwargs)

    layer.forward_layer.inner_loop = spy
    layer(_inputs())
    assert seen == ["auto"]
    for wrapper in (clone, off):
        wrapper.build((3, 6, 5))
        assert not wrapper._can_attempt_fused_lstm(None)
        assert not wrapper._can_attempt_fused_gru(None)
    assert off.backward_layer._use_cudnn is False
    assert clone.forward_layer._use_cudnn == "auto"
