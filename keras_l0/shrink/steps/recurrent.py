"""`LSTM`, `GRU`, `SimpleRNN` and their gated versions."""

import numpy as np

from keras_l0 import _keras_compat as compat
from keras_l0 import structure
from keras_l0.layers import GATED_TO_PLAIN
from keras_l0.shrink.fold import GATE_CONFIG_KEYS
from keras_l0.shrink.fold import bias_fold
from keras_l0.shrink.fold import eval_gates
from keras_l0.shrink.fold import numpy
from keras_l0.shrink.fold import rebuild
from keras_l0.shrink.steps.base import Step
from keras_l0.shrink.steps.base import foldable
from keras_l0.shrink.steps.base import register
from keras_l0.shrink.views import View


class RecurrentPlan:
    """The slim version of one recurrent layer (or `Bidirectional` side).

    Attributes:
        key: the layer's name, `"<wrapper>/<name>"` inside a wrapper.
        layer: the original layer.
        units, inputs: the original numbers of units and input features.
        kept_units: indices of the units the slim layer keeps.
        input_width: the slim layer's number of input features.
        inputs_kept: how many of them it reads (non-zero kernel rows).
        num_blocks, bias_rows: 4/3/1 gate blocks, 0/1/2 bias rows.
    """

    kind = "recurrent"

    def __init__(self, layer, key, view, kept_units, gates):
        cell = layer.cell
        self.layer, self.key = layer, key
        self.slim_class = structure.plain_class(layer)
        self.num_blocks = structure.num_blocks(cell)
        self.bias_rows = structure.bias_rows(cell)
        self.units = cell.units
        self.inputs = int(cell.kernel.shape[0])
        self.input_gate, self.hidden_gate = gates
        self.kept_units = np.asarray(kept_units, "int64")
        kept, scale, fill = view.rows()
        self.input_rows = kept
        self.row_scale = scale * self.input_gate[kept]
        self.fill = fill.copy()
        self.fill[kept] = np.nan
        self.input_width = len(kept)
        self.inputs_kept = int(np.count_nonzero(self.row_scale))

    @property
    def units_kept(self):
        return len(self.kept_units)

    def output_view(self, values):
        return View(
            self.units,
            self.kept_units,
            self.hidden_gate[self.kept_units],
            values,
            source=self.key,
        )

    def state_view(self):
        return View(self.units, self.kept_units, source=self.key)

    def new_layer(self, **changes):
        return rebuild(
            self.layer,
            self.slim_class,
            GATE_CONFIG_KEYS,
            units=self.units_kept,
            **changes,
        )

    def weights(self):
        """The slim `kernel`, `recurrent_kernel` and `bias` (if any)."""
        cell = self.layer.cell
        trained = structure.trained_weights(cell)
        kept = self.kept_units
        cols = structure.block_columns(self.units, self.num_blocks, kept)
        kernel = numpy(trained["kernel"])[:, cols]
        recurrent = numpy(trained["recurrent_kernel"])[kept][:, cols]
        weights = {
            "kernel": kernel[self.input_rows] * self.row_scale[:, None],
            "recurrent_kernel": recurrent * self.hidden_gate[kept][:, None],
        }
        if cell.use_bias:
            bias = numpy(trained["bias"])[..., cols].copy()
            extra = bias_fold(kernel, self.fill, self.input_gate)
            if extra is not None:
                if bias.ndim == 2:
                    bias[0] += extra
                else:
                    bias += extra
            weights["bias"] = bias
        return weights

    def assign(self, new_layer):
        for name, value in self.weights().items():
            getattr(new_layer.cell, name).assign(value.astype("float32"))


def unit_values(z_h):
    return np.where(z_h == 0, 0.0, np.nan).astype("float32")


def input_needs(layers_gates, fill):
    """Input features some direction reads as a varying value."""
    need = np.zeros(len(fill), bool)
    for layer, (z_in, _) in layers_gates:
        need |= (z_in != 0) & ~foldable(fill, layer.cell.use_bias)
    return need


def initial_states(kwargs):
    states = kwargs.get("initial_state")
    if states is None:
        return []
    return list(states) if isinstance(states, (list, tuple)) else [states]


@register(*structure.PLAIN_RECURRENT, *GATED_TO_PLAIN)
class RecurrentStep(Step):
    """A recurrent layer: its units, output and states form one group per
    unit with the initial states it reads."""

    @classmethod
    def accepts(cls, layer, node):
        args, kwargs = compat.node_call(node)
        if len(args) != 1 or isinstance(args[0], (list, tuple, dict)):
            return "shrink supports one input sequence (pass initial_state by keyword)"
        if kwargs.get("constants") is not None:
            return "shrink does not support constants"
        return None

    def __init__(self, plan, node):
        super().__init__(plan, node)
        self.gates = eval_gates(self.layer)
        self.states = initial_states(self.kwargs)

    def values(self):
        out = unit_values(self.gates[1])
        return [out] + [None] * (len(self.outputs) - 1)

    def couple(self):
        units = self.plan.space(self.outputs[0])
        for tensor in self.outputs[1:] + self.states:
            self.plan.join(units, tensor)

    def needs(self):
        fill = self.plan.value(self.data)
        self.plan.require(self.data, input_needs([(self.layer, self.gates)], fill))
        self.plan.require(self.outputs[0], self.gates[1] != 0)

    def adjust(self):
        return self.at_least_one(
            self.outputs[0],
            f"Every hidden unit of layer '{self.layer.name}' is closed: its "
            "slim version keeps one unit whose output nothing reads.",
        )

    def plan_views(self):
        view = self.plan.in_view(self.data)
        kept = self.plan.kept_of(self.outputs[0])
        self.rnn = RecurrentPlan(self.layer, self.layer.name, view, kept, self.gates)
        self.plan.recurrent.append(self.rnn)
        self.slim.append(self.rnn)
        if not self.rnn.inputs_kept:
            self.plan.note(
                f"Every input of layer '{self.layer.name}' is closed: its slim "
                "version ignores its inputs."
            )
        values = self.plan.value(self.outputs[0])
        return [self.rnn.output_view(values)] + [
            self.rnn.state_view() for _ in self.outputs[1:]
        ]

    def build(self):
        new = self.rnn.new_layer()
        outputs = self.call(new, unit={id(t) for t in self.states})
        self.rnn.assign(new)
        return outputs

