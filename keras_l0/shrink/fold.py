"""Numbers and layer copies: gates, per-feature activations, rebuilding."""

import keras
import numpy as np
from keras import ops

from keras_l0.layers.gating import GatedCellMixin
from keras_l0.shrink.errors import ShrinkError

_A = keras.activations

# Activations known to compute every feature from that feature alone. Only
# these let `shrink` remove the units of a layer that applies them: an
# activation that is not listed (softmax, sparsemax, glu, a custom function)
# may mix features, so its layer keeps every unit.
PER_FEATURE_ACTIVATIONS = frozenset(
    getattr(_A, name)
    for name in (
        "celu", "elu", "exponential", "gelu", "hard_shrink", "hard_sigmoid",
        "hard_silu", "hard_swish", "hard_tanh", "leaky_relu", "linear",
        "log_sigmoid", "mish", "relu", "relu6", "selu", "sigmoid", "silu",
        "soft_shrink", "softplus", "softsign", "sparse_plus", "sparse_sigmoid",
        "squareplus", "swish", "tanh", "tanh_shrink", "threshold",
    )
    if hasattr(_A, name)
)
GATE_CONFIG_KEYS = (
    "input_gates",
    "hidden_gates",
    "l0_penalty",
    "penalty_form",
    "initial_keep_probability",
)


def numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def per_feature(activation):
    """Whether `activation` is known to act on every feature alone."""
    return activation is None or activation in PER_FEATURE_ACTIVATIONS


def apply(fn, values):
    """`fn` applied to the finite entries of a 1-D float array (NaN kept)."""
    out = np.full(values.shape, np.nan, "float32")
    finite = np.isfinite(values)
    if finite.any():
        x = ops.convert_to_tensor(values[finite][None].astype("float32"))
        out[finite] = numpy(fn(x))[0]
    return out


def eval_gates(layer, key=None):
    """`(z_in, z_h)` of a recurrent layer at inference as float32 numpy
    arrays; ones where the layer has no gate."""
    cell = layer.cell
    key = key or layer.name
    z_in = np.ones(int(cell.kernel.shape[0]), "float32")
    z_h = np.ones(cell.units, "float32")
    if not isinstance(cell, GatedCellMixin):
        return z_in, z_h
    for what, log_alpha in (
        ("input", cell.input_log_alpha),
        ("hidden", cell.hidden_log_alpha),
    ):
        if log_alpha is not None and np.isnan(numpy(log_alpha)).any():
            raise ShrinkError(
                f"Layer '{key}' has NaN in its {what} gate parameters "
                "(log_alpha): its gates are undefined."
            )
    gates = cell.gates(training=False)
    return tuple(
        d if g is None else numpy(g).astype("float32")
        for g, d in zip(gates, (z_in, z_h))
    )


def live_config(layer, drop=()):
    """`layer.get_config()` with every serialised callable, initializer,
    regularizer or constraint replaced by the layer's own object, so that
    `from_config` never has to deserialise a Python function."""
    config = {k: v for k, v in layer.get_config().items() if k not in drop}
    holders = [layer, getattr(layer, "cell", None)]
    for key, value in config.items():
        if not isinstance(value, dict) or key in ("dtype", "layer"):
            continue
        for holder in holders:
            live = getattr(holder, key, None) if holder is not None else None
            if live is not None and not isinstance(live, (dict, str)):
                config[key] = live
                break
    return config


def rebuild(layer, cls=None, drop=(), **changes):
    """A new layer like `layer` (of class `cls`, default its own) with the
    config entries in `changes`; a `ShrinkError` naming it if Keras cannot
    construct it."""
    cls = cls or type(layer)
    try:
        config = live_config(layer, drop)
        config.update(changes)
        return cls.from_config(config)
    except ShrinkError:
        raise
    except Exception as error:
        raise ShrinkError(
            f"Cannot shrink: layer '{layer.name}' ({type(layer).__name__}) "
            f"must be rebuilt with fewer features, and Keras cannot rebuild "
            f"it from its config: {type(error).__name__}: {error}"
        ) from error


def bias_fold(kernel_rows, fill, weight):
    """`sum_k fill[k] * weight[k] * kernel_rows[k]`: what removed constant
    features add to a layer's pre-activation (0 where fill is 0)."""
    use = np.isfinite(fill) & (fill != 0) & (weight != 0)
    if not use.any():
        return None
    coef = (fill[use] * weight[use]).astype("float64")
    return np.tensordot(coef, kernel_rows[use].astype("float64"), axes=1)
