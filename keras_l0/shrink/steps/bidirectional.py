"""`Bidirectional` around a plain or gated recurrent layer."""

import keras
import numpy as np

from keras_l0 import _keras_compat as compat
from keras_l0 import structure
from keras_l0.shrink.fold import eval_gates
from keras_l0.shrink.steps.base import Step
from keras_l0.shrink.steps.base import register
from keras_l0.shrink.steps.recurrent import RecurrentPlan
from keras_l0.shrink.steps.recurrent import input_needs
from keras_l0.shrink.steps.recurrent import unit_values
from keras_l0.shrink.views import View

_SUMS = ("sum", "ave")


@register(keras.layers.Bidirectional)
class BidirectionalStep(Step):
    """Concat (and `None`): each direction keeps its own units, padded to the
    same number (Keras infers the output width from the forward layer).
    Sum, ave and mul: the two directions' unit `j` and output `j` form one
    group; unequal per-direction scales are applied exactly by splitting the
    merge (`merge_mode=None`, a `Rescaling` per direction, `Add`/`Average`)."""

    @classmethod
    def accepts(cls, layer, node):
        args, kwargs = compat.node_call(node)
        if len(args) != 1 or isinstance(args[0], (list, tuple, dict)):
            return "shrink supports one input sequence"
        if kwargs.get("initial_state") is not None:
            return "shrink does not support initial_state on Bidirectional"
        if not all(
            structure.plain_class(d) is not None
            for d in (layer.forward_layer, layer.backward_layer)
        ):
            return "it wraps a custom layer"
        return None

    def __init__(self, plan, node):
        super().__init__(plan, node)
        layer = self.layer
        self.directions = (layer.forward_layer, layer.backward_layer)
        self.keys = [f"{layer.name}/{d.name}" for d in self.directions]
        self.gates = [eval_gates(d, k) for d, k in zip(self.directions, self.keys)]
        self.mode = layer.merge_mode
        merged = 2 if self.mode is None else 1
        self.state_count = (len(self.outputs) - merged) // 2

    def _spaces(self):
        return [
            self.plan.channels.space((id(self), i), d.cell.units)
            for i, d in enumerate(self.directions)
        ]

    def _state_outputs(self, i):
        start = (2 if self.mode is None else 1) + i * self.state_count
        return self.outputs[start : start + self.state_count]

    def values(self):
        zf, zb = (g[1] for g in self.gates)
        vf, vb = unit_values(zf), unit_values(zb)
        if self.mode == "concat":
            merged = [np.concatenate([vf, vb])]
        elif self.mode is None:
            merged = [vf, vb]
        elif self.mode == "mul":
            merged = [np.where((zf == 0) | (zb == 0), 0.0, np.nan)]
        else:
            merged = [np.where((zf == 0) & (zb == 0), 0.0, np.nan)]
        return merged + [None] * (len(self.outputs) - len(merged))

    def couple(self):
        fwd, bwd = self._spaces()
        out = self.plan.space(self.outputs[0])
        if self.mode == "concat":
            self.plan.join(out, np.concatenate([fwd, bwd]))
        elif self.mode is None:
            self.plan.join(out, fwd)
            self.plan.join(self.outputs[1], bwd)
        else:
            self.plan.join(out, fwd)
            self.plan.join(out, bwd)
        for i, space in enumerate((fwd, bwd)):
            for tensor in self._state_outputs(i):
                self.plan.join(space, tensor)

    def needs(self):
        fill = self.plan.value(self.data)
        self.plan.require(self.data, input_needs(zip(self.directions, self.gates), fill))
        for space, (_, z_h) in zip(self._spaces(), self.gates):
            self.plan.require(space, z_h != 0)

    def adjust(self):
        fwd, bwd = self._spaces()
        kept = self.plan.kept
        counts = [int(kept[fwd].sum()), int(kept[bwd].sum())]
        if max(counts) == 0:
            self.plan.note(
                f"Every hidden unit of layer '{self.layer.name}' is closed: its "
                "slim version keeps one unit whose output nothing reads."
            )
            return [int(fwd[0]), int(bwd[0])]
        if counts[0] == counts[1]:
            return []
        short = fwd if counts[0] < counts[1] else bwd
        spare = short[~kept[short]][: abs(counts[0] - counts[1])]
        return [int(i) for i in spare]

    def plan_views(self):
        view = self.plan.in_view(self.data)
        spaces = self._spaces()
        kept = [np.flatnonzero(self.plan.kept[s]) for s in spaces]
        self.rnns = [
            RecurrentPlan(d, key, view, k, g)
            for d, key, k, g in zip(self.directions, self.keys, kept, self.gates)
        ]
        self.plan.recurrent.extend(self.rnns)
        self.slim.extend(self.rnns)
        values = [self.plan.value(t) for t in self.outputs]
        outs = [
            rnn.output_view(unit_values(g[1])) for rnn, g in zip(self.rnns, self.gates)
        ]
        self.split = None
        if self.mode == "concat":
            views = [View.concat(outs)]
            views[0].fill = values[0]
        elif self.mode is None:
            views = outs
        else:
            sf, sb = (o.scale for o in outs)
            if self.mode == "mul":
                scale = sf * sb
            elif np.array_equal(sf, sb):
                scale = sf
            else:
                self.split, scale = (sf, sb), None
            views = [View(outs[0].width, kept[0], scale, values[0], self.layer.name)]
        for rnn in self.rnns:
            views += [rnn.state_view() for _ in range(self.state_count)]
        return views

    def build(self):
        new_dirs = [rnn.new_layer() for rnn in self.rnns]
        config = {
            "merge_mode": None if self.split else self.mode,
            "name": self.layer.name,
            "trainable": self.layer.trainable,
        }
        new = keras.layers.Bidirectional(
            new_dirs[0], backward_layer=new_dirs[1], **config
        )
        outputs = self.call(new)
        for rnn, direction in zip(self.rnns, (new.forward_layer, new.backward_layer)):
            rnn.assign(direction)
        if not self.split:
            return outputs
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        plan = self.plan
        plan.chain = False
        scaled = []
        for i, scale in enumerate(self.split):
            name = plan.unique_name(f"{self.layer.name}_{('forward', 'backward')[i]}_scale")
            scaled.append(plan.add_layer(keras.layers.Rescaling(scale, name=name))(outputs[i]))
        merge = keras.layers.Add if self.mode == "sum" else keras.layers.Average
        name = plan.unique_name(f"{self.layer.name}_{self.mode}")
        merged = plan.add_layer(merge(name=name))(scaled)
        return [merged] + outputs[2:]
