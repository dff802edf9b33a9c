"""A narrowing network kept learning at the dense network's pace.

At one learning rate a narrow layer learns more slowly than a wide one: each
unit it reads moves by about one step, and it reads fewer of them. On
`load_digits` with Adam at 1e-3, `LSTM(32)` needs about twice the steps of
`LSTM(64)` to reach the same accuracy, and `LSTM(32)` at 2e-3 follows
`LSTM(64)` at 1e-3 step for step (`benchmarks/budget_init_scale.py --switch
width_pace` shows the effect on pruned models). As a budget closes units, `WidthPace` scales each
step on the weights that read the closing units by the ratio of dense to
kept units, so the kept network goes on learning at the pace the dense one
had, with the user's optimizer and learning rate.

A gated layer's kernel, recurrent kernel and bias get the factor through the
cell's `step_scale` (exact at every step, any optimizer); a `Dense` that
reads gated units is not ours to reparametrise, so its kernel's motion since
the last update is stretched by the factor at each update.
"""

import math

import numpy as np
from keras import ops

from keras_l0 import hard_concrete
from keras_l0.callbacks.sizing import numpy_log_alphas
from keras_l0.callbacks.width_init import _Graph

# The inference gate is 0 exactly where sigmoid(log α) <= -γ / (ζ - γ).
_OPEN_ABOVE = math.log(-hard_concrete.GAMMA / hard_concrete.ZETA)


def kept_units(cell):
    """The number of a gated cell's units whose inference gate is open,
    or `None` without hidden gates."""
    if not cell.hidden_gates:
        return None
    return int(np.count_nonzero(numpy_log_alphas(cell)[1] > _OPEN_ABOVE))


class WidthPace:
    """Scales the steps on weights that read closing units.

    Args:
        model: the model being trained (functional, for the `Dense`
            readers; others get the gated layers' own factor only).
        layers: its gated layers, as `named_gated_layers` gives them.
        max_factor: float >= 1, the largest factor applied.

    Call `update()` after the gates move and `finish()` at the end of
    `fit`, which leaves every `step_scale` at 1.
    """

    def __init__(self, model, layers, max_factor=4.0):
        self.layers = dict(layers)
        self.max_factor = float(max_factor)
        readers = {}
        for dense, owners in _Graph(model, self.layers).readers():
            readers.setdefault(id(dense), (dense, set()))[1].update(owners)
        self.readers = list(readers.values())
        self._previous = {}
        self.factors = {name: 1.0 for name in self.layers}

    def _factor(self, names):
        units = kept = 0
        for name in names:
            cell = self.layers[name].cell
            count = kept_units(cell)
            if count is None:
                continue
            units += cell.units
            kept += count
        if not units:
            return 1.0
        return min(self.max_factor, units / max(kept, 1))

    def update(self):
        """Sets each gated layer's `step_scale`, and stretches each reader
        kernel's motion since the last update, by the layer's current
        ratio of dense to kept units."""
        for name, layer in self.layers.items():
            factor = self._factor([name])
            if factor != self.factors[name]:
                layer.cell.set_step_scale(factor)
                self.factors[name] = factor
        for dense, owners in self.readers:
            factor = self._factor(owners)
            kernel = dense.kernel
            now = ops.convert_to_numpy(kernel)
            before = self._previous.get(id(kernel))
            if before is not None and factor != 1.0:
                now = before + factor * (now - before)
                kernel.assign(now)
            self._previous[id(kernel)] = now

    def finish(self):
        """Every `step_scale` back to 1 (the weights unchanged)."""
        for name, layer in self.layers.items():
            layer.cell.set_step_scale(1.0)
            self.factors[name] = 1.0
        self._previous = {}
