"""Every private TensorFlow, tf_keras and Keras API that the export uses.

The export reads a few attributes that are not public API: the node graph
of a functional Keras model, the Keras mask attribute of tensors, the TFLite
converter's quantization step and its flatbuffer schema helpers. They are
all reached through this module, and `tests/test_tf_compat.py` checks that
they still exist with the expected signatures, so that an upgrade of
TensorFlow or Keras fails there, by name, rather than deep in a conversion.
The versions below are the ones checked.
"""

import inspect

import keras
from keras.src.backend.common import masking
from tensorflow.lite.python import schema_py_generated as schema  # noqa: F401
from tensorflow.lite.tools import flatbuffer_utils  # noqa: F401

TF_VERSION_CHECKED = "2.21.0"
TF_KERAS_VERSION_CHECKED = "2.21.0"
KERAS_VERSION_CHECKED = "3.15.1"


def functional_of(model):
    """The functional graph of a Sequential or functional model, or None."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth"):
        return model
    return None


def nodes(functional):
    """The nodes of a functional model, deepest (the inputs) first."""
    by_depth = functional._nodes_by_depth
    for depth in sorted(by_depth, reverse=True):
        yield from by_depth[depth]


def run_through_graph(functional, inputs, operation_fn):
    """Runs `operation_fn(operation)(*args, **kwargs)` at every node."""
    return functional._run_through_graph(inputs, operation_fn=operation_fn)


def inputs_struct(functional):
    """The nesting of the model's inputs (list, dict, single tensor)."""
    return functional._inputs_struct


def producer(tensor):
    """The operation (layer) that produced a symbolic Keras tensor."""
    return tensor._keras_history.operation


def context_arguments(operation):
    """The call-context arguments (`training`, ...) that `operation`
    takes."""
    return getattr(operation, "_call_context_args", ())


def get_mask(tensor):
    return masking.get_keras_mask(tensor)


def clear_mask(tensor):
    masking.set_keras_mask(tensor, None)


def use_old_quantizer(converter, edit_model):
    """Calibrates with the older (non-MLIR) quantizer, after passing the
    float flatbuffer through `edit_model(bytes) -> bytes`."""
    converter.experimental_new_quantizer = False
    quantize = converter._quantize
    converter._quantize = lambda model, *args, **kwargs: quantize(
        edit_model(model), *args, **kwargs
    )


def quantize_parameters(converter):
    """The parameter names of the converter's quantization step."""
    return list(inspect.signature(converter._quantize).parameters)
