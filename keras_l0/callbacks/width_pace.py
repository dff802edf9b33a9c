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

A larger step helps only where the steps are small. Under SGD at learning
rate 1 one step moves a `GatedLSTM(64)`'s kernels by 2-5% of their norm on
the tasks of `benchmarks/budget_landing.py` (Adam, AdamW, RMSprop at their
defaults and SGD with momentum: 0.1-0.9%), and a larger step costs accuracy
(`LSTM(28)` on `load_digits`, SGD at 1 / 2 / 4: 0.948 / 0.937 / 0.871). So
the factor is also capped by how far one step moves each layer's kernels
before any unit closes: a scaled step moves them by at most `max_motion`
(2%) of their norm.
"""

import numpy as np
from keras import ops

from keras_l0.callbacks.sizing import KEEP_THRESHOLD
from keras_l0.callbacks.sizing import numpy_log_alphas
from keras_l0.callbacks.width_init import _Graph


def kept_units(cell):
    """The number of a gated cell's units whose inference gate is open,
    or `None` without hidden gates."""
    if not cell.hidden_gates:
        return None
    return int(np.count_nonzero(numpy_log_alphas(cell)[1] > KEEP_THRESHOLD))


def _kernels(cell):
    """A gated cell's kernel and recurrent kernel as it computes with them,
    flattened into one vector."""
    scale = float(ops.convert_to_numpy(cell.step_scale))
    parts = [ops.convert_to_numpy(cell.kernel).ravel(),
             ops.convert_to_numpy(cell.recurrent_kernel).ravel()]  # fmt: skip
    return scale * np.concatenate(parts)


class WidthPace:
    """Scales the steps on weights that read closing units.

    Args:
        model: the model being trained (functional, for the `Dense`
            readers; others get the gated layers' own factor only).
        layers: its gated layers, as `named_gated_layers` gives them.
        max_factor: float >= 1, the largest factor applied.
        max_motion: float > 0, the largest share of its kernels' norm
            that a scaled step may move a layer by, as measured on one
            step at each of the first `motion_samples` updates (the
            median; taken before any unit closes when the schedule starts
            later).

    Call `update()` after the gates move, `measure(step)` at the start of
    every batch, and `finish()` at the end of `fit`, which leaves every
    `step_scale` at 1.
    """

    motion_samples = 5

    def __init__(self, model, layers, max_factor=4.0, max_motion=0.02):
        self.layers = dict(layers)
        self.max_factor = float(max_factor)
        self.max_motion = float(max_motion)
        readers = {}
        for dense, owners in _Graph(model, self.layers).readers():
            readers.setdefault(id(dense), (dense, set()))[1].update(owners)
        self.readers = list(readers.values())
        self._previous = {}
        self.factors = {name: 1.0 for name in self.layers}
        self.motions = {name: [] for name in self.layers}
        self._snapshot = None

    def motion(self, name):
        """The median share of its kernels' norm that one unscaled step
        moved layer `name` by, or `None` before any was measured."""
        seen = self.motions[name]
        return float(np.median(seen)) if seen else None

    def _factor(self, names, counts):
        units = kept = 0
        cap = self.max_factor
        for name in names:
            cell = self.layers[name].cell
            count = counts[name]
            if count is None:
                continue
            units += cell.units
            kept += count
            motion = self.motion(name)
            if motion is not None and motion > 0:
                cap = min(cap, max(1.0, self.max_motion / motion))
        if not units:
            return 1.0
        return min(cap, units / max(kept, 1))

    def measuring(self):
        """Whether a step's motion is still to be measured."""
        return self._snapshot is not None or any(
            len(seen) < self.motion_samples for seen in self.motions.values()
        )

    def measure(self, step):
        """At the start of a batch: the motion since the snapshot that the
        last `update()` took, per step, over the layer's `step_scale`."""
        if self._snapshot is None:
            return
        taken, weights = self._snapshot
        if step <= taken:
            return
        self._snapshot = None
        for name, before in weights.items():
            cell = self.layers[name].cell
            scale = float(ops.convert_to_numpy(cell.step_scale))
            norm = float(np.linalg.norm(before))
            if norm > 0:
                moved = float(np.linalg.norm(_kernels(cell) - before))
                self.motions[name].append(moved / norm / (step - taken) / scale)

    def update(self, step=None, kept=None):
        """Sets each gated layer's `step_scale`, and stretches each reader
        kernel's motion since the last update, by the layer's current
        ratio of dense to kept units (capped); at `step` (the steps done),
        while motions are still to be measured, takes the snapshot that
        `measure` compares with. `kept`: optional `{layer name: kept
        units}` where the caller has counted them (read from the gates
        otherwise)."""
        kept = kept or {}
        counts = {
            name: kept[name] if name in kept else kept_units(layer.cell)
            for name, layer in self.layers.items()
        }
        for name, layer in self.layers.items():
            factor = self._factor([name], counts)
            if factor != self.factors[name]:
                layer.cell.set_step_scale(factor)
                self.factors[name] = factor
        for dense, owners in self.readers:
            factor = self._factor(owners, counts)
            kernel = dense.kernel
            now = ops.convert_to_numpy(kernel)
            before = self._previous.get(id(kernel))
            if before is not None and factor != 1.0:
                now = before + factor * (now - before)
                kernel.assign(now)
            self._previous[id(kernel)] = now
        if step is not None and self.measuring():
            self._snapshot = (step, {
                name: _kernels(layer.cell)
                for name, layer in self.layers.items()
                if len(self.motions[name]) < self.motion_samples
            })  # fmt: skip

    def finish(self):
        """Every `step_scale` back to 1 (the weights unchanged)."""
        for name, layer in self.layers.items():
            layer.cell.set_step_scale(1.0)
            self.factors[name] = 1.0
        self._previous = {}
        self._snapshot = None
