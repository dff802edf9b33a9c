"""The graph walk: constant features, coupled groups, kept units, build.

A channel is one feature of one tensor of the graph. Layers that pass
features through (per-feature layers, merges, a recurrent layer's output,
states and initial states, the directions of a sum `Bidirectional`) join
channels into groups, which the slim model keeps or removes as a whole. A
group is kept when one of its channels is needed: read by a layer as a
varying value (a closed unit reads as the constant 0, which a reader folds
or drops), feeding a recurrence through an open gate, produced by a layer
whose units cannot be cut, or read by a layer that `shrink` uses as it is.
"""

import warnings

import keras
import numpy as np
from keras import tree

from keras_l0 import _keras_compat as compat
from keras_l0.shrink.errors import ShrinkError
from keras_l0.shrink.fold import rebuild
from keras_l0.shrink.steps import step_for
from keras_l0.shrink.views import Channels
from keras_l0.shrink.views import SlimLayer
from keras_l0.shrink.views import View


def functional_graph(model):
    try:
        graph = compat.functional_graph(model)
    except TypeError:
        raise ShrinkError(
            f"shrink rebuilds Sequential and functional models; "
            f"'{model.name}' is a subclassed {type(model).__name__}."
        ) from None
    if graph is None:
        raise ShrinkError(
            f"Sequential model '{model.name}' is not built: start it with "
            "keras.Input(...) or call it on data first."
        )
    return graph


def width(tensor):
    shape = getattr(tensor, "shape", None)
    if not shape or shape[-1] is None:
        return 0
    return int(shape[-1])


class ShrinkPlan:
    """What `shrink` will do to `model`, decided before building anything.

    Args:
        model: a built Sequential or functional Keras model.

    Attributes:
        recurrent: a `RecurrentPlan` per recurrent layer (a `Bidirectional`
            has two), in graph order.
        slim_layers: every weight-holding layer of the slim model
            (`RecurrentPlan` or `SlimLayer`), for counting parameters.

    Example:

    >>> plan = ShrinkPlan(model)
    >>> [rnn.units_kept for rnn in plan.recurrent]
    [12]
    """

    def __init__(self, model):
        self.model = model
        self.graph = functional_graph(model)
        nodes = compat.graph_nodes(self.graph)
        calls = {}
        for node in nodes:
            op = compat.node_operation(node)
            calls[id(op)] = calls.get(id(op), 0) + 1
        self.names = {op.name for op in self.graph.operations}
        self.notes = []
        self.channels = Channels()
        self.values, self.sources = {}, {}
        self.steps = [step_for(self, node, calls) for node in nodes]
        for step in self.steps:
            for tensor in step.inputs + step.outputs:
                self.space(tensor)
            self._set_values(step)
        for step in self.steps:
            step.couple()
        size = len(self.channels.parent)
        self.needed = np.zeros(size, bool)
        self.opaque = np.zeros(size, bool)
        self.forced = np.zeros(size, bool)
        self.opaque_reads = []
        for step in self.steps:
            step.needs()
        for tensor in self.graph.outputs:
            self.require(tensor, ~np.isfinite(self.value(tensor)))
        self.kept = self._settle()
        self._check_opaque()
        self.recurrent, self.slim_layers, self.views = [], [], {}
        counted = set()
        for step in self.steps:
            for tensor, view in zip(step.outputs, step.plan_views()):
                self.views[id(tensor)] = view
            for slim in step.slim:
                key = id(slim.layer) if slim.kind == "clone" else id(slim)
                if key not in counted:
                    counted.add(key)
                    self.slim_layers.append(slim)
        self.output_views = [self._plan_output(t) for t in self.graph.outputs]
        for note in dict.fromkeys(self.notes):
            warnings.warn(note, UserWarning, stacklevel=3)

    # Channels and values.

    def space(self, tensor):
        return self.channels.space(id(tensor), width(tensor))

    def value(self, tensor):
        """The tensor's constant features at inference; NaN where varying."""
        found = self.values.get(id(tensor))
        if found is None:
            return np.full(width(tensor), np.nan, "float32")
        return found

    def source(self, tensor):
        return self.sources.get(id(tensor), compat.producer(tensor).name)

    def _set_values(self, step):
        values = step.values()
        for tensor, value in zip(step.outputs, values):
            if value is not None:
                self.values[id(tensor)] = np.asarray(value, "float32")
            if step.passes and step.inputs:
                names = dict.fromkeys(self.source(t) for t in step.inputs)
                self.sources[id(tensor)] = "', '".join(names)

    def join(self, a, b):
        a = a if isinstance(a, np.ndarray) else self.space(a)
        b = b if isinstance(b, np.ndarray) else self.space(b)
        if len(a) != len(b):
            raise ShrinkError(f"Internal: cannot join {len(a)} and {len(b)} channels.")
        self.channels.join(a, b)

    def require(self, tensor, mask=None):
        """Marks features of `tensor` (all, or where `mask`) as needed."""
        idx = tensor if isinstance(tensor, np.ndarray) else self.space(tensor)
        self.needed[idx if mask is None else idx[np.asarray(mask, bool)]] = True

    def require_opaque(self, step, tensor):
        self.opaque[self.space(tensor)] = True
        self.opaque_reads.append((step, tensor))

    def _decide(self, opaque=True):
        roots = self.channels.roots()
        mark = self.needed | self.forced | (self.opaque if opaque else False)
        keep = np.zeros(len(roots), bool)
        np.logical_or.at(keep, roots, mark)
        return keep[roots]

    def _settle(self):
        while True:
            self.kept = self._decide()
            extra = [i for step in self.steps for i in step.adjust()]
            if not extra or self.forced[extra].all():
                return self.kept
            self.forced[extra] = True

    def _check_opaque(self):
        without = self._decide(opaque=False)
        for step, tensor in self.opaque_reads:
            idx = self.space(tensor)
            value = self.value(tensor)
            bad = self.kept[idx] & ~without[idx] & np.isfinite(value)
            if bad.any():
                kind = type(step.layer).__name__
                raise ShrinkError(
                    f"Cannot shrink: layer '{step.layer.name}' ({kind}) reads "
                    f"the output of '{self.source(tensor)}', whose features "
                    f"{np.flatnonzero(bad).tolist()} shrink removes (closed), "
                    "and "
                    + (
                        step.why
                        or f"shrink cannot rebuild a {kind} layer with fewer "
                        "input features"
                    )
                    + "."
                )

    def kept_of(self, tensor):
        return np.flatnonzero(self.kept[self.space(tensor)])

    def view(self, tensor, scale=None, source=None):
        """The slim view of `tensor` from the kept channels."""
        return View(
            width(tensor),
            self.kept_of(tensor),
            scale,
            self.value(tensor),
            source or self.source(tensor),
        )

    def in_view(self, tensor):
        """The planned slim view of a tensor that a step reads."""
        return self.views.get(id(tensor)) or self.view(tensor)

    def note(self, text):
        self.notes.append(text)

    def unique_name(self, base):
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    # Model outputs.

    def _plan_output(self, tensor):
        view = self.views.get(id(tensor)) or View(width(tensor))
        if not view.is_identity and len(view.kept) < view.width:
            fill = self._restore_bias(view)
            self.slim_layers.append(
                SlimLayer(
                    "dense",
                    input_width=len(view.kept),
                    units=view.width,
                    use_bias=fill is not None,
                )
            )
        return view

    @staticmethod
    def _restore_bias(view):
        fill = np.where(np.isfinite(view.fill), view.fill, 0.0)
        fill[view.kept] = 0.0
        return fill if np.any(fill != 0) else None

    def _restore(self, tensor, view, original):
        if view.is_identity:
            return tensor
        name = compat.producer(original).name
        if len(view.kept) == view.width:
            return self.add_layer(
                keras.layers.Rescaling(
                    view.scale, name=self.unique_name(name + "_scale")
                )
            )(tensor)
        bias = self._restore_bias(view)
        layer = self.add_layer(
            keras.layers.Dense(
                view.width,
                use_bias=bias is not None,
                name=self.unique_name(name + "_restore"),
            )
        )
        outputs = layer(tensor)
        kernel = np.zeros((len(view.kept), view.width), "float32")
        kernel[np.arange(len(view.kept)), view.kept] = view.scale
        layer.set_weights([kernel] + ([bias] if bias is not None else []))
        return outputs

    # Building.

    def add_layer(self, layer):
        if isinstance(layer, keras.layers.Layer) and not any(
            layer is known for known in self.new_layers
        ):
            self.new_layers.append(layer)
        return layer

    def slim(self, tensor, unit=False):
        """The slim tensor of `tensor`; rescaled to the original values
        (scale 1) if `unit`."""
        new = self.new_tensors[id(tensor)]
        view = self.views.get(id(tensor))
        if not unit or view is None or view.unit_scale:
            return new
        if id(tensor) not in self.rescaled:
            name = self.unique_name(compat.producer(tensor).name + "_scale")
            layer = self.add_layer(keras.layers.Rescaling(view.scale, name=name))
            self.rescaled[id(tensor)] = layer(new)
        return self.rescaled[id(tensor)]

    def unchanged(self, layer):
        """`(layer to call, weights to copy or None)` for a layer that the
        slim model uses as it is: a copy made from its config, so that the
        slim model shares no layer with the original (the layer itself if
        Keras cannot copy it, with a warning if it has weights)."""
        if id(layer) in self.copies:
            return self.copies[id(layer)], None
        new, weights = layer, None
        if isinstance(layer, keras.layers.Layer):
            try:
                new = rebuild(layer)
                weights = layer.get_weights() if layer.weights else None
            except ShrinkError:
                new, weights = layer, None
            if new is layer and layer.weights:
                self.note(
                    f"Layer '{layer.name}' ({type(layer).__name__}) cannot be "
                    "copied from its config: the slim model uses the same "
                    "layer object, and shares its weights with the original."
                )
        self.copies[id(layer)] = new
        return new, weights

    def build(self):
        """Builds the slim model.

        Returns:
            A `keras.Sequential` model if the original is one and the slim
            graph is a chain, else a functional `keras.Model`.
        """
        self.new_layers, self.new_tensors = [], {}
        self.rescaled, self.copies = {}, {}
        self.chain = isinstance(self.model, keras.Sequential)
        for step in self.steps:
            outputs = step.build()
            for old, new in zip(step.outputs, tree.flatten(outputs)):
                self.new_tensors[id(old)] = new
        outputs = [
            self._restore(self.new_tensors[id(t)], view, t)
            for t, view in zip(self.graph.outputs, self.output_views)
        ]
        inputs = [self.new_tensors[id(t)] for t in self.graph.inputs]
        if self.chain:
            return keras.Sequential(self.new_layers, name=self.model.name)
        inputs_struct, outputs_struct = compat.graph_structs(self.graph)
        return keras.Model(
            tree.pack_sequence_as(inputs_struct, inputs),
            tree.pack_sequence_as(outputs_struct, outputs),
            name=self.model.name,
        )
