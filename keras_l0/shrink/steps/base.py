"""The step interface, model inputs, and layers used as they are."""

import keras
import numpy as np

from keras_l0 import _keras_compat as compat
from keras_l0.layers.gating import GatedCellMixin
from keras_l0.layers.gating import GatedRNNMixin
from keras_l0.shrink.errors import ShrinkError
from keras_l0.shrink.views import SlimLayer

REGISTRY = {}


def register(*types):
    """Class decorator: the step handles layers of exactly these types."""

    def decorate(cls):
        for layer_type in types:
            REGISTRY[layer_type] = cls
        return cls

    return decorate


def foldable(fill, bias=True):
    """Features whose constant value a reader with (or without) a bias can
    fold away: finite, and 0 unless it has a bias."""
    fill = np.asarray(fill)
    return np.isfinite(fill) & ((fill == 0) | bool(bias))


def single_input(node):
    args, _ = compat.node_call(node)
    return len(args) == 1 and not isinstance(args[0], (list, tuple, dict))


class Step:
    """One node of the original graph and its slim replacement.

    The plan calls, in order: `values()` (constant output features, NaN
    where varying; `None` for all varying), `couple()` (join channels into
    groups), `needs()` (mark needed channels), `adjust()` (channel ids to
    force-keep once groups are decided), `plan_views()` (the slim views of
    the outputs; appends to `self.slim` what the slim model will hold) and
    `build()` (calls the slim layers on the slim tensors).
    """

    passes = False
    why = None

    def __init__(self, plan, node):
        self.plan = plan
        self.node = node
        self.layer = compat.node_operation(node)
        self.inputs = compat.node_input_tensors(node)
        self.outputs = compat.node_outputs(node)
        self.args, self.kwargs = compat.node_call(node)
        self.slim = []

    @classmethod
    def accepts(cls, layer, node):
        return None

    @property
    def data(self):
        return self.args[0]

    def values(self):
        return [None] * len(self.outputs)

    def couple(self):
        pass

    def needs(self):
        for tensor in self.outputs:
            self.plan.require(tensor)

    def adjust(self):
        return []

    def at_least_one(self, tensor, what):
        """Forces one channel of `tensor` if none is kept."""
        idx = self.plan.space(tensor)
        if len(idx) and not self.plan.kept[idx].any():
            self.plan.note(what)
            return [int(idx[0])]
        return []

    def plan_views(self):
        return [self.plan.view(t) for t in self.outputs]

    def call(self, layer, unit=(), weights=None):
        """Calls `layer` with the node's arguments, on slim tensors (those in
        `unit`, or all if `unit is True`, rescaled to the original values)."""
        unit = unit or ()
        tensors = {
            id(t): self.plan.slim(t, unit is True or id(t) in unit)
            for t in self.inputs
        }
        args, kwargs = compat.fill_in(self.node, tensors)
        self.plan.add_layer(layer)
        outputs = layer(*args, **kwargs)
        if weights is not None:
            layer.set_weights(weights)
        return outputs

    def reuse(self, unit=()):
        layer, weights = self.plan.unchanged(self.layer)
        return self.call(layer, unit, weights)


class InputStep(Step):
    def needs(self):
        for tensor in self.outputs:
            self.plan.require(tensor)

    def build(self):
        config = self.layer.get_config()
        new = self.layer.__class__.from_config(config)
        self.plan.add_layer(new)
        return new.output


class ReuseStep(Step):
    """A layer used as it is: it reads every feature of its inputs, at
    their original values, and its outputs keep every feature."""

    def __init__(self, plan, node, why=None):
        super().__init__(plan, node)
        self.why = why
        if isinstance(self.layer, keras.layers.Layer):
            self._refuse_gated()

    def _refuse_gated(self):
        if not any(
            isinstance(sub, (GatedRNNMixin, GatedCellMixin))
            for sub in compat.sublayers(self.layer)
        ):
            return
        what = (
            "is a gated layer"
            if isinstance(self.layer, GatedRNNMixin)
            else "contains a gated layer"
        )
        raise ShrinkError(
            f"Cannot shrink: layer '{self.layer.name}' "
            f"({type(self.layer).__name__}) {what}, and "
            + (
                self.why
                or "shrink rebuilds only gated layers used directly in the "
                "model (not inside another layer or model, not as the cell "
                "of keras.layers.RNN)"
            )
            + "."
        )

    def needs(self):
        for tensor in self.inputs:
            self.plan.require_opaque(self, tensor)
        super().needs()

    def plan_views(self):
        if isinstance(self.layer, keras.layers.Layer):
            self.slim.append(SlimLayer("clone", self.layer))
        return super().plan_views()

    def build(self):
        return self.reuse(unit=True)
