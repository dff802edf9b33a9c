"""Exact size counting from log α and the common shift of `BudgetController`.

`ShiftCounter` counts, with numpy only, the size that `keras_l0.shrink` keeps
for any values of the gate parameters: it learns once, at the start of
`fit`, how each gated layer's kept inputs follow from its own input gates
and from the hidden gates of the gated layers that feed it (a few
`keras_l0.summary` calls), and then counts in microseconds. `best_shift`
finds the one shift `c` of every log α after which that count is nearest
to a scheduled size.
"""

import math

import numpy as np
from keras import ops

from keras_l0.callbacks.sizing import _KEPT_COLUMNS
from keras_l0.callbacks.sizing import KEEP_THRESHOLD
from keras_l0.callbacks.sizing import layer_size
from keras_l0.callbacks.sizing import numpy_log_alphas


class ShiftCounter:
    """Counts the kept size of a `_Sizer`'s layers from flat log α arrays.

    Args:
        sizer: a `keras_l0.callbacks.sizing._Sizer`.

    Attributes:
        exact: whether the count was checked equal to `sizer.kept()` at
            construction (otherwise each layer counts its own gates).
    """

    def __init__(self, sizer):
        self.sizer = sizer
        self.layers = list(sizer.layers.values())
        self.slices = []  # per layer: (input slice or None, hidden slice)
        start = 0
        for layer in self.layers:
            pair = []
            for gated, size in (
                (layer.cell.input_gates, layer.cell.input_dim),
                (layer.cell.hidden_gates, layer.cell.units),
            ):
                if gated:
                    pair.append(slice(start, start + size))
                    start += size
                else:
                    pair.append(None)
            self.slices.append(tuple(pair))
        self.size = start
        # Per layer: does it count its own input gates, and which upstream
        # layers' hidden gates (in order) give its inputs.
        self.own = [layer.cell.input_gates for layer in self.layers]
        self.upstream = [[] for _ in self.layers]
        self.exact = False
        self._read = None
        self.read_scales()
        if sizer.structure is not None:
            self._learn()

    # -- flat arrays ----------------------------------------------------------

    def read_scales(self):
        """Reads every layer's `gate_scale` (log α = gate_scale θ)."""
        self.scales = [
            float(ops.convert_to_numpy(layer.cell.gate_scale))
            for layer in self.layers
        ]
        return self.scales

    def read(self):
        """The current log α of every gate, one flat float64 array (with
        the scales last read or written)."""
        parts = [
            log_alpha
            for layer, scale in zip(self.layers, self.scales)
            for log_alpha in numpy_log_alphas(layer.cell, scale)
            if log_alpha is not None
        ]
        self._read = np.concatenate(parts)
        return self._read.copy()

    def write(self, flat, scales=None):
        """Assigns log α from a flat array, and the scales if given (the
        variables get `log α / scale`); a variable whose values and scale
        are those last read is left alone."""
        if scales is None:
            scales = self.scales
        for i, (layer, (s_in, s_h)) in enumerate(
            zip(self.layers, self.slices)
        ):
            cell = layer.cell
            rescaled = scales[i] != self.scales[i]
            if rescaled:
                cell.gate_scale.assign(scales[i])
            for variable, part in (
                (cell.input_log_alpha, s_in),
                (cell.hidden_log_alpha, s_h),
            ):
                if part is None:
                    continue
                if not rescaled and self._read is not None and np.array_equal(
                    flat[part], self._read[part]
                ):
                    continue
                variable.assign((flat[part] / scales[i]).astype("float32"))
        self.scales = list(scales)
        self._read = None

    def kept_units(self, flat):
        """`{name: kept hidden units}`, named as the sizer names its layers,
        if the gates had the log α `flat` (layers without hidden gates left
        out)."""
        return {
            name: int(np.count_nonzero(flat[s_h] > KEEP_THRESHOLD))
            for name, (_, s_h) in zip(self.sizer.layers, self.slices)
            if s_h is not None
        }

    # -- counting -------------------------------------------------------------

    def count(self, flat):
        """Kept size if the gates had the log α `flat`."""
        return self.count_open(flat > KEEP_THRESHOLD)

    def count_open(self, open_):
        hidden = []
        total = 0.0
        for i, (layer, (s_in, s_h)) in enumerate(
            zip(self.layers, self.slices)
        ):
            cell = layer.cell
            units_open = None if s_h is None else open_[s_h]
            hidden.append(units_open)
            units = cell.units if s_h is None else int(units_open.sum())
            if self.upstream[i]:
                rows = np.concatenate(
                    [
                        np.ones(self.layers[j].cell.units, bool)
                        if hidden[j] is None
                        else hidden[j]
                        for j in self.upstream[i]
                    ]
                )
                if self.own[i]:
                    rows = rows & open_[s_in]
                inputs = int(rows.sum())
            elif self.own[i] and s_in is not None:
                inputs = int(open_[s_in].sum())
            else:
                inputs = cell.input_dim
            total += layer_size(layer, inputs, units, self.sizer.metric)
        return total

    # -- learning the structure ------------------------------------------------

    def _rows(self, flat=None):
        if flat is None:
            rows = self.sizer.rows()
        else:
            saved = self.read()
            self.write(flat)
            try:
                rows = self.sizer.rows()
            finally:
                self.write(saved)
        rows = {row["name"]: row for row in rows}
        column = _KEPT_COLUMNS[self.sizer.metric]
        return [rows[name][column] for name in self.sizer.layers]

    def _learn(self):
        """Probes `keras_l0.summary` with single gates closed."""
        flat = self.read()
        last = len(self.layers) - 1
        try:
            base = self._rows()
            for i, (s_in, s_h) in enumerate(self.slices):
                if s_in is not None:
                    probe = flat.copy()
                    idx = s_in.start + int(np.argmax(flat[s_in]))
                    probe[idx] = -30.0
                    self.own[i] = self._rows(probe)[i] < base[i]
                if s_h is not None and i < last:
                    probe = flat.copy()
                    idx = s_h.start + int(np.argmax(flat[s_h]))
                    probe[idx] = -30.0
                    after = self._rows(probe)
                    for j in range(i + 1, len(self.layers)):
                        if after[j] < base[j]:
                            self.upstream[j].append(i)
            for j, sources in enumerate(self.upstream):
                width = sum(self.layers[i].cell.units for i in sources)
                if sources and width != self.layers[j].cell.input_dim:
                    self.upstream[j] = []
            self.exact = self.count(flat) == self.sizer.kept()
        except Exception:  # Any planning failure: count own gates only.
            self.own = [layer.cell.input_gates for layer in self.layers]
            self.upstream = [[] for _ in self.layers]
            self.exact = False

    @property
    def counted(self):
        """Boolean mask of the gates whose state changes the size (input
        gates that `shrink` cannot use, e.g. on the model's raw input,
        do not)."""
        mask = np.ones(self.size, bool)
        for own, (s_in, _) in zip(self.own, self.slices):
            if s_in is not None and not own:
                mask[s_in] = False
        return mask


def best_shift(flat, count, target, margin=0.05):
    """The shift `c` of every log α after which the kept size is nearest
    to `target` (in ratio); among those, the one nearest to 0.

    Args:
        flat: float64 array of log α.
        count: function of a boolean open mask, returning the size.
        target: the size aimed at.
        margin: float >= 0, how far inside the gap between the last kept
            and the first closed gate the threshold is put, where the gap
            allows.

    Returns:
        `(c, size)`: the shift and the size it gives.
    """
    levels = np.unique(flat)[::-1]  # distinct values, descending
    # Opening the top m levels (m = 0 .. len) gives a monotone size.
    def size(m):
        if m == 0:
            return count(np.zeros(flat.shape, bool))
        return count(flat >= levels[m - 1])

    lo, hi = 0, len(levels)
    while lo < hi:  # smallest m with size(m) >= target
        mid = (lo + hi) // 2
        if size(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    m = lo
    if m > 0:
        above, below = size(m), size(m - 1)
        if above > target and (
            below > 0
            and math.log(above / target) > math.log(target / below)
        ):
            m -= 1
    m = min(m, len(levels))
    # Open: the top m levels: levels[m-1] + c > T >= levels[m] + c.
    upper = math.inf if m == 0 else KEEP_THRESHOLD - levels[m - 1]
    lower = -math.inf if m == len(levels) else KEEP_THRESHOLD - levels[m]
    # c in (upper, lower]: strictly above `upper`, at most `lower`.
    gap = lower - upper
    inset = min(margin, gap / 4) if math.isfinite(gap) else margin
    low, high = upper + inset, lower - inset
    if m == 0:
        low, high = -math.inf, lower - margin
    if m == len(levels):
        low, high = upper + margin, math.inf
    c = min(max(0.0, low), high)
    return c, size(m)


def _band(values, bound, max_gap):
    """Moves `values` up so that the smallest is at least `bound`, and
    closes every gap between neighbours (in sorted order) wider than
    `max_gap` to `max_gap`. Order and the narrower gaps stay, so the
    ranking the optimizer built survives, and a second call changes
    nothing. (`_band(-values, -bound, max_gap)` bands downwards.)"""
    if values.size == 0:
        return values.copy()
    order = np.argsort(values, kind="stable")
    ranked = values[order]
    gaps = np.minimum(np.diff(ranked), max_gap)
    banded = max(ranked[0], bound) + np.concatenate([[0.0], np.cumsum(gaps)])
    out = np.empty_like(values)
    out[order] = banded
    return out


class ShiftControl:
    """The shift control of `BudgetController` (mixed in): one common shift
    of every counted log α per update puts the kept size on the schedule;
    the optimizer's updates, the data gradient and λ set the ranking."""


    def _position(self, scheduled, flat, scales=None):
        """Shifts every counted log α by one common `c` so that the kept
        size is the one nearest to `scheduled`; then closed gates are
        lowered to at most `closed_log_alpha` and kept ones raised to at
        least `open_log_alpha` (kept neurons train at gate 1, not
        attenuated by the shift), each group moved as one with its gaps
        capped at `max_gap_log_alpha`, so the ranking stays and no ties
        are made. Writes the gates (and `scales`, if given) and returns
        the size (exact where the counter is) and the new log α."""
        counter = self._counter
        counted = self._counted
        full = np.ones(flat.shape, bool)

        def count(open_):
            full[counted] = open_
            return counter.count_open(full)

        c, size = best_shift(flat[counted], count, scheduled)
        new = flat.copy()
        new[counted] += c
        closed = counted & (new <= KEEP_THRESHOLD)
        new[closed] = -_band(
            -new[closed], -self.closed_log_alpha, self.max_gap_log_alpha
        )
        kept = counted & ~closed
        new[kept] = _band(
            new[kept], self.open_log_alpha, self.max_gap_log_alpha
        )
        if scales != counter.scales or np.any(np.abs(new - flat) > 1e-6):
            counter.write(new, scales)
        self.shift += c
        return size, new

    def _land(self):
        """At the end of `fit`: the size nearest to the target, checked
        with `keras_l0.summary` where the counter could not be."""
        aim = self.target_size
        self._counter.read_scales()
        for _ in range(4):
            self._position(aim, self._counter.read())
            kept = self._sizer.kept()
            if self._counter.exact or abs(kept / self.target_size - 1) < 0.02:
                return
            aim *= self.target_size / max(kept, 1.0)

    def _shift_pace(self, flat, steps):
        """The gate scales k (log α = k θ) with which the gates that the
        optimizer moves fastest travel `gate_pace` log α per step."""
        scales = self._counter.scales
        if self.gate_pace is None or self._after is None or steps <= 0:
            return scales
        moved = np.abs(flat - self._after)[self._counted] / steps
        observed = float(np.quantile(moved, 0.9)) if moved.size else 0.0
        if self._seen is None:
            self._seen = observed
        else:
            self._seen = (
                self.velocity_smoothing * self._seen
                + (1 - self.velocity_smoothing) * observed
            )
        ratio = math.sqrt(self.gate_pace / max(self._seen, 1e-12))
        ratio = min(self.max_scale_step, max(1 / self.max_scale_step, ratio))
        if abs(ratio - 1) <= 0.05:
            return scales
        low, high = self.scale_bounds
        self._seen *= ratio
        return [min(high, max(low, k * ratio)) for k in scales]

    def _shift_update(self, epoch, steps):
        flat = self._counter.read()
        held = epoch >= self._start + self._warmup
        if held:  # The ranking is settled: no gate travels fast any more.
            scales = [1.0] * len(self._counter.scales)
        else:
            scales = self._shift_pace(flat, steps)
        if epoch < self._start:
            # Before the schedule the gates are lifted, as one group, so
            # that none is below where the ranking starts: λ at a fast pace
            # would otherwise pull all of them down together (noisier
            # gates, and a collapse that the first shift has to undo).
            new = flat.copy()
            counted = self._counted
            if counted.any():
                new[counted] += max(
                    0.0, self.ranking_log_alpha - flat[counted].min()
                )
            if scales != self._counter.scales or np.any(
                np.abs(new - flat) > 1e-6
            ):
                self._counter.write(new, scales)
            self._after = new
            return
        self.size, self._after = self._position(
            self.scheduled_size(epoch), flat, scales
        )
