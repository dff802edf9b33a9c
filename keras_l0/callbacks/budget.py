"""`BudgetController`: λ and the gates' pace steered to land on a size."""

import math
import time
import warnings

import keras
import numpy as np
from keras import ops

from keras_l0.callbacks.lambda_control import LambdaControl
from keras_l0.callbacks.shift import ShiftControl
from keras_l0.callbacks.shift import ShiftCounter
from keras_l0.callbacks.sizing import _check_metric
from keras_l0.callbacks.sizing import _Sizer
from keras_l0.callbacks.warmup import _check_int
from keras_l0.callbacks.warmup import _steps_per_epoch
from keras_l0.callbacks.width_init import scale_to_kept_width
from keras_l0.callbacks.width_pace import WidthPace
from keras_l0.layers.gating import DEFAULT_L0_PENALTY


def _positive(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.number))
        or not value > 0
        or not math.isfinite(value)
    ):
        raise ValueError(
            f"`{name}` must be a finite number > 0. Received: {name}={value!r}"
        )
    return float(value)


CONTROLS = ("shift", "lambda")


def _lower_open_gates(cell, ceiling):
    """Moves a cell's gates above `ceiling` down as one group (order and
    gaps kept) until the lowest of them is at `ceiling`."""
    for variable in (cell.input_log_alpha, cell.hidden_log_alpha):
        if variable is None:
            continue
        values = ops.convert_to_numpy(variable).copy()
        high = values > ceiling
        if high.any():
            values[high] -= values[high].min() - ceiling
            variable.assign(values)


class BudgetController(ShiftControl, LambdaControl, keras.callbacks.Callback):
    """Adapts λ and the gates' pace so that the gated layers end at a budget.

    The budget is a size of the gated layers after `keras_l0.shrink`:
    parameters, FLOPs per time step, or neurons (see
    `keras_l0.callbacks.layer_size`). A neuron is kept when its inference
    gate is non-zero; for `"params"` and `"flops"` the layers are counted as
    `keras_l0.summary` counts the slim model, so input rows that a closed
    unit upstream removes do not count.

    Schedule. The dense size until `start_epoch`, then a cubic descent
    (fast first, slow at the end, as in Zhu & Gupta, 2017) over
    `warmup_epochs` epochs to `margin` (2.5%) above `target`, which it then
    holds until `fit` ends. The controller knows how many steps `fit` has
    (epochs x steps per epoch), so the descent always fits inside them.

    λ. Every `update_every` batches it compares the kept size now, and a
    forecast of it `horizon` updates ahead (every log α drifting on at its
    recent pace), with the schedule, and multiplies every layer's λ by a
    common factor: slowly up while the network is larger than scheduled,
    fast down when it is, or is heading to be, smaller. λ is every layer's
    `l0_penalty` argument (`DEFAULT_L0_PENALTY` where that is 0) times that
    factor, which starts from the layers' current λ, so a resumed run goes
    on where it stopped.

    Pace. How far one optimizer step moves log α depends on the optimizer
    and its learning rate (Adam at 1e-3: about 1e-3, far too slow to close a
    gate in a few hundred steps; SGD with momentum at a large λ: all gates
    at once). With `pace="auto"` (default) the controller measures how fast
    the gates move and sets each layer's `gate_scale` k (log α = k θ, θ the
    trainable variable; see `GatedCellMixin.set_gate_scale`) so that a gate
    can cross from open to closed in a third of the descent, whatever the
    optimizer, its learning rate or the data-set size. Under
    `control="shift"` every k is
    1 again once the schedule holds (the last 30% of `fit`), so closed gates
    stay closed between updates; under `"lambda"` at the end of `fit`. The
    variables then hold log α again. It warns once (a
    `UserWarning`) when the steps left cannot close enough gates to reach
    the target.

    Width pace. At one learning rate a narrow layer learns more slowly than
    a wide one (on `load_digits`, Adam at 1e-3, `LSTM(32)` needs twice the
    steps of `LSTM(64)`; at 2e-3 it keeps pace). With `width_pace`, as
    units close, each step on the weights that read them (the gated
    layer's kernel, recurrent kernel and bias, through the cell's
    `step_scale`, and the kernel of a `Dense` that reads its units) is
    scaled by the ratio of dense to kept units, at most `max_step_factor`
    (4): the kept network learns at the dense network's pace with the
    user's optimizer and learning rate (`keras_l0.callbacks.width_pace`).
    Where one step already moves a layer's kernels by a large share of
    their norm (SGD at learning rate 1: 2-5%; Adam, AdamW, RMSprop and
    SGD with momentum at their defaults: 0.1-0.9%), a larger step costs
    accuracy, so a scaled step moves them by at most `max_step_motion`
    (2%), as measured on single steps at the first updates. At the end
    of `fit` every `step_scale` is 1 again.

    Start. The layers' default gates (keep probability 0.9999) train with
    almost no noise, so an unpruned gated model learns as the plain layer
    does; but there neither the data nor λ tells one gate from another. At
    the start of `fit` the controller moves the gates above log α 3.0
    (keep probability 0.99) down, as one group, to 3.0, where a fifth of
    the training samples fall below 1 and the gradients rank the neurons.
    Under `control="shift"`, until the descent starts, every update lifts
    the counted gates as one group so that none is below 3.0: no gate
    closes before the schedule asks.

    Do not combine it with `L0Warmup`, which also sets λ.

    Args:
        target: the budget: a number > 1 is an absolute size, a number in
            (0, 1] a fraction of the dense size of the gated layers.
        metric: `"params"` (default), `"flops"` or `"neurons"`.
        warmup_epochs: number > 0 of epochs (fractions allowed) from the
            starting size to the target. Default `None`: under
            `control="shift"` until 70% of the epochs of `fit` (the last
            30% hold the target: the kept network trains at its final
            width); under `"lambda"` half of the epochs after
            `start_epoch`.
        start_epoch: number >= 0 of epochs (fractions allowed) at which
            the schedule starts to move. Default `None`: after a tenth of
            the epochs of `fit` (the data gradients rank the neurons
            before any closes).
        update_every: int >= 1, batches between two updates. Default
            `None`: under `control="shift"` 100 updates over `fit`, but at
            least 25 batches apart (unless that leaves fewer than 15);
            under `"lambda"` 25 per epoch; at most one per batch. Updates
            fall on fixed batches: the same seed gives the same model
            whatever the machine's load.
        horizon: int >= 0, how many updates ahead the forecast looks
            (0: no forecast). Default `None`: as many steps as a gate at
            the chosen pace needs to travel half way to closed (10 updates
            with `pace=None`).
        rise_gain: float > 0, per update, the step of log λ per unit of
            log excess size while the network is larger than scheduled.
            Default `None`: 0.05 with `pace=None`; with a pace, such that λ
            can sweep `log_range` (12) in the descent, whatever its number
            of updates (λ falls twice as fast). Gates added to a trained network
            (`keras_l0.gate_model`) reopen as soon as λ drops: a faster
            rise (0.25) and `horizon=0` suit them.
        pace: `"auto"` (default), a number > 0 (log α per optimizer step
            that an open gate on its way to close should travel), or `None`
            to leave the gates at the optimizer's own pace.
        model: optional functional model to count sizes on, for when the
            model being trained is not one that `keras_l0.shrink` can plan
            (e.g. a subclassed model that trains copies of its layers). Its
            gated layers must have the same names and sizes; the gate
            values are read from the model being trained. Without it, such
            a model is counted layer by layer with its own gates, with a
            `UserWarning`.
        control: `"shift"` (default): every update shifts all counted
            log α by one common amount so that the size counted as
            `shrink` cuts it is the one nearest to the schedule (the
            optimizer, the data and λ only rank the neurons; at every
            update closed gates are lowered to log α <= -4.25 and kept ones
            raised to >= 3.75, each group as one, in its order, so kept
            neurons train with gates of 1, not attenuated by the shift); it
            lands on the target whatever the optimizer and its learning
            rate. `"lambda"`: the round-1
            feedback on λ and the pace (for runs tuned with it, e.g. PTB).
        open_log_alpha: number > 0, shift control: the log α below which
            no kept gate is left (kept gates are raised to it, not lowered).
            Default `None`: 3.75, where a kept gate's training sample is
            below 1 in about one batch of ten. A lower floor, with gates
            that start near it (`initial_keep_probability`), keeps
            hard-concrete noise on the kept neurons: a regulariser for
            models that overfit (PTB small without dropout, from its
            trained dense model at 30%, gates started at keep probability
            0.77 with 1.2: test perplexity 110.2 against 113.1); on small
            tasks that do not overfit it costs accuracy.
        width_init: bool. `True` (default): at the start of `fit`, if the
            gated layers still hold the weights their initialisers drew (a
            new model, not trained, loaded or copied from a trained one),
            their kernels and the kernels of the `Dense` layers that read
            them are rescaled to the variance that Keras's width-dependent
            initialisers (Glorot, He, LeCun, orthogonal) give the width the
            target keeps (`keras_l0.callbacks.width_init`). A wide layer's
            weights are drawn smaller than a narrow one's; without this the
            kept neurons start as small as in the dense layer and, in a
            short run, learn less than a fresh layer of the kept size (on
            `load_digits` at 25% and 500 steps it gains 0.4 to 10 points
            of accuracy, depending on the optimizer).
        width_pace: `"auto"` (default), `True` or `False`: whether to
            scale the steps on the weights that read closing units (see
            Width pace). `"auto"`: under `control="shift"`, for a new
            model (as `width_init` decides it); a trained model pruned
            with `keras_l0.gate_model` keeps the user's steps. On
            `load_digits` at 25% and 500 steps it gains 4.6 to 8.4 points
            of accuracy with Adam, AdamW, RMSprop and SGD with momentum,
            none with SGD at learning rate 1 (`benchmarks/
            budget_init_scale.py --switch width_pace`); on the generated
            task of `benchmarks/budget_landing.py` it costs SGD at 1 about
            4 points and SGD with momentum 1.
        verbose: 0 (default) for silence, 1 to print one line per epoch.

    Attributes:
        dense_size: the dense size of the gated layers.
        target_size: the budget as an absolute size.
        size: the kept size at the last update.
        l0_scale: the current factor on every layer's `l0_penalty`
            argument.
        gate_pace: the pace (log α per step) aimed at, or `None`.
        rescaled: `{variable path: factor}` that `width_init` applied at
            the start of the last `fit` (empty if none).
        seconds: time spent inside the controller's hooks in the last
            `fit`.

    At the end of every epoch, the logs get `"budget/size"`,
    `"budget/scheduled"`, `"budget/l0_scale"` and `"budget/gate_scale"`
    (the mean k).

    Example:

    >>> model.compile("adam", "sparse_categorical_crossentropy")
    >>> controller = BudgetController(0.25)
    >>> model.fit(x, y, epochs=20, callbacks=[controller])
    >>> keras_l0.callbacks.model_size(model)[0] / controller.target_size
    1.01
    """

    # Gates start `fit` at most here (keep probability 0.99): higher, the
    # training gate is almost always 1, the data gradient and λ's
    # (sigmoid'(log α + 1.6)) almost 0, and the gates cannot be ranked.
    ranking_log_alpha = 3.0
    # Control constants, per update. Tuned on the generated task and on
    # `load_digits` (benchmarks/budget_landing.py) and a PTB language model.
    updates_per_epoch = 25
    rise_gain = 0.05
    fall_gain = 1.0
    log_range = 12.0
    start_fraction = 0.1
    proportional_gain = 2.0
    max_log_scale = math.log(1e6)
    velocity_smoothing = 0.7
    margin = 0.025
    rise_floor = 0.5
    # log α an open gate travels to close, and how many times over the
    # descent the auto pace lets it travel that.
    travel = 4.0
    crossings = 3.0
    max_pace = 0.2
    scale_bounds = (1e-3, 1e4)
    max_scale_step = 1.5
    # Shift control: updates over the whole of `fit` (at most; at least
    # `min_update_gap` steps apart, unless that leaves fewer than
    # `min_updates`), the share of it held at the target, and where closed
    # and kept gates are put.
    shift_updates = 100
    min_update_gap = 25
    min_updates = 15
    hold_fraction = 0.3
    max_step_factor = 4.0
    max_step_motion = 0.02
    closed_log_alpha = -4.25
    open_log_alpha = 3.75
    max_gap_log_alpha = 1.0

    def __init__(
        self,
        target,
        metric="params",
        warmup_epochs=None,
        start_epoch=None,
        update_every=None,
        horizon=None,
        rise_gain=None,
        pace="auto",
        model=None,
        control="shift",
        open_log_alpha=None,
        width_init=True,
        width_pace="auto",
        verbose=0,
    ):
        super().__init__()
        self.target = _positive("target", target)
        _check_metric(metric)
        self.warmup_epochs = _positive(
            "warmup_epochs", warmup_epochs, allow_none=True
        )
        if start_epoch is not None and not (
            isinstance(start_epoch, (int, float, np.number))
            and not isinstance(start_epoch, bool)
            and 0 <= start_epoch < math.inf
        ):
            raise ValueError(
                "`start_epoch` must be None or a number >= 0. Received: "
                f"start_epoch={start_epoch!r}"
            )
        if update_every is not None:
            _check_int("update_every", update_every, 1)
        if horizon is not None:
            _check_int("horizon", horizon, 0)
        self._rise_gain = _positive("rise_gain", rise_gain, allow_none=True)
        if self._rise_gain is not None:
            self.rise_gain = self._rise_gain
        if pace != "auto":
            pace = _positive("pace", pace, allow_none=True)
        if control not in CONTROLS:
            raise ValueError(
                f"`control` must be one of {CONTROLS}. Received: "
                f"control={control!r}"
            )
        if open_log_alpha is not None:
            if control != "shift":
                raise ValueError(
                    "`open_log_alpha` needs control='shift'. Received: "
                    f"control={control!r}"
                )
            self.open_log_alpha = _positive("open_log_alpha", open_log_alpha)
        self.control = control
        self.metric = metric
        self.start_epoch = start_epoch
        self.update_every = update_every
        self.horizon = horizon
        self.pace = pace
        self.structure = model
        self.width_init = bool(width_init)
        if width_pace not in ("auto", True, False):
            raise ValueError(
                "`width_pace` must be 'auto', True or False. Received: "
                f"width_pace={width_pace!r}"
            )
        self.width_pace = width_pace
        self.verbose = verbose

    # -- set up -------------------------------------------------------------

    def _on_train_begin(self, logs=None):
        self._sizer = _Sizer(self.model, self.metric, self.structure)
        self._steps = _steps_per_epoch(self)
        self._epochs = int(self.params.get("epochs") or 1)
        shift = self.control == "shift"
        total = self._steps * self._epochs
        self._update_every = self.update_every or max(
            1,
            max(
                round(total / self.shift_updates),
                min(self.min_update_gap, total // self.min_updates),
            )
            if shift
            else round(self._steps / self.updates_per_epoch),
        )
        self._start = self.start_epoch
        if self._start is None:
            self._start = self._epochs * self.start_fraction
        self._warmup = self.warmup_epochs or max(
            1.0 / self._steps,
            (1 - self.hold_fraction) * self._epochs - self._start
            if shift
            else (self._epochs - self._start) / 2,
        )
        self._margin = 0.0 if shift else self.margin
        self.dense_size = self._sizer.dense
        self.target_size = (
            self.target * self.dense_size if self.target <= 1 else self.target
        )
        if self.target_size > self.dense_size:
            raise ValueError(
                f"`target` {self.target:g} exceeds the dense {self.metric} "
                f"of the gated layers, {self.dense_size:g}."
            )
        layers = self._sizer.layers
        new = all(layer.cell.holds_initial_weights() for layer in layers.values())
        pace = self.width_pace
        if pace == "auto":
            pace = shift and new
        self._width_pace = None
        if pace:
            self._width_pace = WidthPace(
                self.model, layers, self.max_step_factor, self.max_step_motion
            )
            self._width_pace.finish()
        self.rescaled = {}
        if self.width_init:
            self.rescaled = scale_to_kept_width(
                self.model, layers, self.target_size, self.metric
            )
        for layer in layers.values():
            if hasattr(layer.cell, "gate_scale"):
                layer.cell.set_gate_scale(1.0)
                _lower_open_gates(layer.cell, self.ranking_log_alpha)
        self.size = self._sizer.kept()
        self._counter = ShiftCounter(self._sizer) if shift else None
        self.shift = 0.0
        self._spent = 0.0
        if shift:
            self._counted = self._counter.counted
            self._after = None
            self._seen = None
        self._reference = {
            name: layer.cell.initial_l0_penalty or DEFAULT_L0_PENALTY
            for name, layer in layers.items()
        }
        ratios = [
            float(ops.convert_to_numpy(layer.cell.l0_penalty))
            / self._reference[name]
            for name, layer in layers.items()
        ]
        logs_of_set = [math.log(r) for r in ratios if r > 0]
        self._integral = float(np.mean(logs_of_set)) if logs_of_set else 0.0
        self._previous = None
        self._velocity = None
        self._last_step = None
        self._epoch = 0
        self._warned = False
        self._set_scale(self._integral)
        descent_steps = self._warmup * self._steps
        self.gate_pace = None
        if self.pace == "auto":
            self.gate_pace = min(
                self.max_pace, self.crossings * self.travel / descent_steps
            )
        elif self.pace is not None:
            self.gate_pace = self.pace
        if self.gate_pace is None:
            self._rise = self._rise_gain or type(self).rise_gain
            self._fall = self.fall_gain
            default_horizon = 10
        else:
            updates = descent_steps / self._update_every
            self._rise = self._rise_gain or self.log_range / updates
            self._fall = 2 * self.log_range / updates
            default_horizon = math.ceil(
                self.travel / (2 * self.gate_pace * self._update_every)
            )
        self._horizon = (
            default_horizon if self.horizon is None else self.horizon
        )
        self.rise_gain = self._rise
        end = self._start + self._warmup
        if end > self._epochs + 1e-9:
            self._warn(
                f"the schedule reaches the target at epoch {end:g}, after "
                f"`fit` ends (epoch {self._epochs}): pass a smaller "
                "`warmup_epochs` or `start_epoch`, or train longer."
            )

    def _warn(self, why):
        if self._warned:
            return
        self._warned = True
        warnings.warn(
            f"BudgetController({self.target:g}, metric={self.metric!r}) "
            f"cannot reach its target: {why}",
            UserWarning,
            stacklevel=3,
        )

    def _on_train_end(self, logs=None):
        self.model  # Under JAX, reading it syncs the trained variables.
        if self._counter is not None:
            self._land()
        if self._width_pace is not None:
            self._width_pace.finish()
        for layer in self._sizer.layers.values():
            if hasattr(layer.cell, "gate_scale"):
                layer.cell.set_gate_scale(1.0)
        self.size = self._sizer.kept()
        if self._counter is not None and not self._warned:
            reached = self.size / self.target_size
            if abs(reached - 1) > 0.1:
                self._warn(
                    f"it ends at {self.size:,.0f} {self.metric}, "
                    f"{reached:.2f} x the target {self.target_size:,.0f}: "
                    "no set of whole neurons is nearer (ties between gates, "
                    "or a target smaller than one neuron)."
                )

    # -- schedule -----------------------------------------------------------

    def scheduled_size(self, epoch):
        """The size the schedule asks for at (fractional) `epoch`."""
        remaining = 1.0 - (epoch - self._start) / self._warmup
        remaining = min(1.0, max(0.0, remaining))
        aim = self.target_size * (1.0 + self._margin)
        return aim + (self.dense_size - aim) * remaining**3

    def _set_scale(self, log_scale):
        self.l0_scale = math.exp(log_scale)
        for name, layer in self._sizer.layers.items():
            layer.cell.l0_penalty.assign(self._reference[name] * self.l0_scale)

    # -- control --------------------------------------------------------------

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._next_update = self._update_every

    def on_train_batch_begin(self, batch, logs=None):
        # At the start of a batch (`batch` steps of this epoch done), not at
        # the end of the last: a callback with an `on_train_batch_end` hook
        # makes Keras fetch every step's logs, and cheap steps cost about
        # 40% more. With `steps_per_execution` > 1, Keras calls it every
        # few batches.
        began = time.perf_counter()
        step = self._epoch * self._steps + batch
        pace = self._width_pace
        if pace is not None and pace.measuring() and step != self._last_step:
            self.model  # Under JAX, reading it syncs the trained variables.
            pace.measure(step)
        if batch < self._next_update:
            self._spent += time.perf_counter() - began
            return
        if self._counter is not None:
            self._next_update = batch + self._update_every
            self.model  # Under JAX, reading it syncs the trained variables.
            steps = 0 if self._last_step is None else step - self._last_step
            self._last_step = step
            self._shift_update(step / self._steps, steps)
            if pace is not None:
                pace.update(step, self._counter.kept_units(self._after))
            self._spent += time.perf_counter() - began
            return
        self._next_update = batch + self._update_every
        self.model  # Under JAX, reading it syncs the trained variables.
        steps = 0 if self._last_step is None else step - self._last_step
        self._last_step = step
        epoch = step / self._steps
        log_alphas = self._sizer.log_alphas()
        self.size = self._sizer.kept(log_alphas)
        self._track(log_alphas, steps)
        forecast = self._forecast(log_alphas)
        ahead = epoch + self._horizon * self._update_every / self._steps
        error = min(
            math.log(max(self.size, 1.0) / self.scheduled_size(epoch)),
            math.log(max(forecast, 1.0) / self.scheduled_size(ahead)),
        )
        error = min(1.0, max(-1.0, error))
        held = epoch >= self._start + self._warmup
        if error > 0:
            # Once the schedule holds, a small excess must not stall.
            if held:
                floor = self.rise_floor if self.gate_pace is None else 0.2
                error = max(error, floor)
            change = self._rise * error
        else:
            change = self._fall * error
        self._integral = min(
            self.max_log_scale,
            max(-self.max_log_scale, self._integral + change),
        )
        self._set_scale(self._integral + self.proportional_gain * error)
        self._adapt_pace(log_alphas, behind=error > 0)
        if self._velocity is not None and epoch >= self._start:
            self._check_reachable(log_alphas, epoch)
        if self._width_pace is not None:
            self._width_pace.update(step)
        self._spent += time.perf_counter() - began

    def _on_epoch_end(self, epoch, logs=None):
        self.model  # Under JAX, reading it syncs the trained variables.
        if self._counter is not None and self._counter.exact:
            self.size = self._counter.count(self._counter.read())
        else:
            self.size = self._sizer.kept()
        scheduled = self.scheduled_size(epoch + 1)
        scales = [
            float(ops.convert_to_numpy(layer.cell.gate_scale))
            for layer in self._sizer.layers.values()
        ]
        if logs is not None:
            logs["budget/size"] = self.size
            logs["budget/scheduled"] = scheduled
            logs["budget/l0_scale"] = self.l0_scale
            logs["budget/gate_scale"] = float(np.mean(scales))
        if self.verbose:
            print(
                f"Epoch {epoch + 1} budget: {self.metric} {self.size:,.0f} "
                f"(scheduled {scheduled:,.0f}, target "
                f"{self.target_size:,.0f}), λ x {self.l0_scale:.3g}, "
                f"gate scale {np.mean(scales):.3g}"
            )

    # -- timed hooks ----------------------------------------------------------

    def on_train_begin(self, logs=None):
        began = time.perf_counter()
        self._on_train_begin(logs)
        self.seconds = time.perf_counter() - began

    def on_epoch_end(self, epoch, logs=None):
        began = time.perf_counter()
        self._on_epoch_end(epoch, logs)
        self.seconds += time.perf_counter() - began

    def on_train_end(self, logs=None):
        began = time.perf_counter()
        self._on_train_end(logs)
        self.seconds += time.perf_counter() - began + self._spent
