"""Units, parameters and FLOPs of recurrent layers, now and after `shrink`.

FLOPs are multiply-adds times 2 of the matrix products that run for one time
step of one example: `2 * G * (inputs * units + units * units)` for a
recurrent layer with `G` gate blocks (LSTM 4, GRU 3, SimpleRNN 1), and
`2 * inputs * units` for a `Dense` layer (also inside `TimeDistributed`),
counted once per step even where it runs once per sequence. Element-wise
work, biases and embedding look-ups are not counted, nor are other layers.
"""

import keras

from keras_l0 import structure
from keras_l0.shrink import ShrinkPlan
from keras_l0.structure import recurrent_cost

COLUMNS = ("Layer", "Type", "Units", "Inputs", "Params", "FLOPs/step")


def _recurrent_dims(layer):
    cell = layer.cell
    return (
        structure.num_blocks(cell),
        structure.bias_rows(cell),
        int(cell.kernel.shape[0]),
        cell.units,
    )


def _layer_flops(layer):
    if structure.plain_class(layer) is not None:
        return recurrent_cost(*_recurrent_dims(layer))[1]
    if isinstance(layer, keras.layers.Bidirectional):
        return _layer_flops(layer.forward_layer) + _layer_flops(
            layer.backward_layer
        )
    if isinstance(layer, keras.layers.TimeDistributed):
        return _layer_flops(layer.layer)
    if isinstance(layer, keras.layers.Dense):
        return 2 * int(layer.kernel.shape[0]) * layer.units
    if isinstance(layer, keras.Model):
        return flops_per_step(layer)
    return 0


def flops_per_step(model):
    """FLOPs per time step of `model` (batch 1), as the module defines them.

    Args:
        model: a Keras model.

    Returns:
        An int.
    """
    return sum(_layer_flops(layer) for layer in model.layers)


def _slim_cost(slim):
    """`(params, flops_per_step)` of a layer that `shrink` plans."""
    if slim.kind == "recurrent":
        return recurrent_cost(
            slim.num_blocks, slim.bias_rows, slim.input_width, slim.units_kept
        )
    if slim.kind == "dense":
        weights = slim.input_width * slim.units
        return weights + slim.units * slim.use_bias, 2 * weights
    if slim.kind == "embedding":
        return slim.input_dim * slim.units, 0
    if slim.kind == "sized":
        return slim.params, slim.flops
    return slim.layer.count_params(), _layer_flops(slim.layer)


def count_params_after_shrink(model):
    """The number of parameters of `keras_l0.shrink(model)`, without
    building it.

    Args:
        model: a built Sequential or functional Keras model.

    Returns:
        An int; `model.count_params()` for a model without gated layers.

    Raises:
        keras_l0.ShrinkError: where `shrink` would.
    """
    plan = ShrinkPlan(model)
    return sum(_slim_cost(slim)[0] for slim in plan.slim_layers)


def _row(rnn):
    layer = rnn.layer
    flops = recurrent_cost(*_recurrent_dims(layer))[1]
    params_kept, flops_kept = _slim_cost(rnn)
    return {
        "name": rnn.key,
        "type": type(layer).__name__,
        "units": rnn.units,
        "units_kept": rnn.units_kept,
        "inputs": rnn.inputs,
        "inputs_kept": rnn.inputs_kept,
        "params": layer.count_params(),
        "params_kept": params_kept,
        "flops_per_step": flops,
        "flops_per_step_kept": flops_kept,
    }


def _table(cells):
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    return [
        "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ).rstrip()
        for row in cells
    ]


def summary(model, print_fn=print):
    """Reports what `keras_l0.shrink` keeps of every recurrent layer.

    One row per recurrent layer, gated or plain (a `Bidirectional` layer
    has one per direction, named `"<wrapper>/<direction>"`), then a total
    for the whole model. `units_kept` and `params_kept` are those of the
    slim layer (a layer whose units are all closed keeps one);
    `inputs_kept` counts the input features the slim layer still reads.
    `params` is the layer's `count_params()`, gate parameters included.

    Args:
        model: a built Sequential or functional Keras model.
        print_fn: called with each line of an aligned table; `None` prints
            nothing.

    Returns:
        A list of dicts, one per recurrent layer, with the keys `"name"`,
        `"type"`, `"units"`, `"units_kept"`, `"inputs"`, `"inputs_kept"`,
        `"params"`, `"params_kept"`, `"flops_per_step"`,
        `"flops_per_step_kept"`.

    Raises:
        keras_l0.ShrinkError: where `shrink` would (other than for a model
            without gated layers).

    Example:

    A `GatedLSTM(32)` on 10 raw features with 12 units and 5 inputs open,
    then `Dense(1)` (a raw model input keeps its width, so the slim kernel
    keeps 10 rows):

    >>> rows = keras_l0.summary(model)
    Layer       Type       Units  Inputs          Params       FLOPs/step
    gated_lstm  GatedLSTM  12/32    5/10  5,547 -> 1,104  10,752 -> 2,112
    total                                 5,580 -> 1,117  10,816 -> 2,136
    """
    plan = ShrinkPlan(model)
    rows = [_row(rnn) for rnn in plan.recurrent]
    if print_fn is None:
        return rows
    costs = [_slim_cost(slim) for slim in plan.slim_layers]
    cells = [COLUMNS]
    for row in rows:
        cells.append(
            (
                row["name"],
                row["type"],
                f"{row['units_kept']}/{row['units']}",
                f"{row['inputs_kept']}/{row['inputs']}",
                f"{row['params']:,} -> {row['params_kept']:,}",
                f"{row['flops_per_step']:,} -> {row['flops_per_step_kept']:,}",
            )
        )
    cells.append(
        (
            "total",
            "",
            "",
            "",
            f"{model.count_params():,} -> {sum(c[0] for c in costs):,}",
            f"{flops_per_step(model):,} -> {sum(c[1] for c in costs):,}",
        )
    )
    for line in _table(cells):
        print_fn(line)
    return rows
