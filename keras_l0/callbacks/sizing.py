"""Sizes of the gated layers, counted as `keras_l0.shrink` cuts them."""

import contextlib
import math
import warnings

import numpy as np
from keras import ops

from keras_l0 import hard_concrete
from keras_l0.shrink import ShrinkError
from keras_l0.shrink import gated_layers
from keras_l0.summary import recurrent_cost
from keras_l0.summary import summary

METRICS = ("params", "flops", "neurons")

# `hard_concrete.eval_gate(log_alpha) > 0` exactly when `log_alpha` exceeds
# this: `sigmoid(log_alpha) * (ZETA - GAMMA) + GAMMA > 0`.
KEEP_THRESHOLD = math.log(-hard_concrete.GAMMA / hard_concrete.ZETA)


def named_gated_layers(model):
    """The gated recurrent layers of `model` that own at least one gate.

    Args:
        model: a built Keras model. Gated layers are found as
            `keras_l0.shrink.gated_layers` finds them: at the top level,
            both directions of a `Bidirectional` layer, nested models.

    Returns:
        A dict from layer name (`"<wrapper>/<name>"` inside a
        `Bidirectional` layer or a nested model) to layer, in model order.
    """
    prefix = model.name + "/"
    layers = {}
    for layer in gated_layers(model):
        if not layer.cell.has_gates:
            continue
        if not layer.built:
            raise ValueError(
                f"Layer '{layer.name}' is not built: call the model on data "
                "(or build it) before using keras_l0 callbacks."
            )
        path = layer.cell.l0_penalty.path.rsplit("/", 2)[0]
        layers[path.removeprefix(prefix)] = layer
    return layers


def _check_metric(metric):
    if metric not in METRICS:
        raise ValueError(
            f"`metric` must be one of {METRICS}. Received: metric={metric!r}"
        )


def kept_neurons(layer):
    """`(inputs kept, units kept)` by the inference gates of `layer`.

    A neuron is kept when its inference gate is non-zero, which is what
    `keras_l0.shrink` keeps. A side without gates counts in full. Inputs
    that an upstream layer removes are not subtracted here.
    """
    cell = layer.cell
    sizes = (cell.input_dim, cell.units)
    return tuple(
        size
        if gate is None
        else int(np.count_nonzero(ops.convert_to_numpy(gate)))
        for gate, size in zip(cell.gates(training=False), sizes)
    )


def layer_size(layer, inputs, units, metric="params"):
    """The size of gated `layer` with `inputs` input features and `units`.

    Args:
        layer: a gated recurrent layer.
        inputs: number of input features (may be fractional).
        units: number of hidden units (may be fractional).
        metric: `"params"`: weights of the kernel, recurrent kernel and
            bias; `"flops"`: `2 *` the multiply-adds of the kernel and the
            recurrent kernel for one time step of one example (as
            `keras_l0.summary` counts them); `"neurons"`: `units`, plus
            `inputs` if the layer has input gates.

    Returns:
        A float.
    """
    _check_metric(metric)
    cell = layer.cell
    if metric == "neurons":
        return float(units + (inputs if cell.input_gates else 0))
    params, flops = recurrent_cost(
        cell.num_blocks, cell.bias_rows, inputs, units
    )
    return float(params if metric == "params" else flops)


_GATES = ("input_log_alpha", "hidden_log_alpha")


def numpy_log_alphas(cell, scale=None):
    """`cell.log_alphas()` as float64 numpy arrays, read without tensor
    ops (`scale`: the cell's `gate_scale`, if already known)."""
    if scale is None:
        scale = float(ops.convert_to_numpy(cell.gate_scale))
    return tuple(
        None if v is None else scale * ops.convert_to_numpy(v).astype("float64")
        for v in (cell.input_log_alpha, cell.hidden_log_alpha)
    )


_KEPT_COLUMNS = {"params": "params_kept", "flops": "flops_per_step_kept"}


class _Sizer:
    """Sizes of the gated layers of a model, now and for other gate values.

    `kept()` is what `keras_l0.shrink` keeps. For "params" and "flops" it
    comes from `keras_l0.summary` (on `structure` if given, with the
    trained gates), so that the input rows that an upstream layer's closed
    units remove do not count; where `shrink` cannot plan the model, each
    layer is counted with its own gates and a `UserWarning` says so.
    `count(log_alphas)` counts layer by layer with its own gates, for any
    gate parameters.
    """

    def __init__(self, model, metric, structure=None):
        _check_metric(metric)
        self.metric = metric
        self.layers = named_gated_layers(model)
        if not self.layers:
            raise ValueError(
                f"Model '{model.name}' has no gated layer with gates: there "
                "is no size to control."
            )
        self.dense = sum(
            layer_size(layer, layer.cell.input_dim, layer.cell.units, metric)
            for layer in self.layers.values()
        )
        self.twins = None if structure is None else self._twins(structure)
        self._cached = {}
        self.structure = None
        if metric in _KEPT_COLUMNS:
            self.structure = model if structure is None else structure
            self._check_plannable()

    def _twins(self, structure):
        twins = named_gated_layers(structure)
        if set(twins) != set(self.layers) or any(
            twins[name].cell.input_dim != layer.cell.input_dim
            or twins[name].cell.units != layer.cell.units
            for name, layer in self.layers.items()
        ):
            raise ValueError(
                f"`model` '{structure.name}' must have the same gated layers "
                f"as the model being trained: {sorted(twins)} vs "
                f"{sorted(self.layers)}."
            )
        return twins

    def _check_plannable(self):
        try:
            listed = {row["name"] for row in self.rows()}
        except ShrinkError as e:
            reason = str(e)
        else:
            missing = sorted(set(self.layers) - listed)
            if not missing:
                return
            reason = f"keras_l0.summary does not list {missing}"
        name = self.structure.name
        self.structure = None
        warnings.warn(
            f"Counting each gated layer of '{name}' with its own gates only "
            f"({reason}): input rows that a closed unit upstream removes "
            "still count. Pass a functional model with the same layers as "
            "`model=` to count as shrink does.",
            UserWarning,
            stacklevel=4,
        )

    def rows(self, log_alphas=None):
        """`keras_l0.summary`'s rows for the gates as they are now
        (`log_alphas`: the current `log_alphas()`, if already read); they
        depend on which gates are open only, and are remembered by that."""
        if log_alphas is None:
            log_alphas = self.log_alphas()
        key = b"".join(
            np.packbits(la > KEEP_THRESHOLD).tobytes() + b"|"
            for pair in log_alphas
            for la in pair
            if la is not None
        )
        if key not in self._cached:
            if len(self._cached) >= 16:
                self._cached.clear()
            self._cached[key] = self._summary_rows()
        return self._cached[key]

    def _summary_rows(self):
        with contextlib.ExitStack() as stack:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
            for name, twin in (self.twins or {}).items():
                cell = self.layers[name].cell
                trained = {
                    gate: getattr(cell, gate)
                    for gate in (*_GATES, "gate_scale")
                    if getattr(cell, gate) is not None
                }
                stack.enter_context(twin.cell.using_weights(trained))
            return summary(self.structure, print_fn=None)

    def log_alphas(self):
        """The gate parameters, `[(input, hidden), ...]` float64 arrays."""
        return [numpy_log_alphas(layer.cell) for layer in self.layers.values()]

    def count(self, log_alphas):
        """Size if the gates had `log_alphas`, each layer on its own."""
        total = 0.0
        for layer, pair in zip(self.layers.values(), log_alphas):
            sizes = (layer.cell.input_dim, layer.cell.units)
            inputs, units = (
                size if la is None else np.count_nonzero(la > KEEP_THRESHOLD)
                for la, size in zip(pair, sizes)
            )
            total += layer_size(layer, inputs, units, self.metric)
        return total

    def kept(self, log_alphas=None):
        """The size that `keras_l0.shrink` keeps now (`log_alphas`: the
        current `log_alphas()`, if already read)."""
        if log_alphas is None:
            log_alphas = self.log_alphas()
        if self.structure is None:
            return self.count(log_alphas)
        column = _KEPT_COLUMNS[self.metric]
        return float(
            sum(
                row[column]
                for row in self.rows(log_alphas)
                if row["name"] in self.layers
            )
        )


def model_size(model, metric="params"):
    """`(kept, dense)` size of the gated layers of `model`.

    `kept` is what `keras_l0.shrink(model)` keeps of them, `dense` their
    full size; `layer_size` defines the metrics. For a model that `shrink`
    cannot plan, every layer is counted with its own gates, with a
    `UserWarning`.
    """
    sizer = _Sizer(model, metric)
    return sizer.kept(), sizer.dense
