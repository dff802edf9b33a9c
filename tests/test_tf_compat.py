"""The private TensorFlow / tf_keras / Keras APIs that keras_l0.export uses.

Every one of them is reached through `keras_l0.export._tf_compat`; these
tests fail when an upgrade removes or changes one, naming it, instead of
letting a conversion fail somewhere deep inside the converter.
"""

import inspect

import keras
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")

from keras_l0.export import _tf_compat  # noqa: E402


def test_pinned_versions_are_the_checked_ones():
    # A failure here means: re-run this file's checks against the new
    # version, then update the *_VERSION_CHECKED constants.
    assert tf.__version__ == _tf_compat.TF_VERSION_CHECKED
    assert tf_keras.__version__ == _tf_compat.TF_KERAS_VERSION_CHECKED
    assert keras.__version__ == _tf_compat.KERAS_VERSION_CHECKED


def test_converter_quantize_step_exists_with_its_signature():
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [tf.function(lambda x: x + 1.0).get_concrete_function(
            tf.TensorSpec((1,), tf.float32)
        )]
    )
    assert hasattr(converter, "experimental_new_quantizer")
    parameters = _tf_compat.quantize_parameters(converter)
    assert parameters[:3] == ["result", "input_type", "output_type"], parameters
    edited = []
    _tf_compat.use_old_quantizer(converter, lambda m: edited.append(m) or m)
    assert converter.experimental_new_quantizer is False
    assert callable(converter._quantize)


def test_flatbuffer_schema_helpers_exist():
    schema = _tf_compat.schema
    utils = _tf_compat.flatbuffer_utils
    for name in ("BufferT", "TensorT", "OperatorT", "OperatorCodeT"):
        assert hasattr(schema, name), name
    assert hasattr(schema, "FillOptionsT")
    assert schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM == 44
    for name in ("convert_bytearray_to_object", "convert_object_to_bytearray"):
        assert callable(getattr(utils, name)), name


def _model():
    inputs = keras.Input((3, 2), name="x")
    hidden = keras.layers.Dense(4, name="dense")(inputs)
    return keras.Model(inputs, keras.layers.LSTM(2, name="lstm")(hidden))


def test_functional_graph_internals():
    model = _model()
    graph = _tf_compat.functional_of(model)
    assert graph is model
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert _tf_compat.functional_of(sequential) is not None
    names = [
        node.operation.name
        for node in _tf_compat.nodes(graph)
        if node.operation is not None and not node.is_input
    ]
    assert names == ["dense", "lstm"]
    assert _tf_compat.producer(model.outputs[0]).name == "lstm"
    assert "training" in _tf_compat.context_arguments(model.get_layer("lstm"))
    parameters = inspect.signature(type(model)._run_through_graph).parameters
    assert list(parameters)[:3] == ["self", "inputs", "operation_fn"]
    calls = []

    def operation_fn(operation):
        calls.append(operation.name)
        return operation

    x = np.ones((1, 3, 2), "float32")
    y = _tf_compat.run_through_graph(model, [x], operation_fn)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y), model(x))
    assert calls == ["dense", "lstm"]
    assert _tf_compat.inputs_struct(model) is not None


def test_keras_mask_attribute():
    embedding = keras.layers.Embedding(5, 2, mask_zero=True)
    y = embedding(tf.constant([[0, 1, 2]]))
    mask = _tf_compat.get_mask(y)
    assert mask is not None
    np.testing.assert_array_equal(np.asarray(mask), [[False, True, True]])
    _tf_compat.clear_mask(y)
    assert _tf_compat.get_mask(y) is None
    # tf_keras reads the same attribute.
    assert getattr(y, "_keras_mask", None) is None
