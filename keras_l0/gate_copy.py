"""Gated copies of trained plain models.

`gate_model` turns chosen plain `LSTM`/`GRU`/`SimpleRNN` layers of a trained
model into gated layers with the same weights and trainable gates, for
pruning it; `fixed_gate_model` gives them fixed 0/1 gates, for pruning
baselines that choose the neurons themselves. The input model is never
modified.
"""

import keras
import numpy as np

from keras_l0 import structure

_LAYERS = keras.layers
_GATE_ARGUMENTS = ("l0_penalty", "penalty_form", "initial_keep_probability")

# A fixed gate: eval_gate(+20) == 1 and eval_gate(-20) == 0 exactly, and so
# is every training sample (|logit(u)| <= 13.9 for the sampler's u).
FIXED_LOG_ALPHA = 20.0


def gate_model(model, hidden_gates, input_gates=(), **gate_kwargs):
    """Copies `model` with trainable L0 gates on chosen recurrent layers.

    For pruning a model that was trained without gates: every plain `LSTM`,
    `GRU` or `SimpleRNN` named in `hidden_gates` or `input_gates` becomes
    the gated layer (`GatedLSTM`, ...) with the same weights and fresh gate
    parameters, gating its hidden units, its input features or both. Train
    the result with the L0 penalty (e.g. under
    `keras_l0.callbacks.BudgetController`), then `shrink` it.

    Args:
        model: a Sequential or functional Keras model.
        hidden_gates: names of the layers whose hidden units get gates. A
            layer inside a `Bidirectional` wrapper is named
            `"<wrapper name>/<layer name>"`, e.g.
            `"bidirectional/forward_lstm"`.
        input_gates: names of the layers whose input features get gates.
        **gate_kwargs: further arguments of the gated layers:
            `l0_penalty`, `penalty_form`, `initial_keep_probability`
            (the layers' default, 0.9999, starts every inference gate at
            exactly 1, so the copy computes what `model` computes until it
            trains).

    Returns:
        A new Keras model of the same kind; `model` is not modified.

    Example:

    >>> gated = gate_model(model, ["lstm"], l0_penalty=1e-4)
    >>> gated.compile(optimizer="adam", loss="mse")
    >>> gated.fit(x, y, epochs=5)
    >>> slim = keras_l0.shrink(gated)
    """
    unknown = sorted(set(gate_kwargs) - set(_GATE_ARGUMENTS))
    if unknown:
        raise ValueError(
            f"Unknown gate arguments: {unknown}. Expected some of "
            f"{list(_GATE_ARGUMENTS)}"
        )
    if isinstance(hidden_gates, str) or isinstance(input_gates, str):
        raise ValueError(
            "`hidden_gates` and `input_gates` must be sequences of layer "
            f"names. Received: hidden_gates={hidden_gates!r}, "
            f"input_gates={input_gates!r}"
        )
    if not hidden_gates and not input_gates:
        raise ValueError(
            "Name at least one layer in `hidden_gates` or `input_gates`."
        )
    new_model, _ = _gated_copy(
        model, set(hidden_gates), set(input_gates), gate_kwargs
    )
    return new_model


def fixed_gate_model(model, keep_units, keep_inputs=None):
    """Copies `model` with fixed 0/1 gates on chosen recurrent layers.

    For pruning baselines that choose the neurons themselves (e.g. by weight
    magnitude): every plain `LSTM`, `GRU` or `SimpleRNN` named in
    `keep_units` or `keep_inputs` becomes the gated layer with the same
    weights, whose gates are exactly 1 for the kept neurons and exactly 0 for
    the others (in training as well as at inference), with `l0_penalty=0`.
    `shrink` of the result is the slim model.

    Args:
        model: a Sequential or functional Keras model.
        keep_units: dict from layer name to the indices of the hidden units
            to keep. A layer inside a `Bidirectional` wrapper is named
            `"<wrapper name>/<layer name>"`, e.g.
            `"bidirectional/forward_lstm"`.
        keep_inputs: optional dict, the same for the input features.

    Returns:
        A new Keras model of the same kind; `model` is not modified.

    Example:

    >>> gated = fixed_gate_model(model, {"lstm": [0, 3, 5]})
    >>> slim = keras_l0.shrink(gated)
    """
    keep_units = {k: _indices(v, k) for k, v in keep_units.items()}
    keep_inputs = {k: _indices(v, k) for k, v in (keep_inputs or {}).items()}
    new_model, new_by_key = _gated_copy(
        model, set(keep_units), set(keep_inputs), dict(l0_penalty=0.0)
    )
    for key, new in new_by_key.items():
        for keep, log_alpha in (
            (keep_units.get(key), getattr(new.cell, "hidden_log_alpha", None)),
            (keep_inputs.get(key), getattr(new.cell, "input_log_alpha", None)),
        ):
            if keep is None:
                continue
            size = log_alpha.shape[0]
            if keep.size and (keep.min() < 0 or keep.max() >= size):
                raise ValueError(
                    f"Indices for layer '{key}' must lie in [0, {size}). "
                    f"Received: {keep.tolist()}"
                )
            value = np.full((size,), -FIXED_LOG_ALPHA, "float32")
            value[keep] = FIXED_LOG_ALPHA
            log_alpha.assign(value)
    return new_model


def _gated_copy(model, hidden, inputs, gate_config):
    """Clones `model`, the plain recurrent layers named in `hidden` or
    `inputs` replaced by gated ones with their weights and `gate_config`.

    Returns:
        The new model and a dict from layer name to its new gated layer.
    """
    known = dict(_recurrent_layers(model))
    chosen = hidden | inputs
    for key in sorted(chosen):
        if key not in known:
            raise ValueError(
                f"No recurrent layer named '{key}' in model '{model.name}'. "
                f"Recurrent layers: {sorted(known)}"
            )
        if type(known[key]) not in structure.PLAIN_RECURRENT:
            raise ValueError(
                f"Layer '{key}' is a {type(known[key]).__name__}; only plain "
                "LSTM, GRU and SimpleRNN layers can be given gates."
            )

    def gated(key, rnn):
        config = rnn.get_config()
        config.update(
            input_gates=key in inputs, hidden_gates=key in hidden, **gate_config
        )
        return structure.gated_class(type(rnn)).from_config(config)

    def clone(layer):
        if isinstance(layer, _LAYERS.Bidirectional):
            prefix = layer.name + "/"
            directions = (layer.forward_layer, layer.backward_layer)
            if not any(prefix + d.name in chosen for d in directions):
                return _clone(layer)
            config = layer.get_config()
            for field, d in zip(("layer", "backward_layer"), directions):
                key = prefix + d.name
                new = gated(key, d) if key in chosen else _clone(d)
                config[field] = keras.saving.serialize_keras_object(new)
            return _LAYERS.Bidirectional.from_config(config)
        if layer.name in chosen:
            return gated(layer.name, layer)
        return _clone(layer)

    new_model = keras.models.clone_model(model, clone_function=clone)
    new_by_key = dict(_recurrent_layers(new_model))
    for old in model.layers:
        if isinstance(old, _LAYERS.InputLayer):
            continue
        new = new_model.get_layer(old.name)
        if isinstance(old, _LAYERS.Bidirectional):
            pairs = zip(
                (old.forward_layer, old.backward_layer),
                (new.forward_layer, new.backward_layer),
            )
        else:
            pairs = [(old, new)]
        for old_sub, new_sub in pairs:
            if type(new_sub) is type(old_sub):
                new_sub.set_weights(old_sub.get_weights())
    for key in chosen:
        old, new = known[key], new_by_key[key]
        for name in ("kernel", "recurrent_kernel", "bias"):
            if getattr(old.cell, name, None) is not None:
                getattr(new.cell, name).assign(getattr(old.cell, name))
    return new_model, {key: new_by_key[key] for key in chosen}


def _indices(values, key):
    values = np.asarray(values)
    if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
        raise ValueError(
            f"Indices for layer '{key}' must be a 1-D sequence of integers. "
            f"Received: {values!r}"
        )
    return values.astype("int64")


def _recurrent_layers(model):
    """Yields `(key, layer)` for every LSTM/GRU/SimpleRNN layer, gated or
    not; the key of a `Bidirectional` side is `"<wrapper>/<name>"`."""
    for layer in model.layers:
        if isinstance(layer, _LAYERS.Bidirectional):
            for sub in (layer.forward_layer, layer.backward_layer):
                if structure.plain_class(sub) is not None:
                    yield f"{layer.name}/{sub.name}", sub
        elif structure.plain_class(layer) is not None:
            yield layer.name, layer



def _clone(op):
    return op.__class__.from_config(op.get_config())
