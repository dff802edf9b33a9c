"""Traces a Keras 3 model into one TensorFlow function for the converter.

The function walks the model's functional graph and calls every Keras 3
layer itself on TensorFlow tensors, each inside a `tf.name_scope` of its
own (so that a converter failure can be traced back to the layer). Only
where the converter needs something else does a layer get a stand-in with
the same weights:

- an `LSTM` (tanh and sigmoid activations, not unrolled) becomes a
  `tf_keras.layers.LSTM`, which the converter fuses into one
  `UNIDIRECTIONAL_SEQUENCE_LSTM` op (a Keras 3 LSTM becomes a slower
  `WHILE` loop); a `Bidirectional` of two such LSTMs becomes a
  `tf_keras.layers.Bidirectional` (two fused ops). An LSTM called with an
  initial state, or reading a mask, is traced as Keras computes it;
- a stateful recurrent layer becomes a stateless copy: every call of the
  file starts from zero states (`streaming=True` carries them);
- with `streaming=True`, every recurrent layer becomes one step of its cell,
  reading its states from inputs of the function and returning the new
  states as extra outputs.

Masks. With `keep_masks=False` the masks that Keras would compute are
dropped: the file is then fed the unpadded sequence, on which every mask
would be all true. With `keep_masks=True` they are computed in the file.
"""

import keras
import numpy as np
import tensorflow as tf
import tf_keras

from keras_l0.export import _tf_compat
from keras_l0.export._common import ExportError
from keras_l0.export._common import clean_name
from keras_l0.export._common import functional
from keras_l0.export._common import layers
from keras_l0.export._common import unique_names
from keras_l0.layers import GATED_TO_PLAIN

_FUSED_ACTIVATIONS = {"activation": "tanh", "recurrent_activation": "sigmoid"}


def _fusable_lstm(layer):
    if type(layer) is not keras.layers.LSTM or layer.unroll:
        return False
    config = layer.get_config()
    return all(config.get(k) == v for k, v in _FUSED_ACTIVATIONS.items())


def _lstm_twin(layer, **overrides):
    config = dict(
        units=layer.units,
        use_bias=layer.use_bias,
        return_sequences=layer.return_sequences,
        return_state=layer.return_state,
        go_backwards=layer.go_backwards,
    )
    config.update(overrides)
    return tf_keras.layers.LSTM(**config)


def _state_suffixes(layer):
    sizes = keras.tree.flatten(layer.cell.state_size)
    if isinstance(layer, keras.layers.LSTM) and len(sizes) == 2:
        return list(zip(("h", "c"), sizes))
    if len(sizes) == 1:
        return [("h", sizes[0])]
    return [(f"s{i}", size) for i, size in enumerate(sizes)]


def _check_exportable(layer):
    inner = getattr(layer, "forward_layer", None) or getattr(layer, "layer", None)
    for candidate in (layer, inner):
        if type(candidate) in GATED_TO_PLAIN:
            raise ExportError(
                f"Layer '{layer.name}' ({type(layer).__name__}) holds L0 "
                "gates; remove them first with `keras_l0.shrink(model)`."
            )
    if getattr(layer, "quantization_mode", None):
        raise ExportError(
            f"Layer '{layer.name}' is quantized in Keras "
            f"({layer.quantization_mode}); export the float model with "
            "`quantization=` instead."
        )


class Trace:
    """The model as one TensorFlow function of its (and its states') inputs.

    Args:
        model: the Keras model.
        batch_size: the batch size of the state inputs (streaming).
        streaming: one time step per call, states as inputs and outputs.
        keep_masks: compute the model's masks in the function.
    """

    def __init__(self, model, batch_size, *, streaming=False, keep_masks=False):
        self.model = model
        self.streaming = streaming
        self.keep_masks = keep_masks
        self.scopes = {}
        self.state_names = []
        self.state_shapes = []
        self._states = {}
        self._substitutes = {}
        self._extra_variables = []
        names = {}
        for layer in layers(model):
            _check_exportable(layer)
            names[id(layer)] = layer
        for layer, scope in zip(
            names.values(), unique_names(l.name for l in names.values())
        ):
            self.scopes[id(layer)] = scope
        for layer in names.values():
            self._prepare(layer, batch_size)
        if len(set(self.state_names)) != len(self.state_names):
            raise ExportError(
                "Two recurrent layers give the same state names "
                f"{sorted(self.state_names)}; rename one of them."
            )
        self._state_values = None

    def layer_of_scope(self, scope):
        for layer in layers(self.model):
            if self.scopes[id(layer)] == scope:
                return layer
        return None

    def _prepare(self, layer, batch_size):
        if self.streaming:
            if isinstance(layer, keras.layers.Bidirectional):
                raise ExportError(
                    f"Bidirectional layer '{layer.name}' cannot be streamed: "
                    "its backward direction needs the whole sequence."
                )
            if isinstance(layer, keras.layers.RNN):
                if layer.go_backwards:
                    raise ExportError(
                        f"Recurrent layer '{layer.name}' has go_backwards="
                        "True and cannot be streamed."
                    )
                for suffix, size in _state_suffixes(layer):
                    self.state_names.append(clean_name(f"{layer.name}_{suffix}"))
                    self.state_shapes.append((batch_size, size))
            return
        if _fusable_lstm(layer):
            twin = _lstm_twin(layer)
            twin.build((None, None, layer.cell.kernel.shape[0]))
            twin.set_weights(layer.get_weights())
        elif (
            isinstance(layer, keras.layers.Bidirectional)
            and _fusable_lstm(layer.forward_layer)
            and _fusable_lstm(layer.backward_layer)
            and not layer.return_state
        ):
            twin = tf_keras.layers.Bidirectional(
                _lstm_twin(layer.forward_layer),
                backward_layer=_lstm_twin(layer.backward_layer),
                merge_mode=layer.merge_mode,
            )
            twin.build((None, None, layer.forward_layer.cell.kernel.shape[0]))
            twin.forward_layer.set_weights(layer.forward_layer.get_weights())
            twin.backward_layer.set_weights(layer.backward_layer.get_weights())
        elif isinstance(layer, keras.layers.RNN) and layer.stateful:
            config = layer.get_config()
            config.update(stateful=False, name=f"{layer.name}_stateless")
            twin = type(layer).from_config(config)
            twin.build((None, None, layer.cell.kernel.shape[0]))
            twin.set_weights(layer.get_weights())
            self._extra_variables.extend(v.value for v in twin.variables)
            self._substitutes[id(layer)] = ("keras", twin)
            return
        else:
            return
        self._extra_variables.extend(twin.weights)
        self._substitutes[id(layer)] = ("tf_keras", twin)

    def variables(self):
        """Every TensorFlow variable that the function may read."""
        seen = {}
        for v in [x.value for x in self.model.variables] + self._extra_variables:
            seen.setdefault(id(v), v)
        return list(seen.values())

    def __call__(self, inputs, states=()):
        """The model's (flat) outputs, then the new states (streaming)."""
        self._state_values = dict(zip(self.state_names, states))
        self._new_states = {}
        outputs = self._run(self.model, inputs)
        return list(keras.tree.flatten(outputs)) + [
            self._new_states[name] for name in self.state_names
        ]

    def _run(self, model, inputs):
        return _tf_compat.run_through_graph(
            functional(model), inputs, operation_fn=self._operation_fn
        )

    def _operation_fn(self, operation):
        def call(*args, **kwargs):
            return self._call(operation, args, kwargs)

        return call

    def _call(self, operation, args, kwargs):
        scope = self.scopes.get(id(operation), clean_name(operation.name))
        if "training" in _tf_compat.context_arguments(operation):
            kwargs["training"] = False
        with tf.name_scope(scope):
            if isinstance(operation, keras.Model):
                kwargs.pop("training", None)
                outputs = self._run(operation, args[0])
            elif self.streaming and isinstance(operation, keras.layers.RNN):
                outputs = self._step(operation, args, kwargs)
            else:
                outputs = self._layer(operation, args, kwargs)
        if not self.keep_masks:
            for y in keras.tree.flatten(outputs):
                if tf.is_tensor(y):
                    _tf_compat.clear_mask(y)
        return outputs

    def _layer(self, layer, args, kwargs):
        kind, substitute = self._substitutes.get(id(layer), (None, None))
        if not self.keep_masks:
            kwargs.pop("mask", None)
        masked = kwargs.get("mask") is not None or (
            self.keep_masks
            and any(
                _tf_compat.get_mask(x) is not None
                for x in keras.tree.flatten(args[:1])
                if tf.is_tensor(x)
            )
        )
        if kind == "tf_keras":
            initial = len(args) > 1 or kwargs.get("initial_state") is not None
            if not (initial or masked):
                return substitute(args[0], training=False)
        elif kind == "keras":
            return substitute(*args, **kwargs)
        if type(layer) is keras.layers.TimeDistributed and not masked:
            return self._time_distributed(layer, args[0])
        return layer(*args, **kwargs)

    def _time_distributed(self, layer, x):
        """`layer.layer` on the batch and time axes merged: one op for all
        steps (Keras traces a loop or a `vectorized_map`, whose shapes a
        variable-length file does not resize)."""
        shape = tf.shape(x)
        merged = tf.reshape(x, tf.concat([[-1], shape[2:]], 0))
        kwargs = {}
        if "training" in _tf_compat.context_arguments(layer.layer):
            kwargs["training"] = False
        y = layer.layer(merged, **kwargs)
        return tf.reshape(y, tf.concat([shape[:2], tf.shape(y)[1:]], 0))

    def _step(self, layer, args, kwargs):
        if len(args) > 1 or kwargs.get("initial_state") is not None:
            raise ExportError(
                f"Recurrent layer '{layer.name}' is called with an initial "
                "state, which streaming=True replaces by state inputs."
            )
        names = [
            clean_name(f"{layer.name}_{suffix}")
            for suffix, _ in _state_suffixes(layer)
        ]
        states = [self._state_values[name] for name in names]
        x = args[0][:, 0]
        output, new_states = layer.cell(
            x, states if len(states) > 1 else states, training=False
        )
        new_states = keras.tree.flatten(new_states)
        for name, state in zip(names, new_states):
            self._new_states[name] = tf.identity(state, name=name)
        if layer.return_sequences:
            output = output[:, None]
        if layer.return_state:
            return [output, *new_states]
        return output


def zero_states(trace):
    return [np.zeros(shape, np.float32) for shape in trace.state_shapes]
