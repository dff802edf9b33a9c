"""The one module of keras-l0 that reads Keras private internals.

`keras_l0.shrink` walks the node graph of functional models and rebuilds
layers whose weights live on private sub-layers. Keras does not expose these
as public API, so every access goes through the functions below; when Keras
changes, this module (and `tests/test_keras_compat.py`, which names the Keras
versions it was checked on) is the one place to re-check. The other private
import of the package, `keras.src.backend.tensorflow.rnn.cudnn_ok` in
`keras_l0/layers/gating.py`, is checked there as well.
"""

import keras
from keras.src.models.functional import Functional

CHECKED_KERAS_VERSIONS = ("3.15.0", "3.15.1")

# The private attributes this module reads, for the compatibility test.
NODE_ATTRIBUTES = ("operation", "is_input", "outputs", "input_tensors", "arguments")
GRAPH_ATTRIBUTES = ("_nodes_by_depth", "_inputs_struct", "_outputs_struct")
ATTENTION_PROJECTIONS = {
    "query": "_query_dense",
    "key": "_key_dense",
    "value": "_value_dense",
    "output": "_output_dense",
}


def functional_graph(model):
    """The functional graph of `model`: itself, or a Sequential model's
    inner functional model; `None` if it has none (unbuilt Sequential);
    raises `TypeError` for a subclassed model."""
    if isinstance(model, keras.Sequential):
        return model._functional
    if isinstance(model, Functional):
        return model
    raise TypeError(type(model).__name__)


def graph_nodes(graph):
    """The nodes of a functional graph, every node after its inputs."""
    by_depth = graph._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def graph_structs(graph):
    """`(inputs_struct, outputs_struct)`: the nesting of the model's
    inputs and outputs."""
    return graph._inputs_struct, graph._outputs_struct


def node_operation(node):
    return node.operation


def node_is_input(node):
    return node.is_input


def node_outputs(node):
    return list(node.outputs)


def node_input_tensors(node):
    return list(node.input_tensors)


def node_call(node):
    """`(args, kwargs)` the node's operation was called with."""
    return node.arguments.args, node.arguments.kwargs


def fill_in(node, tensors):
    """The node's call arguments with every symbolic tensor `t` replaced by
    `tensors[id(t)]`."""
    return node.arguments.fill_in(tensors)


def producer(tensor):
    """The operation that produced a symbolic tensor."""
    return tensor._keras_history.operation


def sublayers(layer):
    """Every layer inside `layer`, itself included."""
    return list(layer._flatten_layers())


def attention_projections(layer):
    """The `EinsumDense` projections of a `MultiHeadAttention` layer, as
    `{"query", "key", "value", "output"}`."""
    return {k: getattr(layer, v) for k, v in ATTENTION_PROJECTIONS.items()}
