"""Callbacks that watch and steer the L0 gates during `fit`.

- `GateMonitor` writes, per gated layer, how many neurons the inference
  gates keep, the expected L0 and the current λ into the epoch logs, so that
  `History`, `TensorBoard` and `CSVLogger` record them.
- `L0Warmup` ramps every layer's λ up from 0 over the first epochs.
- `BudgetController` adapts λ during training so that the gated layers end
  at a chosen size: parameters, FLOPs per time step or neurons, counted as
  `keras_l0.shrink` will cut them.

A gated layer is named by its path in the model: its name, or
`"<wrapper>/<name>"` for a direction of a `Bidirectional` layer (e.g.
`"bidirectional/forward_gated_lstm"`), as in `keras_l0.summary`. The
callbacks only read and assign variables, so they work on every backend
and never retrace a compiled train step.
"""

import contextlib
import math
import warnings

import keras
import numpy as np
from keras import ops

from keras_l0 import hard_concrete
from keras_l0.layers.gating import DEFAULT_L0_PENALTY
from keras_l0.shrink import ShrinkError
from keras_l0.shrink import gated_layers
from keras_l0.summary import recurrent_cost
from keras_l0.summary import summary

METRICS = ("params", "flops", "neurons")

# `hard_concrete.eval_gate(log_alpha) > 0` exactly when `log_alpha` exceeds
# this: `sigmoid(log_alpha) * (ZETA - GAMMA) + GAMMA > 0`.
KEEP_THRESHOLD = math.log(-hard_concrete.GAMMA / hard_concrete.ZETA)


def named_gated_layers(model):
    """The gated recurrent layers of `model` that own at least one gate.

    Args:
        model: a built Keras model. Gated layers are found as
            `keras_l0.shrink.gated_layers` finds them: at the top level,
            both directions of a `Bidirectional` layer, nested models.

    Returns:
        A dict from layer name (`"<wrapper>/<name>"` inside a
        `Bidirectional` layer or a nested model) to layer, in model order.
    """
    prefix = model.name + "/"
    layers = {}
    for layer in gated_layers(model):
        if not layer.cell.has_gates:
            continue
        if not layer.built:
            raise ValueError(
                f"Layer '{layer.name}' is not built: call the model on data "
                "(or build it) before using keras_l0 callbacks."
            )
        path = layer.cell.l0_penalty.path.rsplit("/", 2)[0]
        layers[path.removeprefix(prefix)] = layer
    return layers


def _check_metric(metric):
    if metric not in METRICS:
        raise ValueError(
            f"`metric` must be one of {METRICS}. Received: metric={metric!r}"
        )


def kept_neurons(layer):
    """`(inputs kept, units kept)` by the inference gates of `layer`.

    A neuron is kept when its inference gate is non-zero, which is what
    `keras_l0.shrink` keeps. A side without gates counts in full. Inputs
    that an upstream layer removes are not subtracted here.
    """
    cell = layer.cell
    sizes = (cell.input_dim, cell.units)
    return tuple(
        size
        if gate is None
        else int(np.count_nonzero(ops.convert_to_numpy(gate)))
        for gate, size in zip(cell.gates(training=False), sizes)
    )


def layer_size(layer, inputs, units, metric="params"):
    """The size of gated `layer` with `inputs` input features and `units`.

    Args:
        layer: a gated recurrent layer.
        inputs: number of input features (may be fractional).
        units: number of hidden units (may be fractional).
        metric: `"params"`: weights of the kernel, recurrent kernel and
            bias; `"flops"`: `2 *` the multiply-adds of the kernel and the
            recurrent kernel for one time step of one example (as
            `keras_l0.summary` counts them); `"neurons"`: `units`, plus
            `inputs` if the layer has input gates.

    Returns:
        A float.
    """
    _check_metric(metric)
    cell = layer.cell
    if metric == "neurons":
        return float(units + (inputs if cell.input_gates else 0))
    params, flops = recurrent_cost(
        cell.num_blocks, cell.bias_rows, inputs, units
    )
    return float(params if metric == "params" else flops)


_GATES = ("input_log_alpha", "hidden_log_alpha")
_KEPT_COLUMNS = {"params": "params_kept", "flops": "flops_per_step_kept"}


class _Sizer:
    """Sizes of the gated layers of a model, now and for other gate values.

    `kept()` is what `keras_l0.shrink` keeps. For "params" and "flops" it
    comes from `keras_l0.summary` (on `structure` if given, with the
    trained gates), so that the input rows that an upstream layer's closed
    units remove do not count; where `shrink` cannot plan the model, each
    layer is counted with its own gates and a `UserWarning` says so.
    `count(log_alphas)` counts layer by layer with its own gates, for any
    gate parameters.
    """

    def __init__(self, model, metric, structure=None):
        _check_metric(metric)
        self.metric = metric
        self.layers = named_gated_layers(model)
        if not self.layers:
            raise ValueError(
                f"Model '{model.name}' has no gated layer with gates: there "
                "is no size to control."
            )
        self.dense = sum(
            layer_size(layer, layer.cell.input_dim, layer.cell.units, metric)
            for layer in self.layers.values()
        )
        self.twins = None if structure is None else self._twins(structure)
        self.structure = None
        if metric in _KEPT_COLUMNS:
            self.structure = model if structure is None else structure
            self._check_plannable()

    def _twins(self, structure):
        twins = named_gated_layers(structure)
        if set(twins) != set(self.layers) or any(
            twins[name].cell.input_dim != layer.cell.input_dim
            or twins[name].cell.units != layer.cell.units
            for name, layer in self.layers.items()
        ):
            raise ValueError(
                f"`model` '{structure.name}' must have the same gated layers "
                f"as the model being trained: {sorted(twins)} vs "
                f"{sorted(self.layers)}."
            )
        return twins

    def _check_plannable(self):
        try:
            listed = {row["name"] for row in self._rows()}
        except ShrinkError as e:
            reason = str(e)
        else:
            missing = sorted(set(self.layers) - listed)
            if not missing:
                return
            reason = f"keras_l0.summary does not list {missing}"
        name = self.structure.name
        self.structure = None
        warnings.warn(
            f"Counting each gated layer of '{name}' with its own gates only "
            f"({reason}): input rows that a closed unit upstream removes "
            "still count. Pass a functional model with the same layers as "
            "`model=` to count as shrink does.",
            UserWarning,
            stacklevel=4,
        )

    def _rows(self):
        with contextlib.ExitStack() as stack:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
            for name, twin in (self.twins or {}).items():
                cell = self.layers[name].cell
                trained = {
                    gate: getattr(cell, gate)
                    for gate in _GATES
                    if getattr(cell, gate) is not None
                }
                stack.enter_context(twin.cell.using_weights(trained))
            return summary(self.structure, print_fn=None)

    def log_alphas(self):
        """The gate parameters, `[(input, hidden), ...]` float64 arrays."""
        return [
            tuple(
                None
                if getattr(layer.cell, gate) is None
                else ops.convert_to_numpy(getattr(layer.cell, gate)).astype(
                    "float64"
                )
                for gate in _GATES
            )
            for layer in self.layers.values()
        ]

    def count(self, log_alphas):
        """Size if the gates had `log_alphas`, each layer on its own."""
        total = 0.0
        for layer, pair in zip(self.layers.values(), log_alphas):
            sizes = (layer.cell.input_dim, layer.cell.units)
            inputs, units = (
                size if la is None else np.count_nonzero(la > KEEP_THRESHOLD)
                for la, size in zip(pair, sizes)
            )
            total += layer_size(layer, inputs, units, self.metric)
        return total

    def kept(self):
        """The size that `keras_l0.shrink` keeps now."""
        if self.structure is None:
            return self.count(self.log_alphas())
        column = _KEPT_COLUMNS[self.metric]
        rows = self._rows()
        return float(
            sum(row[column] for row in rows if row["name"] in self.layers)
        )


def model_size(model, metric="params"):
    """`(kept, dense)` size of the gated layers of `model`.

    `kept` is what `keras_l0.shrink(model)` keeps of them, `dense` their
    full size; `layer_size` defines the metrics. For a model that `shrink`
    cannot plan, every layer is counted with its own gates, with a
    `UserWarning`.
    """
    sizer = _Sizer(model, metric)
    return sizer.kept(), sizer.dense


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


def _check_int(name, value, minimum):
    if not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}. "
            f"Received: {name}={value!r}"
        )


def _steps_per_epoch(callback):
    steps = (callback.params or {}).get("steps")
    if not steps:
        raise ValueError(
            f"{type(callback).__name__} needs the number of steps per "
            "epoch, which this `fit` call does not know: pass "
            "`steps_per_epoch` to `fit`."
        )
    return steps


class L0Warmup(keras.callbacks.Callback):
    """Ramps λ linearly from 0 to its target over the first epochs.

    Training first with a small penalty lets the weights learn before the
    gates are asked to close. λ is 0 until `start_epoch`, then grows
    linearly and reaches `target` at epoch `start_epoch + warmup_epochs`,
    after which it stays there. The callback assigns the layers'
    `l0_penalty` variables, so a compiled train step is not retraced.

    Args:
        target: float λ for every gated layer, or `None` (default) for
            each layer's own `l0_penalty` argument.
        warmup_epochs: int >= 0, epochs from λ = 0 to λ = `target`.
            Default 5.
        start_epoch: int >= 0, the epoch at which the ramp starts (λ is 0
            before it). Default 0.
        per_batch: bool, update λ before every batch (a smooth ramp)
            instead of once per epoch. Default `False`.

    Example:

    >>> warmup = L0Warmup(warmup_epochs=4)
    >>> model.fit(x, y, epochs=10, callbacks=[warmup])
    """

    def __init__(
        self, target=None, warmup_epochs=5, start_epoch=0, per_batch=False
    ):
        super().__init__()
        if target is not None and not (
            isinstance(target, (int, float, np.floating)) and target >= 0
        ):
            raise ValueError(
                f"`target` must be None or a number >= 0. Received: {target!r}"
            )
        _check_int("warmup_epochs", warmup_epochs, 0)
        _check_int("start_epoch", start_epoch, 0)
        self.target = target
        self.warmup_epochs = warmup_epochs
        self.start_epoch = start_epoch
        self.per_batch = bool(per_batch)
        self._epoch = 0

    def fraction(self, epoch):
        """The fraction of the target λ at (fractional) `epoch`."""
        if epoch < self.start_epoch:
            return 0.0
        if self.warmup_epochs == 0:
            return 1.0
        return min(1.0, (epoch - self.start_epoch) / self.warmup_epochs)

    def _assign(self, epoch):
        fraction = self.fraction(epoch)
        for layer in named_gated_layers(self.model).values():
            cell = layer.cell
            target = self.target
            if target is None:
                target = cell.initial_l0_penalty
            cell.l0_penalty.assign(fraction * target)

    def on_train_begin(self, logs=None):
        if self.per_batch:
            self._steps = _steps_per_epoch(self)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._assign(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.per_batch and batch > 0:
            self._assign(self._epoch + batch / self._steps)


class BudgetController(keras.callbacks.Callback):
    """Adapts λ during training so that the gated layers end at a budget.

    The budget is a size of the gated layers after `keras_l0.shrink`:
    parameters, FLOPs per time step, or neurons (see `layer_size`). A
    neuron is kept when its inference gate is non-zero; for `"params"` and
    `"flops"` the layers are counted as `keras_l0.summary` counts the slim
    model, so input rows that a closed unit upstream removes do not count.

    The controller follows a schedule: the dense size until `start_epoch`,
    then a cubic descent (fast first, slow at the end, as in
    Zhu & Gupta, 2017) over `warmup_epochs` epochs to `margin` (2.5%) above
    `target`, which it then holds. Every `update_every` batches it compares
    the kept size now, and a forecast of it `horizon` updates ahead (every
    gate parameter drifting on at its recent pace), with the schedule, and
    multiplies every layer's λ by a common factor: slowly up while the
    network is larger than scheduled, fast down when it is, or is heading
    to be, smaller. Closing is not symmetric to opening: a neuron that
    closed seldom comes back, and the gates on their way to close keep
    closing for a while after λ drops, hence the forecast and the margin.
    λ is every layer's `l0_penalty` argument
    (`keras_l0.layers.gating.DEFAULT_L0_PENALTY` where that is 0) times one
    common factor, which starts from the layers' current λ (so a resumed
    run goes on where it stopped); the ratios between layers stay as
    configured.

    Do not combine it with `L0Warmup`, which also sets λ. Leave the
    schedule some epochs at the target before training ends, and before
    the learning rate has decayed much: gates move at the optimizer's pace.

    Args:
        target: the budget: a number > 1 is an absolute size, a number in
            (0, 1] a fraction of the dense size of the gated layers.
        metric: `"params"` (default), `"flops"` or `"neurons"`.
        warmup_epochs: int >= 1, epochs from the starting size to the
            target. Default `None`: half of the epochs of `fit` (at
            least 1).
        start_epoch: int >= 0, the epoch at which the schedule starts to
            move. Default 0.
        update_every: int >= 1, batches between two updates of λ. Default
            `None`: 25 updates per epoch.
        horizon: int >= 0, how many updates ahead the forecast looks
            (0: no forecast). Default 10.
        rise_gain: float > 0, per update, the step of log λ per unit of
            log excess size while the network is larger than scheduled.
            Default `None`: 0.05, for gates trained with the network from
            the start. Gates added to a trained network
            (`keras_l0.gate_model`) reopen as soon as λ drops, since the
            data loss pulls them open: use a faster rise (e.g. 0.25) and
            no forecast (`horizon=0`) there.
        model: optional functional model to count sizes on, for when the
            model being trained is not one that `keras_l0.shrink` can plan
            (e.g. a subclassed model that trains copies of its layers). Its
            gated layers must have the same names and sizes; the gate
            values are read from the model being trained. Without it, such
            a model is counted layer by layer with each layer's own gates,
            with a `UserWarning`.
        verbose: 0 (default) for silence, 1 to print one line per epoch.

    Attributes:
        dense_size: the dense size of the gated layers.
        target_size: the budget as an absolute size.
        size: the kept size at the last update.
        l0_scale: the current factor on every layer's `l0_penalty`
            argument.

    At the end of every epoch, the logs get `"budget/size"`,
    `"budget/scheduled"` and `"budget/l0_scale"`.

    Example:

    >>> controller = BudgetController(0.25, metric="params")
    >>> model.fit(x, y, epochs=12, callbacks=[controller])
    >>> keras_l0.callbacks.model_size(model)[0] / controller.target_size
    1.01
    """

    # The control law's constants, per update of λ. Tuned on a two-layer
    # LSTM language model on PTB (SGD, decaying learning rate; landed within
    # 2.1% of 15%, 30% and 50% of the parameters) and on the synthetic task.
    updates_per_epoch = 25
    rise_gain = 0.05
    fall_gain = 1.0
    proportional_gain = 2.0
    max_log_scale = math.log(1e6)
    velocity_smoothing = 0.7
    margin = 0.025
    rise_floor = 0.5

    def __init__(
        self,
        target,
        metric="params",
        warmup_epochs=None,
        start_epoch=0,
        update_every=None,
        horizon=10,
        rise_gain=None,
        model=None,
        verbose=0,
    ):
        super().__init__()
        if not isinstance(target, (int, float, np.number)) or not target > 0:
            raise ValueError(
                f"`target` must be a number > 0. Received: target={target!r}"
            )
        _check_metric(metric)
        if warmup_epochs is not None:
            _check_int("warmup_epochs", warmup_epochs, 1)
        _check_int("start_epoch", start_epoch, 0)
        if update_every is not None:
            _check_int("update_every", update_every, 1)
        _check_int("horizon", horizon, 0)
        if rise_gain is not None:
            if not isinstance(
                rise_gain, (int, float, np.number)
            ) or not rise_gain > 0:
                raise ValueError(
                    "`rise_gain` must be a number > 0. Received: "
                    f"rise_gain={rise_gain!r}"
                )
            self.rise_gain = float(rise_gain)
        self.target = float(target)
        self.metric = metric
        self.warmup_epochs = warmup_epochs
        self.start_epoch = start_epoch
        self.update_every = update_every
        self.horizon = horizon
        self.structure = model
        self.verbose = verbose

    def on_train_begin(self, logs=None):
        self._sizer = _Sizer(self.model, self.metric, self.structure)
        self._steps = _steps_per_epoch(self)
        self._update_every = self.update_every or max(
            1, round(self._steps / self.updates_per_epoch)
        )
        self._warmup = self.warmup_epochs or max(1, self.params["epochs"] // 2)
        self.dense_size = self._sizer.dense
        self.target_size = (
            self.target * self.dense_size if self.target <= 1 else self.target
        )
        if self.target_size > self.dense_size:
            raise ValueError(
                f"`target` {self.target:g} exceeds the dense {self.metric} "
                f"of the gated layers, {self.dense_size:g}."
            )
        self.size = self._sizer.kept()
        layers = self._sizer.layers
        self._reference = {
            name: layer.cell.initial_l0_penalty or DEFAULT_L0_PENALTY
            for name, layer in layers.items()
        }
        # Start from the current λ (where set), so that a resumed run goes
        # on where it stopped.
        ratios = [
            float(ops.convert_to_numpy(layer.cell.l0_penalty))
            / self._reference[name]
            for name, layer in layers.items()
        ]
        logs_of_set = [math.log(r) for r in ratios if r > 0]
        self._integral = float(np.mean(logs_of_set)) if logs_of_set else 0.0
        self._previous = None
        self._velocity = None
        self._epoch = 0
        self._set_scale(self._integral)

    def scheduled_size(self, epoch):
        """The size the schedule asks for at (fractional) `epoch`."""
        remaining = 1.0 - (epoch - self.start_epoch) / self._warmup
        remaining = min(1.0, max(0.0, remaining))
        aim = self.target_size * (1.0 + self.margin)
        return aim + (self.dense_size - aim) * remaining**3

    def _set_scale(self, log_scale):
        self.l0_scale = math.exp(log_scale)
        for name, layer in self._sizer.layers.items():
            layer.cell.l0_penalty.assign(self._reference[name] * self.l0_scale)

    def _forecast(self, log_alphas):
        """Kept size `horizon` updates ahead if every gate keeps drifting
        at its recent pace (a running mean of its steps between updates)."""
        flat = np.concatenate(
            [la for pair in log_alphas for la in pair if la is not None]
        )
        if self._previous is not None:
            step = flat - self._previous
            self._velocity = (
                step
                if self._velocity is None
                else self.velocity_smoothing * self._velocity
                + (1 - self.velocity_smoothing) * step
            )
        self._previous = flat
        if self._velocity is None or not self.horizon:
            return self.size
        ahead = flat + self.horizon * self._velocity
        future, start = [], 0
        for pair in log_alphas:
            future_pair = []
            for la in pair:
                if la is None:
                    future_pair.append(None)
                else:
                    future_pair.append(ahead[start : start + la.size])
                    start += la.size
            future.append(future_pair)
        now = self._sizer.count(log_alphas)
        if now == 0:
            return self.size
        return self.size * self._sizer.count(future) / now

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._next_update = self._update_every

    def on_train_batch_end(self, batch, logs=None):
        # With `steps_per_execution` > 1, Keras reports every few batches.
        if batch + 1 < self._next_update:
            return
        self._next_update = batch + 1 + self._update_every
        self.model  # Under JAX, reading it syncs the trained variables.
        epoch = self._epoch + (batch + 1) / self._steps
        log_alphas = self._sizer.log_alphas()
        self.size = self._sizer.kept()
        forecast = self._forecast(log_alphas)
        ahead = epoch + self.horizon * self._update_every / self._steps
        error = min(
            math.log(max(self.size, 1.0) / self.scheduled_size(epoch)),
            math.log(max(forecast, 1.0) / self.scheduled_size(ahead)),
        )
        error = min(1.0, max(-1.0, error))
        if error > 0:
            # Once the schedule holds, a small excess must not stall.
            if epoch >= self.start_epoch + self._warmup:
                error = max(error, self.rise_floor)
            change = self.rise_gain * error
        else:
            change = self.fall_gain * error
        self._integral = min(
            self.max_log_scale,
            max(-self.max_log_scale, self._integral + change),
        )
        self._set_scale(self._integral + self.proportional_gain * error)

    def on_epoch_end(self, epoch, logs=None):
        self.model  # Under JAX, reading it syncs the trained variables.
        self.size = self._sizer.kept()
        scheduled = self.scheduled_size(epoch + 1)
        if logs is not None:
            logs["budget/size"] = self.size
            logs["budget/scheduled"] = scheduled
            logs["budget/l0_scale"] = self.l0_scale
        if self.verbose:
            print(
                f"Epoch {epoch + 1} budget: {self.metric} {self.size:,.0f} "
                f"(scheduled {scheduled:,.0f}, target "
                f"{self.target_size:,.0f}), λ x {self.l0_scale:.3g}"
            )
