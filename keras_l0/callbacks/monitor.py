"""`GateMonitor`: the state of the L0 gates in the epoch logs."""

import keras
from keras import ops

from keras_l0.callbacks.sizing import kept_neurons
from keras_l0.callbacks.sizing import named_gated_layers


def gate_statistics(model):
    """Per gated layer: active neurons, expected L0 and λ, as a flat dict.

    Returns:
        A dict with, for every gated layer name `n` (see
        `named_gated_layers`), the keys `"n/hidden_active"` and
        `"n/input_active"` (ints: neurons whose inference gate is non-zero),
        `"n/expected_l0"` (float, `cell.expected_l0()`, what λ multiplies)
        and `"n/l0_penalty"` (float, the current λ).
    """
    stats = {}
    for name, layer in named_gated_layers(model).items():
        inputs, units = kept_neurons(layer)
        stats[f"{name}/hidden_active"] = units
        stats[f"{name}/input_active"] = inputs
        stats[f"{name}/expected_l0"] = float(
            ops.convert_to_numpy(layer.cell.expected_l0())
        )
        stats[f"{name}/l0_penalty"] = float(
            ops.convert_to_numpy(layer.cell.l0_penalty)
        )
    return stats


class GateMonitor(keras.callbacks.Callback):
    """Records the state of the L0 gates in the epoch logs.

    At the end of every epoch, adds for every gated layer (the directions of
    a `Bidirectional` layer separately) the keys of `gate_statistics`:
    `"<layer>/hidden_active"`, `"<layer>/input_active"`,
    `"<layer>/expected_l0"` and `"<layer>/l0_penalty"`. The `History` of
    `fit` then holds them, and a `TensorBoard` or `CSVLogger` callback
    placed after this one in the list writes them.

    Args:
        verbose: 0 (default) for silence, 1 to print one line per epoch.

    Example:

    >>> history = model.fit(x, y, epochs=3, callbacks=[GateMonitor()])
    >>> history.history["gated_lstm/hidden_active"]
    [64, 51, 40]
    """

    def __init__(self, verbose=0):
        super().__init__()
        self.verbose = verbose

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        stats = gate_statistics(model)
        if logs is not None:
            logs.update(stats)
        if self.verbose:
            parts = [
                f"{name} {stats[f'{name}/hidden_active']}/{layer.cell.units} "
                f"units, {stats[f'{name}/input_active']}/"
                f"{layer.cell.input_dim} inputs, "
                f"λ={stats[f'{name}/l0_penalty']:.3g}"
                for name, layer in named_gated_layers(model).items()
            ]
            print(f"Epoch {epoch + 1} gates: " + "; ".join(parts))
