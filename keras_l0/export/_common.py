"""What the export modules share: errors, names, input specs, masks."""

import re

import keras
import numpy as np

from keras_l0.export import _tf_compat

VARIABLE_LENGTH = "variable"
# Sequence length of random inputs (verification, benchmark, random
# calibration) when neither the model nor the file fixes one.
DEFAULT_SEQUENCE_LENGTH = 8


class ExportError(ValueError):
    """The model, or an argument, cannot be exported to TFLite."""


def clean_name(name):
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def unique_names(names):
    seen = {}
    unique = []
    for name in map(clean_name, names):
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}_{count}")
    return unique


def functional(model):
    """The functional graph of `model`; `ExportError` if it has none."""
    graph = _tf_compat.functional_of(model)
    if graph is not None:
        return graph
    if isinstance(model, keras.Sequential):
        raise ExportError(
            f"Sequential model '{model.name}' has no input shape; start it "
            "with `keras.Input(shape)`."
        )
    raise ExportError(
        "Expected a Sequential or functional keras.Model, got "
        f"{type(model).__name__}."
    )


def input_names(model):
    """The exported file's input names, in `model.inputs` order."""
    return unique_names(
        _tf_compat.producer(x).name for x in functional(model).inputs
    )


def output_names(model):
    """The exported file's output names, in `model.outputs` order."""
    return unique_names(
        _tf_compat.producer(x).name for x in functional(model).outputs
    )


def layers(model):
    """The layers of `model` and of its nested models."""
    for layer in functional(model).layers:
        if isinstance(layer, keras.Model):
            yield from layers(layer)
        else:
            yield layer


def _consumers(graph):
    """`{id(tensor): [(operation, argument position)]}` over `graph`."""
    consumers = {}
    for node in _tf_compat.nodes(graph):
        if node.operation is None or node.is_input:
            continue
        for j, x in enumerate(node.input_tensors):
            consumers.setdefault(id(x), []).append((node.operation, j))
    return consumers


def _input_facts(graph):
    """Per model input: (vocabulary size or None, padding value or None).

    The vocabulary is that of the Embeddings reading the input; the padding
    value is 0 for an `Embedding(mask_zero=True)` reading it, the mask
    value of a `Masking` reading it.
    """
    consumers = _consumers(graph)
    facts = []
    for x in graph.inputs:
        vocabulary, padding = None, None
        for operation, j in consumers.get(id(x), ()):
            if isinstance(operation, keras.Model):
                inner = functional(operation)
                if j < len(inner.inputs):
                    inner_vocabulary, inner_padding = _input_facts(inner)[j]
                else:
                    continue
            elif type(operation) is keras.layers.Embedding and j == 0:
                inner_vocabulary = operation.input_dim
                inner_padding = 0 if operation.mask_zero else None
            elif type(operation) is keras.layers.Masking and j == 0:
                inner_vocabulary = None
                inner_padding = float(operation.mask_value)
            else:
                continue
            if inner_vocabulary is not None:
                vocabulary = min(vocabulary or inner_vocabulary, inner_vocabulary)
            if padding is None:
                padding = inner_padding
        facts.append((vocabulary, padding))
    return facts


def is_masked(model):
    """Whether the model computes a mask (`Masking`, `mask_zero=True`)."""
    return any(
        type(layer) is keras.layers.Masking
        or (type(layer) is keras.layers.Embedding and layer.mask_zero)
        for layer in layers(model)
    )


class InputSpec:
    """One input of the exported file: name, shape, dtype, token range and
    padding value (masked models)."""

    def __init__(self, name, shape, dtype, vocabulary_size=None, padding=None):
        self.name = name
        self.shape = tuple(shape)
        self.dtype = dtype
        self.vocabulary_size = vocabulary_size
        self.padding = padding

    @property
    def is_sequence(self):
        return len(self.shape) >= 2

    def with_length(self, length):
        if not self.is_sequence:
            return self
        shape = (self.shape[0], length, *self.shape[2:])
        return InputSpec(
            self.name, shape, self.dtype, self.vocabulary_size, self.padding
        )

    def random(self, rng, length):
        """A random valid input without padding; `length` fills an open
        time axis. Token ids avoid the padding id 0 of a masked input."""
        spec = self if self.shape[1:2] != (None,) else self.with_length(length)
        if None in spec.shape:
            raise ExportError(
                f"Input '{self.name}' has an open dimension besides time: "
                f"{self.shape}."
            )
        if self.dtype == "int32":
            low = 1 if self.padding == 0 else 0
            high = max(self.vocabulary_size or 1, low + 1)
            return rng.integers(low, high, size=spec.shape, dtype=np.int32)
        return rng.standard_normal(spec.shape).astype(np.float32)

    def pad(self, x, count, before):
        """`x` with `count` padding steps before (or after) it."""
        if not self.is_sequence or self.padding is None or not count:
            return x
        shape = (x.shape[0], count, *x.shape[2:])
        pad = np.full(shape, self.padding, dtype=x.dtype)
        return np.concatenate([pad, x] if before else [x, pad], axis=1)


def input_specs(model, batch_size):
    """The model's inputs with `batch_size`, time axes as in the model."""
    graph = functional(model)
    facts = _input_facts(graph)
    return [
        InputSpec(
            name,
            (batch_size, *x.shape[1:]),
            "int32"
            if "int" in str(x.dtype) or vocabulary is not None
            else "float32",
            vocabulary,
            padding,
        )
        for x, name, (vocabulary, padding) in zip(
            graph.inputs, input_names(model), facts
        )
    ]


def model_sequence_length(specs):
    lengths = {s.shape[1] for s in specs if s.is_sequence}
    if len(lengths) > 1:
        raise ExportError(
            "The model's inputs have different sequence lengths: "
            f"{sorted(lengths, key=str)}."
        )
    return lengths.pop() if lengths else None


def check_count(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ExportError(f"`{name}` must be an integer, got {value!r}.")
    if value < minimum:
        raise ExportError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)
