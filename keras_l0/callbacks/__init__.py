"""Callbacks that watch and steer the L0 gates during `fit`.

- `GateMonitor` writes, per gated layer, how many neurons the inference
  gates keep, the expected L0 and the current λ into the epoch logs, so that
  `History`, `TensorBoard` and `CSVLogger` record them.
- `L0Warmup` ramps every layer's λ up from 0 over the first epochs.
- `BudgetController` adapts λ, and the pace at which the optimizer moves
  the gates, so that the gated layers end at a chosen size: parameters,
  FLOPs per time step or neurons, counted as `keras_l0.shrink` will cut
  them. On a new model it first rescales the gated layers' weights, and
  those of the `Dense` layers that read them, to the scale of the width the
  target keeps (`keras_l0.callbacks.width_init`).

A gated layer is named by its path in the model: its name, or
`"<wrapper>/<name>"` for a direction of a `Bidirectional` layer (e.g.
`"bidirectional/forward_gated_lstm"`), as in `keras_l0.summary`. The
callbacks only read and assign variables, so they work on every backend
and never retrace a compiled train step.
"""

from keras_l0.callbacks.budget import BudgetController
from keras_l0.callbacks.monitor import GateMonitor
from keras_l0.callbacks.monitor import gate_statistics
from keras_l0.callbacks.sizing import KEEP_THRESHOLD
from keras_l0.callbacks.sizing import METRICS
from keras_l0.callbacks.sizing import kept_neurons
from keras_l0.callbacks.sizing import layer_size
from keras_l0.callbacks.sizing import model_size
from keras_l0.callbacks.sizing import named_gated_layers
from keras_l0.callbacks.warmup import L0Warmup

__all__ = [
    "BudgetController",
    "GateMonitor",
    "KEEP_THRESHOLD",
    "L0Warmup",
    "METRICS",
    "gate_statistics",
    "kept_neurons",
    "layer_size",
    "model_size",
    "named_gated_layers",
]
