"""New gated models started at the weight scale of the width they will keep.

Keras's width-dependent initialisers (`VarianceScaling` and its Glorot, He
and LeCun forms, `Orthogonal`) draw a wide layer's weights smaller than a
narrow one's. A `GatedLSTM(64)` that a budget cuts to 30 units keeps
weights drawn for 64, and its head weights drawn for 64 inputs: in a short
run it learns less than a fresh `LSTM(30)` does (`benchmarks/
budget_init_scale.py`). `scale_to_kept_width` multiplies those weights by
the factor that gives them the variance their initialiser gives the kept
width, before training starts.
"""

import math

import keras
from keras import ops

from keras_l0 import _keras_compat as compat
from keras_l0.callbacks.sizing import layer_size
from keras_l0.shrink.errors import ShrinkError
from keras_l0.shrink.plan import functional_graph

_LAYERS = keras.layers

# Layers whose output features are their input features, one for one: a
# Dense behind them reads the gated units.
PASS_THROUGH = (
    _LAYERS.Activation,
    _LAYERS.ActivityRegularization,
    _LAYERS.AlphaDropout,
    _LAYERS.BatchNormalization,
    _LAYERS.Dropout,
    _LAYERS.GaussianDropout,
    _LAYERS.GaussianNoise,
    _LAYERS.GlobalAveragePooling1D,
    _LAYERS.GlobalMaxPooling1D,
    _LAYERS.LayerNormalization,
    _LAYERS.Masking,
    _LAYERS.SpatialDropout1D,
)


def kept_fraction(layers, target_size, metric, fed_by_gated):
    """The common fraction `s` of every gated layer's units (and of the
    inputs of those fed by gated layers) at which the layers have
    `target_size`.

    Args:
        layers: dict of gated layers, as `named_gated_layers` gives them.
        target_size: the budget, in `metric`.
        metric: `"params"`, `"flops"` or `"neurons"`.
        fed_by_gated: set of layer names whose inputs are gated units.

    Returns:
        A float in (0, 1].
    """

    def size(s):
        return sum(
            layer_size(
                layer,
                layer.cell.input_dim * (s if name in fed_by_gated else 1),
                layer.cell.units * s,
                metric,
            )
            for name, layer in layers.items()
        )

    if size(1.0) <= target_size:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if size(mid) < target_size else (low, mid)
    return max(high, 1e-6)


def _variance_fan(initializer, shape):
    """The number the initialiser's variance is inversely proportional to
    for a 2-D `shape`, or `None` if it does not depend on the shape."""
    fan_in, fan_out = shape
    if isinstance(initializer, keras.initializers.VarianceScaling):
        return {
            "fan_in": fan_in,
            "fan_out": fan_out,
            "fan_avg": (fan_in + fan_out) / 2,
        }[initializer.mode]
    if isinstance(initializer, keras.initializers.Orthogonal):
        return max(fan_in, fan_out)
    return None


def factor(initializer, shape, kept_shape):
    """The factor that turns a draw of `initializer` for `shape` into one
    with the variance it has for `kept_shape` (1.0 where the initialiser
    does not depend on the shape)."""
    old = _variance_fan(initializer, shape)
    if old is None:
        return 1.0
    return math.sqrt(old / _variance_fan(initializer, kept_shape))


def _dense_of(layer):
    if type(layer) is _LAYERS.Dense:
        return layer
    if isinstance(layer, _LAYERS.TimeDistributed):
        return _dense_of(layer.layer)
    return None


class _Graph:
    """Which layers of a functional model read gated units, and through
    which chains of pass-through layers."""

    def __init__(self, model, layers):
        self.owner = {id(layer): {name} for name, layer in layers.items()}
        for layer in model.layers:
            if isinstance(layer, _LAYERS.Bidirectional):
                self.owner[id(layer)] = {
                    name
                    for name, gated in layers.items()
                    if gated is layer.forward_layer
                    or gated is layer.backward_layer
                }
        try:
            nodes = compat.graph_nodes(functional_graph(model))
        except ShrinkError:
            nodes = []
        self.nodes = nodes
        self.made_by = {
            id(t): node for node in nodes for t in compat.node_outputs(node)
        }

    def reads_gated(self, node):
        """Whether every input of `node` is gated units (through
        pass-through layers)."""
        return bool(self.owners(node))

    def owners(self, node):
        """The names of the gated layers whose units are the inputs of
        `node` (through pass-through layers); empty unless every input is
        gated units."""
        names = set()
        for tensor in compat.node_input_tensors(node):
            owners = self._owners(tensor)
            if not owners:
                return set()
            names |= owners
        return names

    def _owners(self, tensor):
        node = self.made_by.get(id(tensor))
        while node is not None:
            op = compat.node_operation(node)
            if self.owner.get(id(op)):
                return self.owner[id(op)]
            inputs = compat.node_input_tensors(node)
            if not isinstance(op, PASS_THROUGH) or len(inputs) != 1:
                return set()
            node = self.made_by.get(id(inputs[0]))
        return set()

    def readers(self):
        """`[(dense, owner names)]`: each `Dense` (or
        `TimeDistributed(Dense)`) whose inputs are gated units, with the
        names of the gated layers it reads."""
        found = []
        for node in self.nodes:
            op = compat.node_operation(node)
            if id(op) in self.owner or _dense_of(op) is None:
                continue
            owners = self.owners(node)
            if owners:
                found.append((_dense_of(op), owners))
        return found


def scale_to_kept_width(model, layers, target_size, metric):
    """Rescales new gated layers and the Dense layers that read them to the
    weight scale of the width that `target_size` keeps.

    Nothing changes unless every gated layer still holds the weights its
    initialisers drew (`holds_initial_weights`): a model trained, loaded or
    copied from a trained one (`keras_l0.gate_model`) keeps its weights.
    The width kept is the same fraction `s` of every gated layer's units
    (`kept_fraction`). Each gated layer's kernel and recurrent kernel, and
    the kernel of every `Dense` (or `TimeDistributed(Dense)`) whose inputs
    are gated units, directly or through pass-through layers (dropout,
    normalisation, activation, pooling over time), is multiplied by
    `factor(initializer, shape, kept shape)`: weights drawn by
    initialisers that do not depend on the width stay as they are.

    Args:
        model: the model being trained.
        layers: its gated layers, as `named_gated_layers` gives them.
        target_size: the budget, in `metric`.
        metric: `"params"`, `"flops"` or `"neurons"`.

    Returns:
        A dict from variable path to the factor applied (empty when nothing
        was rescaled).
    """
    if not all(layer.cell.holds_initial_weights() for layer in layers.values()):
        return {}
    graph = _Graph(model, layers)
    fed = set()
    for node in graph.nodes:
        op = compat.node_operation(node)
        if id(op) in graph.owner and graph.reads_gated(node):
            fed.update(graph.owner[id(op)])
    readers = [dense for dense, _ in graph.readers()]
    s = kept_fraction(layers, target_size, metric, fed)
    applied = {}
    if s >= 1.0:
        return applied

    def rescale(variable, initializer, kept_shape):
        f = factor(initializer, tuple(variable.shape), kept_shape)
        if f != 1.0 and variable.path not in applied:
            variable.assign(ops.convert_to_numpy(variable) * f)
            applied[variable.path] = f

    for name, layer in layers.items():
        cell = layer.cell
        d, g, u = cell.input_dim, cell.num_blocks, cell.units
        d_kept = d * s if name in fed else d
        rescale(cell.kernel, cell.kernel_initializer, (d_kept, g * u * s))
        rescale(
            cell.recurrent_kernel,
            cell.recurrent_initializer,
            (u * s, g * u * s),
        )
    for dense in readers:
        rows, columns = dense.kernel.shape
        rescale(dense.kernel, dense.kernel_initializer, (rows * s, columns))
    return applied
