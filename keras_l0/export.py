"""Export of slim Keras 3 recurrent models to LiteRT (TFLite) flatbuffers.

`to_tflite` converts a model of standard Keras layers (`Embedding`, `LSTM`,
`GRU`, `SimpleRNN`, `Dense`, `TimeDistributed`, `Bidirectional`, `Dropout`,
`Rescaling`, and the weightless layers listed in `SUPPORTED_LAYERS`;
`Sequential` or functional, nested models included) into a `.tflite` file
that runs on the stock LiteRT runtime: builtin ops only, no Flex
(`SELECT_TF_OPS`) op. It is the last step after `keras_l0.shrink`. This is
the only module of `keras_l0` that imports TensorFlow.

How it converts. Converting a Keras 3 `LSTM` gives a `WHILE` loop; the
converter only emits the fused `UNIDIRECTIONAL_SEQUENCE_LSTM` op (1.6-2x
faster at small sizes) for `tf_keras` LSTMs. The model is therefore rebuilt
layer by layer as a `tf_keras` twin holding the same weights, and the twin is
converted. `GRU` and `SimpleRNN` have no fused op and become `WHILE` loops of
builtin ops; so do LSTMs with non-default activations, with
`return_state=True` (the converter's choice) or called with an
`initial_state` (the fused op would overwrite those tensors in place).

Shapes. Batch size and sequence length are fixed in the file (batch 1 and
the model's sequence length by default); a dynamic batch size does not
convert. `sequence_length="variable"` leaves the time axis open, which
converts for LSTM (still fused), GRU and SimpleRNN: the file then takes
inputs of any length, LiteRT resizing them. Axis 1 of every input of rank 2
or more is its time axis.

State. The fused LSTM op keeps its state in variable tensors, which LiteRT
carries from one invocation to the next (and the converter may share its
zero initial state with other ops, which the op then overwrites). The
exported file gives every fused LSTM op its own state tensors, zeroed by a
`FILL` op just before it at every invocation, so that each call is one
independent sequence, as in Keras.

Signatures. The full-sequence file has one signature, `"serving_default"`;
its inputs are named after the model's `Input` layers and its outputs after
the layers that produce them (`input_names(model)`, `output_names(model)`:
characters other than letters, digits and `_` become `_`, and repeated names
get `_1`, `_2`, ...). The streaming file (`streaming=True`) has one
signature, `"step"`, that advances every recurrent layer by one time step.
Its inputs are the model's inputs with a time axis of length 1, plus one
`float32` input of shape `(batch, units)` per recurrent state, named
`"<layer>_h"` (and `"<layer>_c"` for an LSTM's carry state); its outputs are
the model's outputs for that step (with a time axis of length 1 where the
model returns sequences) plus the new states, under the same state names. An
app starts from zero states and feeds each step's output states back in.
With its states as inputs the converter does not fuse the LSTM; the step is
unrolled into the cell's builtin ops (`FULLY_CONNECTED`, `LOGISTIC`, `TANH`,
`MUL`, `ADD`, ...), with no loop.

Types. Inputs that feed an `Embedding` (or are integer in Keras) are `int32`
token ids; the others are `float32`. Quantized files keep these input and
output types.

Quantization. `"int8"` calibrates with TensorFlow's older quantizer, after
giving every op its own copy of constants that the converter merged (with
TF 2.21 the newer quantizer, and merged constants such as the equal
forget-gate biases of fresh LSTMs, give errors larger than the outputs).
TF 2.21's calibrator crashes on `WHILE` loops, so `"int8"` is refused for
models that convert to one (GRU, SimpleRNN, unfused LSTMs) unless streamed.
In a streaming file the unrolled cell computes its gates and states in int8,
less precisely than the fused op, whose cell state is int16.
"""

import os
import re
import tempfile
import time
import warnings

import keras
import numpy as np
import tensorflow as tf
import tf_keras
from ai_edge_litert.interpreter import Interpreter
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

QUANTIZATIONS = ("none", "dynamic", "float16", "int8")
SIGNATURE_KEY = "serving_default"
STREAMING_SIGNATURE_KEY = "step"
VARIABLE_LENGTH = "variable"
RANDOM_DATASET = "random"
# Sequence length of random inputs (verification, benchmark, random
# calibration) when neither the model nor the file fixes one.
DEFAULT_SEQUENCE_LENGTH = 8
RANDOM_CALIBRATION_BATCHES = 100

_RNN_STATES = {
    keras.layers.LSTM: ("h", "c"),
    keras.layers.GRU: ("h",),
    keras.layers.SimpleRNN: ("h",),
}
_TF_KERAS_RNN = {
    keras.layers.LSTM: tf_keras.layers.LSTM,
    keras.layers.GRU: tf_keras.layers.GRU,
    keras.layers.SimpleRNN: tf_keras.layers.SimpleRNN,
}
_TF_KERAS_CELL = {
    keras.layers.LSTM: tf_keras.layers.LSTMCell,
    keras.layers.GRU: tf_keras.layers.GRUCell,
    keras.layers.SimpleRNN: tf_keras.layers.SimpleRNNCell,
}
# Layers that are the identity at inference.
_PASS_THROUGH = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
)
# Weightless layers whose tf_keras class of the same name takes the same
# arguments.
_SAME_CONFIG = (
    keras.layers.ReLU,
    keras.layers.ELU,
    keras.layers.Concatenate,
    keras.layers.Add,
    keras.layers.Multiply,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.RepeatVector,
    keras.layers.Flatten,
    keras.layers.Reshape,
)
_SUPPORTED_TYPES = (
    keras.layers.InputLayer,
    keras.layers.Embedding,
    *_RNN_STATES,
    keras.layers.Dense,
    keras.layers.TimeDistributed,
    keras.layers.Bidirectional,
    keras.layers.Rescaling,
    keras.layers.Activation,
    *_PASS_THROUGH,
    *_SAME_CONFIG,
)
_MERGE_MODES = ("concat", "sum", "ave", "mul")
SUPPORTED_LAYERS = tuple(kind.__name__ for kind in _SUPPORTED_TYPES[1:])
_SUPPORTED = ", ".join(SUPPORTED_LAYERS)
_TFLITE_IDENTIFIER = b"TFL3"
# Inputs 18 and 19 of UNIDIRECTIONAL_SEQUENCE_LSTM: its output (h) and cell
# (c) states, which the op updates in place.
_LSTM_STATE_INPUTS = (18, 19)
_FILL_VERSIONS = {
    schema.TensorType.INT8: 3,
    schema.TensorType.INT16: 3,
    schema.TensorType.FLOAT16: 4,
}
_NUMPY_TYPES = {
    schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.INT8: np.int8,
    schema.TensorType.INT16: np.int16,
}
_OPERATOR_NAMES = {
    code: name
    for name, code in vars(schema.BuiltinOperator).items()
    if not name.startswith("_")
}


class ExportError(ValueError):
    """The model, or an argument, cannot be exported to TFLite."""


def _clean_name(name):
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def _unique_names(names):
    seen = {}
    unique = []
    for name in map(_clean_name, names):
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}_{count}")
    return unique


def _functional(model):
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise ExportError(
                f"Sequential model '{model.name}' has no input shape; start "
                "it with `keras.Input(shape)`."
            )
        return functional
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth"):
        return model
    raise ExportError(
        "Expected a Sequential or functional keras.Model, got "
        f"{type(model).__name__}."
    )


def input_names(model):
    """The exported file's input names, in `model.inputs` order."""
    return _unique_names(
        x._keras_history.operation.name for x in _functional(model).inputs
    )


def output_names(model):
    """The exported file's output names, in `model.outputs` order."""
    return _unique_names(
        x._keras_history.operation.name for x in _functional(model).outputs
    )


def _vocabulary_sizes(functional):
    """`{input position: vocabulary size}` for inputs read by Embeddings."""
    positions = {id(x): i for i, x in enumerate(functional.inputs)}
    sizes = {}
    for nodes in functional._nodes_by_depth.values():
        for node in nodes:
            operation = node.operation
            if type(operation) is keras.layers.Embedding:
                read = {0: operation.input_dim}
            elif isinstance(operation, keras.Model):
                read = _vocabulary_sizes(_functional(operation))
            else:
                continue
            for j, x in enumerate(node.input_tensors):
                if id(x) in positions and j in read:
                    i = positions[id(x)]
                    sizes[i] = min(read[j], sizes.get(i, read[j]))
    return sizes


class _InputSpec:
    """One input of the exported file: name, shape, dtype, token range."""

    def __init__(self, name, shape, dtype, vocabulary_size=None):
        self.name = name
        self.shape = tuple(shape)
        self.dtype = dtype
        self.vocabulary_size = vocabulary_size

    @property
    def is_sequence(self):
        return len(self.shape) >= 2

    def with_length(self, length):
        if not self.is_sequence:
            return self
        shape = (self.shape[0], length, *self.shape[2:])
        return _InputSpec(self.name, shape, self.dtype, self.vocabulary_size)

    def random(self, rng, length):
        """A random valid input; `length` fills an open time axis."""
        spec = self if self.shape[1:2] != (None,) else self.with_length(length)
        if None in spec.shape:
            raise ExportError(
                f"Input '{self.name}' has an open dimension besides time: "
                f"{self.shape}."
            )
        if self.dtype == "int32":
            high = self.vocabulary_size or 1
            return rng.integers(0, high, size=spec.shape, dtype=np.int32)
        return rng.standard_normal(spec.shape).astype(np.float32)


def _input_specs(model, batch_size):
    """The model's inputs with `batch_size`, time axes as in the model."""
    functional = _functional(model)
    vocabulary = _vocabulary_sizes(functional)
    return [
        _InputSpec(
            name,
            (batch_size, *x.shape[1:]),
            "int32" if "int" in str(x.dtype) or i in vocabulary else "float32",
            vocabulary.get(i),
        )
        for i, (x, name) in enumerate(
            zip(functional.inputs, input_names(model))
        )
    ]


def _model_sequence_length(specs):
    lengths = {s.shape[1] for s in specs if s.is_sequence}
    if len(lengths) > 1:
        raise ExportError(
            "The model's inputs have different sequence lengths: "
            f"{sorted(lengths, key=str)}."
        )
    return lengths.pop() if lengths else None


def _export_length(specs, sequence_length):
    """The time length of the exported file (None: variable)."""
    model_length = _model_sequence_length(specs)
    if sequence_length is None:
        if model_length is None and any(s.is_sequence for s in specs):
            raise ExportError(
                "The model's sequence length is undefined; pass "
                "`sequence_length` (an int, or 'variable')."
            )
        return model_length
    if sequence_length == VARIABLE_LENGTH:
        return None
    length = _check_count(sequence_length, "sequence_length")
    if model_length is not None and model_length != length:
        raise ExportError(
            f"sequence_length={length} conflicts with the model's fixed "
            f"sequence length {model_length}."
        )
    return length


def _check_count(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ExportError(f"`{name}` must be an integer, got {value!r}.")
    if value < minimum:
        raise ExportError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)


def _activation(layer, key="activation"):
    name = layer.get_config()[key]
    if not isinstance(name, str):
        function = getattr(layer, key)
        raise ExportError(
            f"Layer '{layer.name}' has a custom {key} "
            f"({getattr(function, '__name__', type(function).__name__)}); "
            "only Keras' built-in activations can be exported."
        )
    try:
        return tf_keras.activations.get(name)
    except ValueError:
        raise ExportError(
            f"Layer '{layer.name}' has the {key} '{name}', which tf_keras "
            "(and so the TFLite export) does not provide."
        ) from None


def _set_weights(twin, layer):
    weights = layer.get_weights()
    if len(weights) != len(twin.weights):
        raise ExportError(
            f"Layer '{layer.name}' has {len(weights)} weights where the "
            f"exported layer has {len(twin.weights)}."
        )
    try:
        twin.set_weights(weights)
    except ValueError as e:
        raise ExportError(
            f"Layer '{layer.name}': its weights do not fit the exported "
            f"layer ({str(e).splitlines()[0]})."
        ) from None


class _TwinBuilder:
    """Rebuilds a Keras 3 model as a `tf_keras` model with the same weights.

    Layers are translated one by one and called on `tf_keras` tensors in the
    order of the Keras graph. With `streaming=True`, every recurrent layer
    reads its initial states from new inputs and returns its final states,
    which become extra outputs.
    """

    def __init__(self, batch_size, streaming):
        self.batch_size = batch_size
        self.streaming = streaming
        self.state_names = []
        self.state_inputs = []
        self.state_outputs = []
        self._layer_names = set()

    def _name(self, layer):
        """`layer`'s name, made unique across nested models."""
        name = layer.name
        count = 0
        while name in self._layer_names:
            count += 1
            name = f"{layer.name}_{count}"
        self._layer_names.add(name)
        return name

    def build(self, model, specs):
        _check_layers(model)
        inputs = [
            tf_keras.Input(
                shape=spec.shape[1:],
                batch_size=self.batch_size,
                dtype=spec.dtype,
                name=spec.name,
            )
            for spec in specs
        ]
        outputs = self._run(model, inputs)
        return tf_keras.Model(
            inputs + self.state_inputs, outputs + self.state_outputs
        )

    def _run(self, model, inputs):
        outputs = _functional(model)._run_through_graph(
            inputs, operation_fn=self._operation
        )
        return list(keras.tree.flatten(outputs))

    def _operation(self, operation):
        if not isinstance(operation, keras.layers.Layer):
            raise ExportError(
                f"Operation '{operation.name}' "
                f"({type(operation).__name__}) cannot be exported; only "
                f"layers can: {_SUPPORTED}."
            )
        if isinstance(operation, keras.Model):
            return lambda *args, **kwargs: self._nested(operation, args[0])
        return lambda *args, **kwargs: self._call(operation, args, kwargs)

    def _nested(self, model, inputs):
        outputs = self._run(model, keras.tree.flatten(inputs))
        return outputs[0] if len(outputs) == 1 else outputs

    def _call(self, layer, args, kwargs):
        kwargs = {
            k: v for k, v in kwargs.items() if k not in ("training", "mask")
        }
        if _is_pass_through(layer):
            return args[0]
        if type(layer) in _RNN_STATES and self.streaming:
            return self._call_streaming_rnn(layer, args, kwargs)
        # The converter fuses an LSTM whose initial states are computed in
        # the graph into an op that overwrites those tensors in place, so
        # such a layer gets a plain (unfused) loop.
        fused = not (len(args) > 1 or "initial_state" in kwargs)
        twin = self._twin(layer, fused)
        outputs = twin(*args, **kwargs)
        _set_weights(twin, layer)
        return outputs

    def _twin(self, layer, fused=True):
        """The tf_keras twin of `layer`, weights not yet set."""
        if getattr(layer, "quantization_mode", None):
            raise ExportError(
                f"Layer '{layer.name}' is quantized in Keras "
                f"({layer.quantization_mode}); export the float model with "
                "`quantization=` instead."
            )
        kind = type(layer)
        if kind in _RNN_STATES:
            return self._rnn_twin(layer, fused)
        if kind is keras.layers.Dense:
            return tf_keras.layers.Dense(
                layer.units,
                activation=_activation(layer),
                use_bias=layer.use_bias,
                name=self._name(layer),
            )
        if kind is keras.layers.Embedding:
            if layer.mask_zero:
                raise ExportError(
                    f"Embedding '{layer.name}' has mask_zero=True; masked "
                    "models are not exported. Export a copy with "
                    "mask_zero=False and unpadded (fixed-length) inputs."
                )
            return tf_keras.layers.Embedding(
                layer.input_dim, layer.output_dim, name=self._name(layer)
            )
        if kind is keras.layers.Activation:
            return tf_keras.layers.Activation(
                _activation(layer), name=self._name(layer)
            )
        if kind in _SAME_CONFIG:
            config = layer.get_config()
            for key in ("dtype", "trainable"):
                config.pop(key)
            config["name"] = self._name(layer)
            try:
                return getattr(tf_keras.layers, kind.__name__)(**config)
            except (TypeError, ValueError) as e:
                raise ExportError(
                    f"Layer '{layer.name}' ({kind.__name__}): its config "
                    f"does not convert ({str(e).splitlines()[0]})."
                ) from None
        if kind is keras.layers.Rescaling:
            return tf_keras.layers.Rescaling(
                layer.scale, offset=layer.offset, name=self._name(layer)
            )
        if kind is keras.layers.TimeDistributed:
            inner = layer.layer
            if type(inner) in _RNN_STATES or isinstance(
                inner, (keras.layers.Bidirectional, keras.Model)
            ):
                raise ExportError(
                    f"TimeDistributed layer '{layer.name}' wraps a "
                    f"{type(inner).__name__}, which is not exported."
                )
            return tf_keras.layers.TimeDistributed(
                self._twin(inner), name=self._name(layer)
            )
        if kind is keras.layers.Bidirectional:
            return self._bidirectional_twin(layer, fused)
        raise _unsupported(layer)

    def _bidirectional_twin(self, layer, fused):
        if self.streaming:
            raise ExportError(
                f"Bidirectional layer '{layer.name}' cannot be streamed: its "
                "backward direction needs the whole sequence."
            )
        if layer.merge_mode not in _MERGE_MODES:
            raise ExportError(
                f"Bidirectional layer '{layer.name}' has merge_mode="
                f"{layer.merge_mode!r}; expected one of {_MERGE_MODES}."
            )
        for direction in (layer.forward_layer, layer.backward_layer):
            if type(direction) not in _RNN_STATES:
                self._twin(direction)
        return tf_keras.layers.Bidirectional(
            self._rnn_twin(layer.forward_layer, fused),
            backward_layer=self._rnn_twin(layer.backward_layer, fused),
            merge_mode=layer.merge_mode,
            name=self._name(layer),
        )

    def _rnn_twin(self, layer, fused=True, **overrides):
        """A tf_keras recurrent layer; `fused=False`: `RNN(cell)`."""
        if layer.stateful and not self.streaming:
            raise ExportError(
                f"Recurrent layer '{layer.name}' is stateful; export with "
                "streaming=True to carry its states across calls."
            )
        cell_config = dict(
            units=layer.units,
            activation=_activation(layer),
            use_bias=layer.use_bias,
        )
        if type(layer) is not keras.layers.SimpleRNN:
            cell_config["recurrent_activation"] = _activation(
                layer, "recurrent_activation"
            )
        if type(layer) is keras.layers.GRU:
            cell_config["reset_after"] = layer.cell.reset_after
        config = dict(
            return_sequences=layer.return_sequences,
            return_state=layer.return_state,
            go_backwards=layer.go_backwards,
            name=self._name(layer),
        )
        config.update(overrides)
        if fused:
            return _TF_KERAS_RNN[type(layer)](**cell_config, **config)
        cell = _TF_KERAS_CELL[type(layer)](**cell_config)
        return tf_keras.layers.RNN(cell, **config)

    def _call_streaming_rnn(self, layer, args, kwargs):
        if layer.go_backwards:
            raise ExportError(
                f"Recurrent layer '{layer.name}' has go_backwards=True and "
                "cannot be streamed."
            )
        if kwargs or len(args) > 1:
            raise ExportError(
                f"Recurrent layer '{layer.name}' is called with an initial "
                "state, which streaming=True replaces by state inputs."
            )
        states = []
        for suffix in _RNN_STATES[type(layer)]:
            name = _clean_name(f"{layer.name}_{suffix}")
            if name in self.state_names:
                raise ExportError(
                    f"Two recurrent layers give the state name '{name}'; "
                    "rename one of them."
                )
            state = tf_keras.Input(
                shape=(layer.units,), batch_size=self.batch_size, name=name
            )
            self.state_names.append(name)
            self.state_inputs.append(state)
            states.append(state)
        twin = self._rnn_twin(layer, return_state=True, unroll=True)
        outputs = twin(args[0], initial_state=states)
        _set_weights(twin, layer)
        self.state_outputs.extend(outputs[1:])
        return outputs if layer.return_state else outputs[0]


def _unsupported(layer):
    hint = ""
    if isinstance(layer, tuple(_RNN_STATES)):
        hint = " Remove its gates first with `keras_l0.shrink(model)`."
    return ExportError(
        f"Layer '{layer.name}' ({type(layer).__name__}) cannot be exported; "
        f"supported layers: {_SUPPORTED}.{hint}"
    )


def _layers(model):
    """The layers of `model` and of its nested models."""
    for layer in _functional(model).layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def _check_layers(model):
    """Raises for the first layer of `model` that cannot be exported."""
    for layer in _layers(model):
        if type(layer) not in _SUPPORTED_TYPES:
            raise _unsupported(layer)


def _is_pass_through(layer):
    if type(layer) is keras.layers.TimeDistributed:
        layer = layer.layer
    return type(layer) in _PASS_THROUGH


def _dataset_batches(dataset, specs, batch_size):
    """The items of a representative dataset, as lists of `batch_size` rows."""
    items = dataset() if callable(dataset) else dataset
    try:
        items = iter(items)
    except TypeError:
        raise ExportError(
            "`representative_dataset` must be an iterable of input batches "
            f"or a callable returning one, got {type(dataset).__name__}."
        ) from None
    for item in items:
        if isinstance(item, dict):
            missing = [s.name for s in specs if s.name not in item]
            if missing:
                raise ExportError(
                    f"A representative_dataset item lacks the inputs "
                    f"{missing}; its keys are {sorted(item)}."
                )
            arrays = [item[s.name] for s in specs]
        elif isinstance(item, (list, tuple)):
            arrays = list(item)
        else:
            arrays = [item]
        if len(arrays) != len(specs):
            raise ExportError(
                f"representative_dataset items must hold {len(specs)} input "
                f"arrays, got {len(arrays)}."
            )
        arrays = [np.asarray(a, dtype=s.dtype) for a, s in zip(arrays, specs)]
        for array, spec in zip(arrays, specs):
            if len(array.shape) != len(spec.shape) or any(
                d is not None and d != n
                for d, n in zip(spec.shape[1:], array.shape[1:])
            ):
                expected = ", ".join(str(d) for d in spec.shape[1:])
                raise ExportError(
                    f"representative_dataset gives input '{spec.name}' the "
                    f"shape {array.shape}; expected (batch, {expected})."
                )
        for start in range(0, len(arrays[0]) - batch_size + 1, batch_size):
            yield [a[start : start + batch_size] for a in arrays]


def _calibration(dataset, specs, batch_size, twin, state_names):
    """The converter's representative dataset: dicts of signature inputs.

    A streaming file is calibrated on the steps of each sequence, with the
    states that the float twin reaches at each step.
    """
    if isinstance(dataset, str) and dataset == RANDOM_DATASET:
        rng = np.random.default_rng(0)
        length = _model_sequence_length(specs) or DEFAULT_SEQUENCE_LENGTH
        batches = (
            [spec.random(rng, length) for spec in specs]
            for _ in range(RANDOM_CALIBRATION_BATCHES)
        )
    elif isinstance(dataset, str):
        raise ExportError(
            "`representative_dataset` must be an iterable, a callable or "
            f"'{RANDOM_DATASET}', got {dataset!r}."
        )
    else:
        batches = _dataset_batches(dataset, specs, batch_size)
    names = [spec.name for spec in specs]
    step_function = None if twin is None else tf.function(twin)
    count = 0
    for count, batch in enumerate(batches, 1):
        if twin is None:
            yield dict(zip(names, batch))
            continue
        states = [
            np.zeros(x.shape, np.float32) for x in twin.inputs[len(specs) :]
        ]
        length = max(a.shape[1] for a, s in zip(batch, specs) if s.is_sequence)
        for t in range(length):
            step = [
                a[:, t : t + 1] if s.is_sequence else a
                for a, s in zip(batch, specs)
            ]
            yield dict(zip(names + state_names, step + states))
            outputs = step_function(step + states, training=False)
            states = [np.asarray(x) for x in outputs[-len(state_names) :]]
    if not count:
        raise ExportError(
            "representative_dataset gave no batch (of at least batch_size "
            f"= {batch_size} rows)."
        )


def _convert(twin, specs, names, quantization, calibration):
    signature = [
        tf.TensorSpec(spec.shape, spec.dtype, name=spec.name) for spec in specs
    ]

    @tf.function(input_signature=signature)
    def serve(*inputs):
        outputs = twin(list(inputs), training=False)
        return dict(zip(names, tf.nest.flatten(outputs)))

    # The converter saves the function (with the variables that its
    # trackable holds) as a SavedModel, which keeps the signature and lets
    # it fuse the LSTMs. A bare module saves far faster than the tf_keras
    # model, whose every layer function would be traced again.
    variables = tf.Module()
    variables.weights = list(twin.weights)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], variables
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        converter.representative_dataset = calibration
        # The MLIR quantizer of TF 2.21 calibrates a stacked LSTM's second
        # layer wrongly (max error above the output's range); the older
        # quantizer does not.
        converter.experimental_new_quantizer = False
        quantize = converter._quantize
        converter._quantize = lambda model, *args, **kwargs: quantize(
            _unshare_constants(model), *args, **kwargs
        )
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        ]
    try:
        with warnings.catch_warnings():
            # The calibrator runs the deprecated tf.lite.Interpreter.
            warnings.filterwarnings(
                "ignore", "(?s).*tf.lite.Interpreter is deprecated"
            )
            return converter.convert()
    except ExportError:
        raise
    except Exception as e:
        lines = str(e).strip().splitlines() or [type(e).__name__]
        raise ExportError(f"TFLite conversion failed: {lines[0]}") from e


def _unshare_constants(flatbuffer):
    """Gives every op input that reads a constant its own tensor and buffer.

    The converter merges equal constants, e.g. the forget-gate biases of two
    freshly initialised LSTMs of the same size. The quantizer then quantizes
    the shared buffer with the scale of one of its readers only, which
    corrupts the others.
    """
    model = flatbuffer_utils.convert_bytearray_to_object(flatbuffer)
    used_buffers = set()
    for subgraph in model.subgraphs:
        used_tensors = set(np.asarray(subgraph.outputs).tolist())
        for operator in subgraph.operators:
            inputs = np.array(operator.inputs, dtype=np.int32)
            for slot, index in enumerate(inputs):
                if index < 0:
                    continue
                tensor = subgraph.tensors[index]
                buffer = model.buffers[tensor.buffer]
                if tensor.buffer == 0 or buffer.data is None:
                    continue
                if index in used_tensors or tensor.buffer in used_buffers:
                    copy = schema.BufferT()
                    copy.data = np.array(buffer.data, copy=True)
                    model.buffers.append(copy)
                    tensor = _copy_tensor(tensor, "/unshared")
                    tensor.buffer = len(model.buffers) - 1
                    subgraph.tensors.append(tensor)
                    inputs[slot] = len(subgraph.tensors) - 1
                used_tensors.add(int(inputs[slot]))
                used_buffers.add(tensor.buffer)
            operator.inputs = inputs
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _copy_tensor(tensor, suffix):
    copy = schema.TensorT()
    for name, value in vars(tensor).items():
        setattr(copy, name, value)
    copy.name = tensor.name + suffix.encode()
    return copy


def _operator_index(model, code):
    for i, operator in enumerate(model.operatorCodes):
        if max(operator.builtinCode, operator.deprecatedBuiltinCode) == code:
            return i
    operator = schema.OperatorCodeT()
    operator.builtinCode = code
    operator.deprecatedBuiltinCode = min(
        code, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES
    )
    operator.version = 1
    model.operatorCodes.append(operator)
    return len(model.operatorCodes) - 1


def _add_constant(model, subgraph, name, array, tensor_type, quantization):
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(array.tobytes(), dtype=np.uint8)
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.name = name.encode()
    tensor.shape = np.array(array.shape, dtype=np.int32)
    tensor.type = tensor_type
    tensor.buffer = len(model.buffers) - 1
    tensor.quantization = quantization
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def _zeroed_state(model, subgraph, index):
    """A new variable tensor like tensor `index`, and the FILL op that
    writes (quantized) zeros into it."""
    tensor = _copy_tensor(subgraph.tensors[index], "/state")
    tensor.buffer = 0
    tensor.isVariable = True
    subgraph.tensors.append(tensor)
    state = len(subgraph.tensors) - 1
    quantization = tensor.quantization
    zero_point = 0
    if quantization is not None and quantization.zeroPoint is not None:
        zero_point = int(np.asarray(quantization.zeroPoint).ravel()[0])
    name = tensor.name.decode()
    shape = _add_constant(
        model,
        subgraph,
        f"{name}/zero_shape",
        np.array(tensor.shape, dtype=np.int32),
        schema.TensorType.INT32,
        None,
    )
    value = _add_constant(
        model,
        subgraph,
        f"{name}/zero",
        np.array(zero_point, dtype=_NUMPY_TYPES[tensor.type]),
        tensor.type,
        quantization,
    )
    fill = _operator_index(model, schema.BuiltinOperator.FILL)
    model.operatorCodes[fill].version = max(
        model.operatorCodes[fill].version,
        _FILL_VERSIONS.get(tensor.type, 1),
    )
    operator = schema.OperatorT()
    operator.opcodeIndex = fill
    operator.inputs = np.array([shape, value], dtype=np.int32)
    operator.outputs = np.array([state], dtype=np.int32)
    operator.builtinOptionsType = schema.BuiltinOptions.FillOptions
    operator.builtinOptions = schema.FillOptionsT()
    return state, operator


def _finish(flatbuffer, signature_key):
    """Zeroes the fused LSTM states at every call; names the signature.

    Every fused LSTM op gets its own state tensors (the converter may share
    its zero initial state with other readers, which the op would then
    overwrite), written with zeros by a FILL op just before it.
    """
    model = flatbuffer_utils.convert_bytearray_to_object(flatbuffer)
    lstm = schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM
    for subgraph in model.subgraphs:
        operators = []
        for operator in subgraph.operators:
            code = model.operatorCodes[operator.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) == lstm:
                inputs = np.array(operator.inputs, dtype=np.int32)
                for i in _LSTM_STATE_INPUTS:
                    inputs[i], fill = _zeroed_state(model, subgraph, inputs[i])
                    operators.append(fill)
                operator.inputs = inputs
            operators.append(operator)
        subgraph.operators = operators
    for signature in model.signatureDefs:
        signature.signatureKey = signature_key.encode()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _write_atomic(path, data):
    path = os.fspath(path)
    fd, temp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.",
        suffix=".tmp",
        dir=os.path.dirname(os.path.abspath(path)),
    )
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def to_tflite(
    model,
    path=None,
    *,
    batch_size=1,
    sequence_length=None,
    quantization="none",
    representative_dataset=None,
    streaming=False,
):
    """Converts a slim Keras model to a LiteRT (TFLite) flatbuffer.

    Recurrent layers keep their fused TFLite form where one exists (LSTM:
    one `UNIDIRECTIONAL_SEQUENCE_LSTM` op, two for a bidirectional LSTM); the
    file holds builtin ops only. The module docstring describes the
    signatures, input and output names and types.

    Args:
        model: a built `keras.Sequential` or functional `keras.Model` of
            the layers in `SUPPORTED_LAYERS` (`Embedding` without
            `mask_zero`, `Bidirectional` with `merge_mode` "concat", "sum",
            "ave" or "mul"), and nested such models. Gated layers must
            first be removed with `keras_l0.shrink`. Not modified.
        path: optional file path; the file is written atomically.
        batch_size: the file's fixed batch size. Default 1.
        sequence_length: the file's fixed number of time steps. `None`
            (default) takes the model's, which must then be defined.
            `"variable"` leaves the time axis open. Not used with
            `streaming=True`, whose calls take one time step.
        quantization: `"none"` (default, float32), `"dynamic"` (int8
            weights, float activations), `"float16"` (float16 weights) or
            `"int8"` (int8 weights and activations, int16 LSTM cell states,
            float32 inputs and outputs).
        representative_dataset: with `quantization="int8"` only, and then
            required: the calibration inputs, an iterable (or a callable
            returning one) of input batches, each an array (one-input
            models), a list or tuple of arrays in `model.inputs` order, or a
            dict keyed by input name, with full sequences also for
            `streaming=True`. Batches are cut into `batch_size` rows.
            `"random"` calibrates on random valid inputs (standard normal
            features, uniform token ids), which only suits smoke tests.
        streaming: `False` (default): one call runs a whole sequence, from
            zero states. `True`: one call runs one time step, the recurrent
            states being explicit inputs and outputs (signature `"step"`).

    Returns:
        The flatbuffer, as `bytes`.

    Raises:
        ExportError: for an unsupported layer (named in the message), a
            missing or conflicting sequence length, an invalid argument, or
            a failed conversion.

    Example:

    >>> from keras_l0 import export
    >>> model = keras.Sequential([
    ...     keras.Input((35, 16)),
    ...     keras.layers.LSTM(32),
    ...     keras.layers.Dense(4),
    ... ])
    >>> flatbuffer = export.to_tflite(model, "model.tflite")
    >>> "UNIDIRECTIONAL_SEQUENCE_LSTM" in export.op_names(flatbuffer)
    True
    """
    batch_size = _check_count(batch_size, "batch_size")
    if quantization not in QUANTIZATIONS:
        raise ExportError(
            f"`quantization` must be one of {QUANTIZATIONS}, got "
            f"{quantization!r}."
        )
    if quantization != "int8" and representative_dataset is not None:
        raise ExportError(
            "`representative_dataset` is only used with quantization='int8'."
        )
    if quantization == "int8" and representative_dataset is None:
        raise ExportError(
            "quantization='int8' needs `representative_dataset` (input "
            f"batches like the real data), or '{RANDOM_DATASET}' for a "
            "smoke test."
        )
    specs = _input_specs(model, batch_size)
    if streaming:
        signature_specs = [spec.with_length(1) for spec in specs]
    else:
        length = _export_length(specs, sequence_length)
        specs = signature_specs = [spec.with_length(length) for spec in specs]
    builder = _TwinBuilder(batch_size, streaming)
    twin = builder.build(model, signature_specs)
    if streaming and not builder.state_inputs:
        raise ExportError(
            "streaming=True needs a recurrent layer; the model has none."
        )
    state_names = builder.state_names
    signature_specs = signature_specs + [
        _InputSpec(name, x.shape, "float32")
        for name, x in zip(state_names, builder.state_inputs)
    ]
    names = output_names(model) + state_names
    calibration = None
    if quantization == "int8":
        loops = op_names(_convert(twin, signature_specs, names, "none", None))
        if "WHILE" in loops:
            raise ExportError(
                "quantization='int8' cannot quantize the model's recurrent "
                "loops (GRU, SimpleRNN and LSTMs that do not fuse become "
                "WHILE loops, on which the TF 2.21 calibrator crashes); use "
                "'dynamic' or 'float16', or streaming=True."
            )

        def calibration():
            return _calibration(
                representative_dataset,
                specs,
                batch_size,
                twin if streaming else None,
                state_names,
            )

    flatbuffer = _convert(
        twin, signature_specs, names, quantization, calibration
    )
    flatbuffer = _finish(
        flatbuffer, STREAMING_SIGNATURE_KEY if streaming else SIGNATURE_KEY
    )
    if path is not None:
        _write_atomic(path, flatbuffer)
    return flatbuffer


def _flatbuffer_model(flatbuffer):
    flatbuffer = bytes(flatbuffer)
    if flatbuffer[4:8] != _TFLITE_IDENTIFIER:
        raise ExportError("Not a TFLite flatbuffer (no 'TFL3' identifier).")
    return schema.Model.GetRootAs(flatbuffer, 0)


def op_names(flatbuffer):
    """The ops of a TFLite file, one name per op, every subgraph in order.

    Builtin ops are named as in the TFLite schema
    (`"UNIDIRECTIONAL_SEQUENCE_LSTM"`, `"WHILE"`, `"FULLY_CONNECTED"`, ...);
    custom ops by their custom code. Flex (`SELECT_TF_OPS`) ops, which the
    stock LiteRT runtime lacks, are custom ops whose code starts with
    `"Flex"` (see `flex_ops`).

    Args:
        flatbuffer: the file's `bytes`.

    Returns:
        A list of op names.
    """
    model = _flatbuffer_model(flatbuffer)
    names = []
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            code = model.OperatorCodes(subgraph.Operators(o).OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if builtin == schema.BuiltinOperator.CUSTOM:
                names.append(code.CustomCode().decode())
            else:
                names.append(_OPERATOR_NAMES[builtin])
    return names


def flex_ops(flatbuffer):
    """The Flex (TensorFlow, `SELECT_TF_OPS`) ops of a TFLite file."""
    return [name for name in op_names(flatbuffer) if name.startswith("Flex")]


def _signature_runner(flatbuffer):
    _flatbuffer_model(flatbuffer)
    interpreter = Interpreter(model_content=bytes(flatbuffer))
    keys = list(interpreter.get_signature_list())
    if len(keys) != 1:
        raise ExportError(
            f"Expected a file with one signature, found {keys or 'none'}."
        )
    return keys[0], interpreter.get_signature_runner(keys[0])


def verify(
    flatbuffer,
    model,
    *,
    num_samples=4,
    seed=0,
    streaming=False,
    sequence_length=None,
):
    """Largest absolute difference between a TFLite file and its model.

    Runs `num_samples` random valid input batches (standard normal features,
    uniform token ids) through the Keras model and through LiteRT, one after
    the other on the same interpreter (so state leaking between calls would
    show). A streaming file is stepped through each sequence from zero
    states, feeding back its output states, and compared at every step for
    outputs with a time axis, at the last step for the others.

    Args:
        flatbuffer: the file's `bytes`, from `to_tflite(model, ...)`.
        model: the Keras model it was exported from.
        num_samples: number of input batches. Default 4.
        seed: seed of the random inputs.
        streaming: whether the file is a streaming (`"step"`) export.
        sequence_length: the number of time steps to check; by default the
            file's (full-sequence files with a fixed length), else the
            model's, else `DEFAULT_SEQUENCE_LENGTH`.

    Returns:
        The max abs difference over all outputs, samples and steps (float).
    """
    num_samples = _check_count(num_samples, "num_samples")
    stateful = [l.name for l in _layers(model) if getattr(l, "stateful", 0)]
    if stateful:
        raise ExportError(
            f"verify() needs a stateless model; {stateful} are stateful and "
            "would carry their Keras state from one sample to the next."
        )
    key, runner = _signature_runner(flatbuffer)
    expected_key = STREAMING_SIGNATURE_KEY if streaming else SIGNATURE_KEY
    if key != expected_key:
        raise ExportError(
            f"The file's signature is '{key}'; verify(streaming={streaming}) "
            f"expects '{expected_key}'."
        )
    details = runner.get_input_details()
    names = input_names(model)
    outputs = output_names(model)
    for kind, wanted, found in (
        ("inputs", names, details),
        ("outputs", outputs, runner.get_output_details()),
    ):
        missing = [name for name in wanted if name not in found]
        if missing:
            raise ExportError(
                f"The file lacks the model's {kind} {missing}; it has "
                f"{sorted(found)}."
            )
    batch_size = int(details[names[0]]["shape"][0])
    specs = _input_specs(model, batch_size)
    file_length = None
    if not streaming and specs[0].is_sequence:
        file_length = int(details[names[0]]["shape_signature"][1])
        file_length = None if file_length < 0 else file_length
    if sequence_length is not None:
        sequence_length = _check_count(sequence_length, "sequence_length")
        if file_length not in (None, sequence_length):
            raise ExportError(
                f"sequence_length={sequence_length} conflicts with the "
                f"file's fixed sequence length {file_length}."
            )
    length = (
        file_length
        or sequence_length
        or _model_sequence_length(specs)
        or DEFAULT_SEQUENCE_LENGTH
    )
    specs = [spec.with_length(length) for spec in specs]
    state_names = [name for name in details if name not in names]
    functional = _functional(model)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(num_samples):
        inputs = [spec.random(rng, length) for spec in specs]
        packed = keras.tree.pack_sequence_as(functional._inputs_struct, inputs)
        expected = [
            keras.ops.convert_to_numpy(y)
            for y in keras.tree.flatten(model(packed, training=False))
        ]
        if not streaming:
            got = runner(**dict(zip(names, inputs)))
            for name, y in zip(outputs, expected):
                worst = max(worst, _max_diff(name, got[name], y))
            continue
        states = {
            name: np.zeros(details[name]["shape"], np.float32)
            for name in state_names
        }
        for t in range(length):
            step = {
                name: x[:, t : t + 1] if spec.is_sequence else x
                for name, x, spec in zip(names, inputs, specs)
            }
            got = runner(**step, **states)
            states = {name: got[name] for name in state_names}
            for name, y in zip(outputs, expected):
                y = _step_of(y, got[name], t, length)
                if y is not None:
                    worst = max(worst, _max_diff(name, got[name], y))
    return worst


def _step_of(expected, got, t, length):
    """The part of a full-sequence output that step `t` should give."""
    if (
        expected.ndim >= 2
        and expected.ndim == got.ndim
        and expected.shape[1] == length
        and got.shape[1] == 1
    ):
        return expected[:, t : t + 1]
    return expected if t == length - 1 else None


def _max_diff(name, got, expected):
    if got.shape != expected.shape:
        raise ExportError(
            f"Output '{name}' has the shape {got.shape} in the file and "
            f"{expected.shape} in Keras."
        )
    if not got.size:
        return 0.0
    return float(np.max(np.abs(got.astype(np.float64) - expected)))


def benchmark(
    flatbuffers, *, runs=50, warmup=5, num_threads=1, sequence_length=None
):
    """Median latency of TFLite files, measured interleaved.

    Each file gets its own LiteRT interpreter with random inputs (standard
    normal floats, states included; token id 0). After `warmup` untimed
    rounds, `runs` rounds each invoke every file once, the order rotating
    from round to round, so that all files see the same machine conditions
    and their ratios are fair. Only `invoke()` is timed.

    Args:
        flatbuffers: dict `{name: flatbuffer bytes}`.
        runs: timed invocations per file. Default 50.
        warmup: untimed invocations per file first. Default 5.
        num_threads: LiteRT CPU threads. Default 1.
        sequence_length: length given to open time axes (files exported
            with `sequence_length="variable"`); required for those.

    Returns:
        dict `{name: median milliseconds per invocation}`.
    """
    runs = _check_count(runs, "runs")
    warmup = _check_count(warmup, "warmup", minimum=0)
    num_threads = _check_count(num_threads, "num_threads")
    if not flatbuffers:
        raise ExportError("`flatbuffers` is empty: nothing to time.")
    rng = np.random.default_rng(0)
    interpreters = {}
    for name, flatbuffer in flatbuffers.items():
        _flatbuffer_model(flatbuffer)
        interpreter = Interpreter(
            model_content=bytes(flatbuffer), num_threads=num_threads
        )
        for detail in interpreter.get_input_details():
            shape = list(detail["shape_signature"])
            if len(shape) >= 2 and shape[1] < 0:
                if sequence_length is None:
                    raise ExportError(
                        f"'{name}' has a variable sequence length; pass "
                        "`sequence_length`."
                    )
                shape[1] = _check_count(sequence_length, "sequence_length")
                interpreter.resize_tensor_input(detail["index"], shape)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            shape = detail["shape"]
            if np.issubdtype(detail["dtype"], np.floating):
                value = rng.standard_normal(shape).astype(detail["dtype"])
            else:
                value = np.zeros(shape, detail["dtype"])
            interpreter.set_tensor(detail["index"], value)
        interpreters[name] = interpreter
    names = list(interpreters)
    times = {name: [] for name in names}
    for round_ in range(warmup + runs):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            interpreter = interpreters[name]
            start = time.perf_counter()
            interpreter.invoke()
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                times[name].append(elapsed)
    return {name: float(np.median(times[name]) * 1e3) for name in names}
