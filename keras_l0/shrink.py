"""Physically removes the neurons that L0 gates switched off.

`shrink(model)` rebuilds a Sequential or functional model from standard Keras
layers. A hidden unit whose inference gate is 0 leaves its layer (its column
in every gate block of the kernel, recurrent kernel and bias, and its row of
the recurrent kernel) and the rows of every layer that reads it. An input
feature whose gate is 0 leaves the kernel, and the column of the `Embedding`
or `Dense` layer that produces it when nothing else reads that column. The
surviving fractional gate values are folded into weights, so the slim model
computes exactly what the gated model computes at inference:

- `z_in` into the rows of the layer's own kernel;
- `z_h` into the rows of the layer's own recurrent kernel and into the input
  rows of the layers that read its output (`LSTM`, `GRU`, `SimpleRNN`,
  `Bidirectional`, `Dense`, `TimeDistributed(Dense)`), through layers that act
  on every feature alone (`Dropout` and its kind, pooling over time, ...).

The model keeps its input and output shapes: a raw model input keeps its
width (a closed input feature becomes a zero kernel row), and a model output
whose features were removed or rescaled is restored by a `Rescaling` layer
(nothing removed) or by a bias-free `Dense` layer that scatters the kept
features back into place. A layer that `shrink` cannot rebuild exactly is a
`ShrinkError` naming the layer, never a silently different model.

The graph walk reads the node structure of Keras functional models
(`Functional._nodes_by_depth`, `Node.arguments`), as `keras.models.clone_model`
does.
"""

import warnings

import keras
import numpy as np
from keras import ops
from keras import tree
from keras.src.models.functional import Functional

from keras_l0.layers.gated_gru import GatedGRU
from keras_l0.layers.gated_lstm import GatedLSTM
from keras_l0.layers.gated_simple_rnn import GatedSimpleRNN
from keras_l0.layers.gating import GatedCellMixin
from keras_l0.layers.gating import GatedRNNMixin
from keras_l0.structure import block_columns

_LAYERS = keras.layers

_STANDARD_RECURRENT = {
    _LAYERS.LSTM: _LAYERS.LSTM,
    _LAYERS.GRU: _LAYERS.GRU,
    _LAYERS.SimpleRNN: _LAYERS.SimpleRNN,
    GatedLSTM: _LAYERS.LSTM,
    GatedGRU: _LAYERS.GRU,
    GatedSimpleRNN: _LAYERS.SimpleRNN,
}
_NUM_BLOCKS = {_LAYERS.LSTM: 4, _LAYERS.GRU: 3, _LAYERS.SimpleRNN: 1}
_GATE_CONFIG_KEYS = (
    "input_gates",
    "hidden_gates",
    "l0_penalty",
    "penalty_form",
    "initial_keep_probability",
)

# Layers whose every output feature is its input feature of the same index,
# computed from that feature alone, linearly or positively homogeneously:
# a non-negative scale and a zero pass through them unchanged.
_FEATURE_WISE = (
    _LAYERS.Dropout,
    _LAYERS.SpatialDropout1D,
    _LAYERS.GaussianNoise,
    _LAYERS.GaussianDropout,
    _LAYERS.AlphaDropout,
    _LAYERS.ActivityRegularization,
    _LAYERS.Identity,
    _LAYERS.GlobalAveragePooling1D,
    _LAYERS.GlobalMaxPooling1D,
    _LAYERS.AveragePooling1D,
    _LAYERS.MaxPooling1D,
    _LAYERS.Cropping1D,
    _LAYERS.ZeroPadding1D,
    _LAYERS.UpSampling1D,
    _LAYERS.RepeatVector,
)
# Element-wise activations: a zero stays zero when f(0) == 0; a scale is
# applied before them with a `Rescaling` layer.
_ACTIVATIONS = (
    _LAYERS.Activation,
    _LAYERS.ReLU,
    _LAYERS.LeakyReLU,
    _LAYERS.ELU,
)
_ACROSS_FEATURES = (keras.activations.softmax, keras.activations.log_softmax)

class ShrinkError(ValueError):
    """A model, or a layer of it, that `shrink` cannot rebuild exactly."""


def gated_layers(model):
    """The gated recurrent layers of `model`, in layer order.

    A `Bidirectional` wrapper contributes its forward and backward layers,
    a nested model its own gated layers.

    Args:
        model: a Keras model.

    Returns:
        A list of `GatedLSTM`, `GatedGRU` and `GatedSimpleRNN` layers.
    """
    found = []
    for layer in model.layers:
        if isinstance(layer, GatedRNNMixin):
            found.append(layer)
        elif isinstance(layer, _LAYERS.Bidirectional):
            found.extend(
                sub
                for sub in (layer.forward_layer, layer.backward_layer)
                if isinstance(sub, GatedRNNMixin)
            )
        elif isinstance(layer, keras.Model):
            found.extend(gated_layers(layer))
    return found


def shrink(model):
    """Returns a slim copy of `model` without the neurons its gates closed.

    The copy is made only of standard Keras layers (`LSTM`, `GRU`,
    `SimpleRNN`, `Bidirectional`, `Dense`, `Embedding`, `TimeDistributed`,
    `Dropout`, ..., plus a `Rescaling` or bias-free `Dense` layer where a
    model output has to be restored) and computes exactly what `model`
    computes at inference (`training=False`), up to float rounding. Every
    gated layer becomes its plain Keras layer with the kept units; plain
    recurrent layers keep their units and lose the input rows of removed
    features. `model` is not modified. The slim model is not compiled.

    Inputs and outputs keep their shapes. A model output whose features were
    removed gets a bias-free `Dense` layer that puts the kept features back
    in place (zeros elsewhere), one whose features were only rescaled a
    `Rescaling` layer. A raw model input keeps its width; the kernel rows of
    closed input features are zero.

    A layer whose hidden units are all closed keeps one unit whose output
    nothing reads, and a `UserWarning` says so.

    Args:
        model: a built Sequential or functional Keras model with gated
            recurrent layers (`keras_l0.GatedLSTM`, `GatedGRU`,
            `GatedSimpleRNN`, also inside `Bidirectional`).

    Returns:
        A new `keras.Sequential` model if `model` is one, else a functional
        `keras.Model`, with the same name, inputs and output shapes.

    Raises:
        ShrinkError: if `model` has no gated layer, is neither Sequential
            nor functional, has a NaN gate parameter, or has a layer that
            reads pruned features and that `shrink` cannot rebuild exactly
            (the message names the layer and the reason).

    Example:

    >>> inputs = keras.Input((None, 8))
    >>> x = keras_l0.GatedLSTM(16)(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(1)(x))
    >>> slim = keras_l0.shrink(model)
    >>> slim.layers[1].__class__.__name__
    'LSTM'
    """
    _functional_graph(model)
    if not gated_layers(model):
        raise ShrinkError(
            f"Model '{model.name}' has no gated layer: nothing to shrink."
        )
    return ShrinkPlan(model).build()


def _clone(op):
    return op.__class__.from_config(op.get_config())


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def _eval_gates(layer):
    """`(z_in, z_h)` as float32 numpy arrays, `None` where there is none."""
    cell = layer.cell
    if not isinstance(cell, GatedCellMixin):
        return None, None
    for what, log_alpha in (
        ("input", cell.input_log_alpha),
        ("hidden", cell.hidden_log_alpha),
    ):
        if log_alpha is not None and np.isnan(_numpy(log_alpha)).any():
            raise ShrinkError(
                f"Layer '{layer.name}' has NaN in its {what} gate parameters "
                "(log_alpha): its gates are undefined."
            )
    return tuple(
        None if g is None else _numpy(g).astype("float32")
        for g in cell.gates(training=False)
    )


def _zero_preserving(fn):
    return float(np.max(np.abs(_numpy(fn(ops.zeros((1, 1))))))) == 0.0


def _hidden_gate(layer):
    _, z_h = _eval_gates(layer)
    return np.ones(layer.cell.units, "float32") if z_h is None else z_h


def _kept_units(layer, key, notes, is_open=None):
    """The units with an open gate; one unit (and a note) if none."""
    if is_open is None:
        is_open = _hidden_gate(layer) != 0
    kept = np.flatnonzero(is_open)
    if kept.size:
        return kept
    notes.append(
        f"Every hidden unit of layer '{key}' is closed: its slim version "
        "keeps one unit whose output nothing reads."
    )
    return np.zeros(1, "int64")


class _View:
    """How the last axis of a slim tensor maps onto the original tensor's.

    Slim feature `i` times `scale[i]` equals original feature `kept[i]`;
    every other original feature is 0 or read by no layer. `source` names
    the layers that removed or rescaled features. A view with a `reason`
    marks a tensor the slim model cannot reproduce.
    """

    def __init__(self, width, kept=None, scale=None, source=None, reason=None):
        self.width = width
        self.source = source
        self.reason = reason
        if kept is None and width is not None:
            kept = np.arange(width)
        self.kept = None if kept is None else np.asarray(kept, "int64")
        if scale is None and self.kept is not None:
            scale = np.ones(len(self.kept), "float32")
        self.scale = None if scale is None else np.asarray(scale, "float32")

    @classmethod
    def of(cls, tensor):
        shape = tensor.shape
        return cls(shape[-1] if len(shape) else None)

    @property
    def is_identity(self):
        if self.reason is not None:
            return False
        if self.width is None:
            return True
        return (
            np.array_equal(self.kept, np.arange(self.width))
            and bool(np.all(self.scale == 1))
        )

    @classmethod
    def concat(cls, views):
        kept, scale, offset = [], [], 0
        for view in views:
            kept.append(view.kept + offset)
            scale.append(view.scale)
            offset += view.width
        sources = dict.fromkeys(v.source for v in views if v.source)
        return cls(
            offset,
            np.concatenate(kept),
            np.concatenate(scale),
            source="', '".join(sources) or None,
        )


class SlimLayer:
    """A layer of the slim model as planned: what `keras_l0.summary` counts.

    `kind` is "dense" (`input_width`, `units`, `use_bias`), "embedding"
    (`input_dim`, `units`), "rescaling" or "clone" (`layer`, copied as is).
    """

    def __init__(self, kind, layer=None, **dims):
        self.kind = kind
        self.layer = layer
        for name, value in dims.items():
            setattr(self, name, value)


class RecurrentPlan:
    """The slim version of one recurrent layer (or `Bidirectional` side).

    Attributes:
        key: the layer's name, `"<wrapper>/<name>"` inside a wrapper.
        layer: the original layer.
        units, inputs: the original numbers of units and input features.
        kept_units: indices of the units the slim layer keeps.
        input_width: the slim layer's number of input features.
        inputs_kept: how many of them it reads (non-zero kernel rows).
        num_blocks, bias_rows: 4/3/1 gate blocks, 0/1/2 bias rows.
    """

    kind = "recurrent"

    def __init__(self, layer, key, view, notes, kept=None, dead=None):
        cell = layer.cell
        self.layer, self.key = layer, key
        self.slim_class = _STANDARD_RECURRENT[type(layer)]
        self.num_blocks = _NUM_BLOCKS[self.slim_class]
        self.bias_rows = 0
        if cell.use_bias:
            self.bias_rows = 2 if getattr(cell, "reset_after", False) else 1
        self.units = cell.units
        self.inputs = int(cell.kernel.shape[0])
        self.input_gate, self.hidden_gate = _eval_gates(layer)
        if self.hidden_gate is None:
            self.hidden_gate = np.ones(self.units, "float32")
        if kept is None:
            kept = _kept_units(layer, key, notes)
        self.kept_units = np.asarray(kept, "int64")
        self.dead = np.zeros(len(kept), bool) if dead is None else dead
        if self.dead.any() and not _zero_preserving(cell.activation):
            raise ShrinkError(
                f"Layer '{key}' would need a unit that always outputs 0 to "
                "stay exact, which needs activation(0) == 0; its activation "
                "is not."
            )
        self.input_rows = view.kept
        self.row_scale = view.scale
        if self.input_gate is not None:
            self.row_scale = self.row_scale * self.input_gate[view.kept]
        self.input_width = len(view.kept)
        self.inputs_kept = int(np.count_nonzero(self.row_scale))
        if self.input_gate is not None and not self.inputs_kept:
            notes.append(
                f"Every input of layer '{key}' is closed: its slim version "
                "ignores its inputs."
            )

    @property
    def units_kept(self):
        return len(self.kept_units)

    @property
    def removes_units(self):
        return self.units_kept < self.units or bool(self.dead.any())

    def output_view(self):
        return _View(
            self.units,
            self.kept_units,
            self.hidden_gate[self.kept_units],
            source=self.key,
        )

    def state_views(self, count):
        if not self.removes_units:
            return [_View(self.units) for _ in range(count)]
        reason = (
            f"Layer '{self.key}' returns its states, and shrink removes some "
            "of its units, whose states the slim model cannot reproduce. "
            "Only the layer's output can be used after shrinking."
        )
        return [_View(self.units, reason=reason) for _ in range(count)]

    def new_layer(self):
        config = {
            k: v
            for k, v in self.layer.get_config().items()
            if k not in _GATE_CONFIG_KEYS
        }
        config["units"] = self.units_kept
        return self.slim_class.from_config(config)

    def weights(self):
        """The slim `kernel`, `recurrent_kernel` and `bias` (if any)."""
        cell = self.layer.cell
        kept = self.kept_units
        cols = block_columns(self.units, self.num_blocks, kept)
        kernel = _numpy(cell.kernel)[self.input_rows][:, cols]
        recurrent = _numpy(cell.recurrent_kernel)[kept][:, cols]
        weights = {
            "kernel": kernel * self.row_scale[:, None],
            "recurrent_kernel": recurrent * self.hidden_gate[kept][:, None],
        }
        if cell.use_bias:
            weights["bias"] = _numpy(cell.bias)[..., cols]
        if self.dead.any():
            dead_cols = block_columns(
                len(kept), self.num_blocks, np.flatnonzero(self.dead)
            )
            for value in weights.values():
                value[..., dead_cols] = 0.0
        return weights

    def assign(self, new_layer):
        for name, value in self.weights().items():
            getattr(new_layer.cell, name).assign(value)


class _Step:
    """One node of the original graph and its slim replacement.

    Subclasses define `plan_views(in_views, out_demands) -> out_views`,
    which also records the planned slim layers, and
    `build(args, kwargs) -> outputs`, which calls them on the slim tensors.
    """

    def __init__(self, plan, node):
        self.plan = plan
        self.node = node
        self.layer = node.operation

    @property
    def data_inputs(self):
        """The tensors whose features the step maps (not masks)."""
        return self.node.input_tensors

    def reads(self, out_demands):
        """`{id(tensor): demand}` for inputs read only in part."""
        return {}


class _InputStep(_Step):
    def plan_views(self, in_views, out_demands):
        return [_View.of(self.node.outputs[0])]

    def build(self, args, kwargs):
        new = _clone(self.layer)
        self.plan.new_layers.append(new)
        return new.output


class _CloneStep(_Step):
    """A layer copied as is: it must read only unchanged tensors."""

    def __init__(self, plan, node, why=None):
        super().__init__(plan, node)
        self.why = why

    def plan_views(self, in_views, out_demands):
        for view in in_views:
            if not view.is_identity:
                kind = type(self.layer).__name__
                raise ShrinkError(
                    f"Cannot shrink: layer '{self.layer.name}' ({kind}) reads "
                    f"the output of '{view.source}', whose features shrink "
                    "removes or rescales, and "
                    + (
                        self.why
                        or f"shrink cannot rebuild a {kind} layer with fewer "
                        "or rescaled input features"
                    )
                    + "."
                )
        if isinstance(self.layer, _LAYERS.Layer):
            if any(
                isinstance(sub, (GatedRNNMixin, GatedCellMixin))
                for sub in self.layer._flatten_layers()
            ):
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
                        or "shrink rebuilds only gated layers used directly "
                        "in the model (not inside another layer or model, "
                        "not as the cell of keras.layers.RNN)"
                    )
                    + "."
                )
            if id(self.layer) not in self.plan.cloned:
                self.plan.cloned.add(id(self.layer))
                self.plan.slim_layers.append(SlimLayer("clone", self.layer))
        return [_View.of(t) for t in self.node.outputs]

    def build(self, args, kwargs):
        new = self.plan.clones.get(id(self.layer))
        first_call = new is None
        if first_call:
            new = _clone(self.layer)
            self.plan.clones[id(self.layer)] = new
            if isinstance(new, _LAYERS.Layer):
                self.plan.new_layers.append(new)
        outputs = new(*args, **kwargs)
        if first_call and isinstance(new, _LAYERS.Layer):
            new.set_weights(self.layer.get_weights())
        return outputs


class _RecurrentStep(_Step):
    @property
    def data_inputs(self):
        return [self.node.arguments.args[0]]

    def reads(self, out_demands):
        z_in, _ = _eval_gates(self.layer)
        if z_in is None:
            return {}
        return {id(self.data_inputs[0]): z_in != 0}

    def plan_views(self, in_views, out_demands):
        self.rnn = RecurrentPlan(
            self.layer, self.layer.name, in_views[0], self.plan.notes
        )
        self.plan.recurrent.append(self.rnn)
        self.plan.slim_layers.append(self.rnn)
        views = [self.rnn.output_view()]
        if self.layer.return_state:
            views += self.rnn.state_views(len(self.node.outputs) - 1)
        return views

    def build(self, args, kwargs):
        new = self.rnn.new_layer()
        self.plan.new_layers.append(new)
        outputs = new(*args, **kwargs)
        self.rnn.assign(new)
        return outputs


class _BidirectionalStep(_Step):
    @property
    def data_inputs(self):
        return [self.node.arguments.args[0]]

    @property
    def directions(self):
        return (self.layer.forward_layer, self.layer.backward_layer)

    def reads(self, out_demands):
        read = None
        for direction in self.directions:
            z_in, _ = _eval_gates(direction)
            if z_in is None:
                return {}
            read = (z_in != 0) if read is None else read | (z_in != 0)
        return {id(self.data_inputs[0]): read}

    def plan_views(self, in_views, out_demands):
        view = in_views[0]
        layer = self.layer
        fwd, bwd = self.directions
        keys = [f"{layer.name}/{d.name}" for d in self.directions]
        mode = layer.merge_mode
        if mode in ("concat", None):
            notes = self.plan.notes
            kept = [
                _kept_units(d, k, notes) for d, k in zip(self.directions, keys)
            ]
            kept = _same_width(kept, self.directions, layer.name)
            self.rnns = [
                RecurrentPlan(d, k, view, notes, kept=kk)
                for d, k, kk in zip(self.directions, keys, kept)
            ]
            outs = [rnn.output_view() for rnn in self.rnns]
            views = [_View.concat(outs)] if mode == "concat" else outs
        else:
            zf, zb = (_hidden_gate(d) for d in self.directions)
            if mode == "mul":
                scale = zf * zb
            else:
                differ = np.flatnonzero((zf != 0) & (zb != 0) & (zf != zb))
                if differ.size:
                    raise ShrinkError(
                        f"Bidirectional layer '{layer.name}' "
                        f"(merge_mode='{mode}'): the forward and backward "
                        f"hidden gates differ at units {differ.tolist()}, and "
                        "a sum cannot be rescaled per direction with standard "
                        "layers. Use merge_mode='concat', or train until those "
                        "gates are equal (e.g. exactly 1)."
                    )
                scale = np.maximum(zf, zb)
            # A unit open on one side only is kept on both; for a sum, the
            # closed side's copy must output exactly 0 ("dead").
            kept = _kept_units(
                layer, layer.name, self.plan.notes, (zf != 0) | (zb != 0)
            )
            dead = [np.zeros(len(kept), bool)] * 2
            if mode != "mul":
                dead = [
                    (mine[kept] == 0) & (other[kept] != 0)
                    for mine, other in ((zf, zb), (zb, zf))
                ]
            self.rnns = [
                RecurrentPlan(d, k, view, self.plan.notes, kept=kept, dead=dd)
                for d, k, dd in zip(self.directions, keys, dead)
            ]
            views = [_View(fwd.cell.units, kept, scale[kept], layer.name)]
        if layer.return_state:
            count = (len(self.node.outputs) - len(views)) // 2
            for rnn in self.rnns:
                views += rnn.state_views(count)
        self.plan.recurrent.extend(self.rnns)
        self.plan.slim_layers.extend(self.rnns)
        return views

    def build(self, args, kwargs):
        config = self.layer.get_config()
        for field, rnn in zip(("layer", "backward_layer"), self.rnns):
            config[field] = keras.saving.serialize_keras_object(rnn.new_layer())
        new = _LAYERS.Bidirectional.from_config(config)
        self.plan.new_layers.append(new)
        outputs = new(*args, **kwargs)
        for rnn, direction in zip(
            self.rnns, (new.forward_layer, new.backward_layer)
        ):
            rnn.assign(direction)
        return outputs


def _same_width(kept, directions, name):
    """Pads the narrower side with closed units: Keras infers the output
    shape of a `Bidirectional` layer from its forward layer alone."""
    width = max(len(k) for k in kept)
    padded = []
    for k, d in zip(kept, directions):
        spare = np.setdiff1d(np.arange(d.cell.units), k)[: width - len(k)]
        if len(k) + len(spare) < width:
            raise ShrinkError(
                f"Bidirectional layer '{name}': its directions would keep "
                "different numbers of units, which Keras cannot represent."
            )
        padded.append(np.sort(np.concatenate([k, spare])))
    return padded


def _plain_dense(layer):
    return (
        type(layer) is _LAYERS.Dense
        and not getattr(layer, "lora_enabled", False)
        and getattr(layer, "quantization_mode", None) is None
    )


class _DenseStep(_Step):
    """`Dense` or `TimeDistributed(Dense)`: rows and columns can go."""

    @property
    def dense(self):
        if isinstance(self.layer, _LAYERS.TimeDistributed):
            return self.layer.layer
        return self.layer

    @property
    def data_inputs(self):
        return [self.node.arguments.args[0]]

    def plan_views(self, in_views, out_demands):
        view, demand = in_views[0], out_demands[0]
        dense = self.dense
        self.rows, self.row_scale = view.kept, view.scale
        self.cols = np.arange(dense.units)
        if demand is not None and dense.activation not in _ACROSS_FEATURES:
            self.cols = np.flatnonzero(demand)
            if not self.cols.size:
                self.cols = np.zeros(1, "int64")
        self.plan.slim_layers.append(
            SlimLayer(
                "dense",
                self.layer,
                input_width=len(self.rows),
                units=len(self.cols),
                use_bias=dense.use_bias,
            )
        )
        return [_View(dense.units, self.cols, source=self.layer.name)]

    def build(self, args, kwargs):
        dense = self.dense
        config = dense.get_config()
        config["units"] = len(self.cols)
        new_dense = _LAYERS.Dense.from_config(config)
        new = new_dense
        if dense is not self.layer:
            config = self.layer.get_config()
            config["layer"] = keras.saving.serialize_keras_object(new_dense)
            new = _LAYERS.TimeDistributed.from_config(config)
            new_dense = new.layer
        self.plan.new_layers.append(new)
        outputs = new(*args, **kwargs)
        kernel = _numpy(dense.kernel)[self.rows][:, self.cols]
        weights = [kernel * self.row_scale[:, None]]
        if dense.use_bias:
            weights.append(_numpy(dense.bias)[self.cols])
        new_dense.set_weights(weights)
        return outputs


class _EmbeddingStep(_Step):
    def plan_views(self, in_views, out_demands):
        layer, demand = self.layer, out_demands[0]
        self.cols = np.arange(layer.output_dim)
        if demand is not None:
            self.cols = np.flatnonzero(demand)
            if not self.cols.size:
                self.cols = np.zeros(1, "int64")
        self.plan.slim_layers.append(
            SlimLayer(
                "embedding",
                layer,
                input_dim=layer.input_dim,
                units=len(self.cols),
            )
        )
        return [_View(layer.output_dim, self.cols, source=layer.name)]

    def build(self, args, kwargs):
        config = self.layer.get_config()
        config["output_dim"] = len(self.cols)
        new = _LAYERS.Embedding.from_config(config)
        self.plan.new_layers.append(new)
        outputs = new(*args, **kwargs)
        new.set_weights([_numpy(self.layer.embeddings)[:, self.cols]])
        return outputs


class _FeatureWiseStep(_Step):
    """A layer that maps every feature alone; activations get the scale
    applied first by a `Rescaling` layer."""

    @property
    def data_inputs(self):
        return [self.node.arguments.args[0]]

    def reads(self, out_demands):
        return {id(self.data_inputs[0]): out_demands[0]}

    def plan_views(self, in_views, out_demands):
        view = in_views[0]
        self.rescale = None
        if isinstance(self.layer, _ACTIVATIONS) and not np.all(view.scale == 1):
            self.rescale = view.scale
            self.plan.slim_layers.append(SlimLayer("rescaling"))
            view = _View(view.width, view.kept, source=view.source)
        self.plan.slim_layers.append(SlimLayer("clone", self.layer))
        return [view]

    def build(self, args, kwargs):
        args = list(args)
        if self.rescale is not None:
            name = self.plan.unique_name(self.layer.name + "_scale")
            rescaling = _LAYERS.Rescaling(self.rescale, name=name)
            self.plan.new_layers.append(rescaling)
            args[0] = rescaling(args[0])
        new = _clone(self.layer)
        self.plan.new_layers.append(new)
        outputs = new(*args, **kwargs)
        new.set_weights(self.layer.get_weights())
        return outputs


class _ConcatenateStep(_CloneStep):
    @property
    def data_inputs(self):
        return tree.flatten(self.node.arguments.args[0])

    def _widths(self):
        return [t.shape[-1] for t in self.data_inputs]

    def reads(self, out_demands):
        demand = out_demands[0]
        if demand is None:
            return {}
        ends = np.cumsum(self._widths())
        return {
            id(t): demand[end - width : end]
            for t, width, end in zip(self.data_inputs, self._widths(), ends)
        }

    def plan_views(self, in_views, out_demands):
        self.plan.slim_layers.append(SlimLayer("clone", self.layer))
        return [_View.concat(in_views)]


def _concatenates_features(layer, node):
    if type(layer) is not _LAYERS.Concatenate:
        return False
    rank = len(node.outputs[0].shape)
    inputs = tree.flatten(node.arguments.args[0])
    return layer.axis in (-1, rank - 1) and all(
        t.shape[-1] is not None for t in inputs
    )


def _feature_wise(layer):
    if type(layer) in _FEATURE_WISE:
        return getattr(layer, "data_format", "channels_last") == "channels_last"
    if type(layer) in _ACTIVATIONS:
        activation = getattr(layer, "activation", None)
        return activation not in _ACROSS_FEATURES and _zero_preserving(
            layer.call
        )
    return False


def _single_input(node):
    return len(node.arguments.args) == 1 and not isinstance(
        node.arguments.args[0], (list, tuple, dict)
    )


class ShrinkPlan:
    """What `shrink` will do to `model`, decided before building anything.

    Attributes:
        recurrent: a `RecurrentPlan` per recurrent layer (a `Bidirectional`
            has two), in graph order.
        slim_layers: every layer of the slim model (`RecurrentPlan` or
            `SlimLayer`), for counting parameters and FLOPs.
    """

    def __init__(self, model):
        self.model = model
        self.graph = _functional_graph(model)
        depths = sorted(self.graph._nodes_by_depth, reverse=True)
        nodes = [n for d in depths for n in self.graph._nodes_by_depth[d]]
        calls = {}
        for node in nodes:
            calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        self.steps = [self._step(node, calls) for node in nodes]
        self.names = {op.name for op in self.graph.operations}
        self.recurrent = []
        self.slim_layers = []
        self.cloned = set()
        self.notes = []
        views = self._plan_steps(self._demands())
        self.output_views = [
            self._plan_output(t, views) for t in self.graph.outputs
        ]
        for note in self.notes:
            warnings.warn(note, UserWarning, stacklevel=3)

    def _plan_steps(self, demands):
        views = {}
        for step in self.steps:
            in_views = [self._view(t, views) for t in step.data_inputs]
            out_demands = [demands.get(id(t)) for t in step.node.outputs]
            out_views = step.plan_views(in_views, out_demands)
            for tensor, view in zip(step.node.outputs, out_views):
                views[id(tensor)] = view
        return views

    @staticmethod
    def _view(tensor, views):
        view = views.get(id(tensor)) or _View.of(tensor)
        if view.reason is not None:
            raise ShrinkError(view.reason)
        return view

    def _plan_output(self, tensor, views):
        view = self._view(tensor, views)
        if view.is_identity:
            pass
        elif _restores_by_rescaling(view):
            self.slim_layers.append(SlimLayer("rescaling"))
        else:
            self.slim_layers.append(
                SlimLayer(
                    "dense",
                    input_width=len(view.kept),
                    units=view.width,
                    use_bias=False,
                )
            )
        return view

    def _step(self, node, calls):
        layer = node.operation
        if node.is_input:
            return _InputStep(self, node)
        if calls[id(layer)] > 1:
            return _CloneStep(
                self, node, "it is shared (called more than once)"
            )
        recurrent = type(layer) in _STANDARD_RECURRENT
        if recurrent or isinstance(layer, _LAYERS.Bidirectional):
            if not _single_input(node) or node.arguments.kwargs.get(
                "initial_state"
            ) is not None:
                return _CloneStep(
                    self, node, "shrink does not support initial_state"
                )
            if recurrent:
                return _RecurrentStep(self, node)
            if all(type(d) in _STANDARD_RECURRENT for d in (
                layer.forward_layer, layer.backward_layer
            )):
                return _BidirectionalStep(self, node)
            return _CloneStep(self, node, "it wraps a custom layer")
        if _single_input(node):
            if _plain_dense(layer) or (
                type(layer) is _LAYERS.TimeDistributed
                and _plain_dense(layer.layer)
            ):
                return _DenseStep(self, node)
            if (
                type(layer) is _LAYERS.Embedding
                and getattr(layer, "quantization_mode", None) is None
                and not getattr(layer, "lora_enabled", False)
            ):
                return _EmbeddingStep(self, node)
            if _feature_wise(layer):
                return _FeatureWiseStep(self, node)
        if _concatenates_features(layer, node):
            return _ConcatenateStep(self, node)
        return _CloneStep(self, node)

    def _demands(self):
        """Which features of each tensor the slim graph reads.

        `None`: all of them; else a boolean array over the features.
        """
        demands = {id(t): None for t in self.graph.outputs}
        read_any = set(demands)
        for step in reversed(self.steps):
            out_demands = [
                demands.get(id(t)) if id(t) in read_any else None
                for t in step.node.outputs
            ]
            partial = step.reads(out_demands)
            for tensor in step.node.input_tensors:
                demand = partial.get(id(tensor))
                if id(tensor) not in read_any:
                    read_any.add(id(tensor))
                    demands[id(tensor)] = demand
                elif demands[id(tensor)] is None or demand is None:
                    demands[id(tensor)] = None
                else:
                    demands[id(tensor)] = demands[id(tensor)] | demand
        return demands

    def unique_name(self, base):
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def build(self):
        """Builds the slim model."""
        self.new_layers = []
        self.clones = {}
        new_tensors = {}
        for step in self.steps:
            args, kwargs = step.node.arguments.fill_in(new_tensors)
            outputs = step.build(args, kwargs)
            for old, new in zip(step.node.outputs, tree.flatten(outputs)):
                new_tensors[id(old)] = new
        outputs = []
        for tensor, view in zip(self.graph.outputs, self.output_views):
            outputs.append(self._restore(new_tensors[id(tensor)], view, tensor))
        inputs = [new_tensors[id(t)] for t in self.graph.inputs]
        if isinstance(self.model, keras.Sequential):
            return keras.Sequential(self.new_layers, name=self.model.name)
        return keras.Model(
            tree.pack_sequence_as(self.graph._inputs_struct, inputs),
            tree.pack_sequence_as(self.graph._outputs_struct, outputs),
            name=self.model.name,
        )

    def _restore(self, tensor, view, original):
        """Puts an output back into its original features."""
        if view.is_identity:
            return tensor
        name = original._keras_history.operation.name
        if _restores_by_rescaling(view):
            layer = _LAYERS.Rescaling(
                view.scale, name=self.unique_name(name + "_scale")
            )
            self.new_layers.append(layer)
            return layer(tensor)
        layer = _LAYERS.Dense(
            view.width,
            use_bias=False,
            name=self.unique_name(name + "_restore"),
        )
        self.new_layers.append(layer)
        outputs = layer(tensor)
        kernel = np.zeros((len(view.kept), view.width), "float32")
        kernel[np.arange(len(view.kept)), view.kept] = view.scale
        layer.set_weights([kernel])
        return outputs


def _restores_by_rescaling(view):
    return np.array_equal(view.kept, np.arange(view.width))


def _functional_graph(model):
    if isinstance(model, keras.Sequential):
        graph = model._functional
        if graph is None:
            raise ShrinkError(
                f"Sequential model '{model.name}' is not built: start it with "
                "keras.Input(...) or call it on data first."
            )
        return graph
    if not isinstance(model, Functional):
        raise ShrinkError(
            f"shrink rebuilds Sequential and functional models; "
            f"'{model.name}' is a subclassed {type(model).__name__}."
        )
    return model
