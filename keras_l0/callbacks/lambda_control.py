"""The λ feedback of `BudgetController` (`control="lambda"`): forecast,
gate pace and the reachability warning."""

import math

import numpy as np
from keras import ops

from keras_l0.callbacks.sizing import KEEP_THRESHOLD


class LambdaControl:
    """Mixed into `BudgetController`: the per-gate velocity, the forecast
    of the kept size, the pace of the gates, and the warning when the
    gates cannot close in the steps left (`control="lambda"`)."""

    def _split(self, flat, log_alphas):
        out, start = [], 0
        for pair in log_alphas:
            part = []
            for la in pair:
                if la is None:
                    part.append(None)
                else:
                    part.append(flat[start : start + la.size])
                    start += la.size
            out.append(part)
        return out

    def _track(self, log_alphas, steps):
        """Updates the running per-step velocity of every log α."""
        flat = np.concatenate(
            [la for pair in log_alphas for la in pair if la is not None]
        )
        if self._previous is not None and steps > 0:
            step = (flat - self._previous) / steps
            self._velocity = (
                step
                if self._velocity is None
                else self.velocity_smoothing * self._velocity
                + (1 - self.velocity_smoothing) * step
            )
        self._previous = flat

    def _forecast(self, log_alphas):
        """Kept size `horizon` updates ahead if every gate keeps drifting
        at its recent pace."""
        if self._velocity is None or not self._horizon:
            return self.size
        ahead = self._previous + (
            self._horizon * self._update_every * self._velocity
        )
        now = self._sizer.count(log_alphas)
        if now == 0:
            return self.size
        future = self._sizer.count(self._split(ahead, log_alphas))
        return self.size * future / now

    def _adapt_pace(self, log_alphas, behind):
        """Sets each layer's gate scale so that its moving gates travel at
        `gate_pace` log α per step: faster only while the size is behind
        the schedule (gates at rest are not hurried), slower whenever they
        run faster."""
        if self.gate_pace is None or self._velocity is None:
            return
        low, high = self.scale_bounds
        velocities = self._split(self._velocity, log_alphas)
        for layer, pair in zip(self._sizer.layers.values(), velocities):
            speed = np.abs(np.concatenate([v for v in pair if v is not None]))
            observed = float(np.quantile(speed, 0.9))
            scale = float(ops.convert_to_numpy(layer.cell.gate_scale))
            ratio = math.sqrt(self.gate_pace / max(observed, 1e-12))
            ratio = min(self.max_scale_step, max(1 / self.max_scale_step, ratio))
            if ratio > 1 and not behind:
                continue
            new = min(high, max(low, scale * ratio))
            if abs(new / scale - 1) > 0.05:
                layer.cell.set_gate_scale(new)

    def _check_reachable(self, log_alphas, epoch):
        """Warns once if the gates that must still close cannot get there
        in the steps left, at the pace they can move."""
        if self._warned or self.size <= self.target_size * 1.1:
            return
        left = (self._epochs - epoch) * self._steps
        flat = self._previous
        open_ = np.sort(flat[flat > KEEP_THRESHOLD])
        if not open_.size:
            return
        pace = self.gate_pace
        if pace is None:
            pace = float(np.quantile(np.abs(self._velocity), 0.9))
        else:
            pace = max(pace, self.max_pace)
        # The nearest gates close first: how far must the last one needed go?
        need, lo, hi = open_[-1], 0, open_.size
        while lo < hi:
            mid = (lo + hi) // 2
            closed = np.where(flat <= open_[mid], -np.inf, flat)
            if self._sizer.count(self._split(closed, log_alphas)) <= (
                self.target_size
            ):
                hi = mid
            else:
                lo = mid + 1
        if lo < open_.size:
            need = open_[lo]
        steps_needed = (need - KEEP_THRESHOLD) / max(pace, 1e-12)
        if steps_needed > left:
            self._warn(
                f"{self.size:,.0f} {self.metric} kept, target "
                f"{self.target_size:,.0f}; the gates that must still close "
                f"need about {steps_needed:,.0f} steps at {pace:.2g} log α "
                f"per step, and {left:,.0f} are left. Train longer"
                + (", or let it set the pace (pace='auto')." if
                   self.gate_pace is None else ".")
            )
