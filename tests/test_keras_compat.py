"""keras_l0._keras_compat reads Keras internals: re-check it on new Keras.

If a test here fails after a Keras upgrade, re-check every function of
`keras_l0/_keras_compat.py` (and the `cudnn_ok` import in
`keras_l0/layers/gating.py`) against the new Keras, then add the version to
`CHECKED_KERAS_VERSIONS`.
"""

import importlib

import keras
import pytest

from keras_l0 import _keras_compat as compat

RECHECK = (
    "re-check keras_l0/_keras_compat.py against this Keras version, then add "
    "it to CHECKED_KERAS_VERSIONS"
)


def small_model():
    inputs = keras.Input((None, 4))
    x = keras.layers.Dense(3)(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def test_keras_version_was_checked():
    assert keras.__version__ in compat.CHECKED_KERAS_VERSIONS, (
        f"Keras {keras.__version__}: {RECHECK}."
    )


def test_graph_internals_exist():
    model = small_model()
    graph = compat.functional_graph(model)
    for name in compat.GRAPH_ATTRIBUTES:
        assert hasattr(graph, name), f"Functional.{name} is gone: {RECHECK}."
    nodes = compat.graph_nodes(graph)
    assert [compat.node_operation(n).name for n in nodes] == [
        layer.name for layer in model.layers
    ]
    for node in nodes:
        for name in compat.NODE_ATTRIBUTES:
            assert hasattr(node, name), f"Node.{name} is gone: {RECHECK}."
    first = nodes[1]
    assert compat.node_input_tensors(first) == [model.inputs[0]]
    args, kwargs = compat.node_call(first)
    assert args[0] is model.inputs[0] and not kwargs
    assert compat.producer(model.outputs[0]) is model.layers[-1]


def test_fill_in_replaces_tensors():
    model = small_model()
    node = compat.graph_nodes(compat.functional_graph(model))[1]
    other = keras.Input((None, 4))
    args, _ = compat.fill_in(node, {id(model.inputs[0]): other})
    assert args[0] is other


def test_sequential_and_subclassed_models():
    seq = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert compat.functional_graph(seq) is not None
    assert compat.functional_graph(keras.Sequential()) is None

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError):
        compat.functional_graph(Sub())


def test_attention_projections_exist():
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3)
    x = keras.Input((5, 4))
    layer(x, x)
    projections = compat.attention_projections(layer)
    assert sorted(projections) == ["key", "output", "query", "value"]
    assert projections["query"].kernel.shape == (4, 2, 3)
    assert projections["output"].kernel.shape == (2, 3, 4)
    assert compat.sublayers(layer)[0] is layer


def test_cudnn_ok_import_of_gating_still_exists():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("only imported on the TensorFlow backend")
    module = importlib.import_module("keras.src.backend.tensorflow.rnn")
    assert hasattr(module, "cudnn_ok"), f"cudnn_ok is gone: {RECHECK}."


def test_budget_controller_leaves_async_batch_dispatch_on():
    # Keras fetches every step's logs (no asynchronous dispatch on JAX and
    # torch) as soon as one callback has an `on_train_batch_end` hook;
    # `BudgetController` updates in `on_train_batch_begin` for that reason.
    from keras_l0.callbacks import BudgetController

    callbacks = keras.callbacks.CallbackList([BudgetController(0.5)])
    assert hasattr(callbacks, "_async_train"), (
        f"CallbackList._async_train is gone: {RECHECK}."
    )
    assert callbacks._async_train == keras.src.backend.IS_THREAD_SAFE
