"""Facts about the structure of Keras recurrent layers, in one place.

Keras stores the gate blocks of an LSTM (i, f, c, o), a GRU (z, r, h) or a
simple RNN (one block) side by side along the last axis of the kernel, the
recurrent kernel and the bias, each `units` wide; a GRU with
`reset_after=True` has two bias rows. A hidden unit owns one column in each
block and one row of the recurrent kernel. The layers, `shrink`, `summary`
and the callbacks read these facts from here.
"""

import keras
import numpy as np

_LAYERS = keras.layers

PLAIN_RECURRENT = (_LAYERS.LSTM, _LAYERS.GRU, _LAYERS.SimpleRNN)

_BLOCKS = {_LAYERS.LSTMCell: 4, _LAYERS.GRUCell: 3, _LAYERS.SimpleRNNCell: 1}


def plain_class(layer):
    """The standard Keras class (`LSTM`, `GRU`, `SimpleRNN`) of a plain or
    gated recurrent layer; `None` for any other layer, subclasses of the
    Keras classes included (their computation is not known to be the same).
    """
    from keras_l0.layers import GATED_TO_PLAIN

    cls = type(layer)
    if cls in PLAIN_RECURRENT:
        return cls
    return GATED_TO_PLAIN.get(cls)


def gated_class(plain):
    """The gated class of a standard Keras recurrent class."""
    from keras_l0.layers import GATED_TO_PLAIN

    return {v: k for k, v in GATED_TO_PLAIN.items()}[plain]


def num_blocks(cell):
    """Gate blocks of a recurrent cell: 4 (LSTM), 3 (GRU), 1 (SimpleRNN)."""
    for cls, blocks in _BLOCKS.items():
        if isinstance(cell, cls):
            return blocks
    raise TypeError(f"Not a known recurrent cell: {type(cell).__name__}")


def bias_rows(cell):
    """Rows of the bias: 0 without bias, 2 for a GRU with
    `reset_after=True`, else 1."""
    if not cell.use_bias:
        return 0
    return 2 if getattr(cell, "reset_after", False) else 1


def block_columns(units, blocks, kept_units):
    """Column indices of `kept_units` in every gate block of a fused matrix.

    Args:
        units: int, the layer's number of units.
        blocks: int, the number of gate blocks (`num_blocks`).
        kept_units: 1-D integer array, the units to keep.

    Returns:
        A 1-D integer numpy array of column indices, block by block.
    """
    kept_units = np.asarray(kept_units, dtype="int64")
    return np.concatenate([kept_units + b * units for b in range(blocks)])


def recurrent_cost(blocks, rows, inputs, units):
    """`(params, flops_per_step)` of a recurrent layer's weights.

    FLOPs are 2 x the multiply-adds of the kernel and recurrent kernel for
    one time step of one example.

    Args:
        blocks: 4 for LSTM, 3 for GRU, 1 for SimpleRNN.
        rows: bias rows, see `bias_rows`.
        inputs: number of input features.
        units: number of units.
    """
    params = blocks * (inputs * units + units * units + rows * units)
    flops = 2 * blocks * (inputs * units + units * units)
    return params, flops


def trained_weights(cell):
    """`{name: array}`: a recurrent cell's `kernel`, `recurrent_kernel` and
    `bias` (if used) as it computes with them (a gated cell's
    `step_scale` applied)."""
    if hasattr(cell, "trained_weights"):
        return cell.trained_weights()
    names = ("kernel", "recurrent_kernel") + (("bias",) if cell.use_bias else ())
    return {name: getattr(cell, name) for name in names}
