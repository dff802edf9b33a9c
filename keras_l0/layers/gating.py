"""Neuron gates shared by the gated recurrent cells and layers.

A gated cell owns one hard-concrete gate per input feature and one per hidden
unit. The gates scale the *rows* of the kernel (inputs) and of the recurrent
kernel (hidden units, as seen by the next time step); the layer's output is
scaled by the hidden gates (hidden units, as seen by the next layer). The
returned states are the raw cell states, which is what the next step reads.

A gate that is 0 therefore removes its neuron from every matrix it touches:
for a hidden unit, its row of the recurrent kernel, its column in every gate
block of the kernel, recurrent kernel and bias, and the next layer's input
row. This is what `keras_l0.shrink` later removes physically.

The cell's weights stay ordinary Keras weights with the Keras names, so the
layer runs the Keras layer's own inner loop (and with it the backend's fused
cuDNN path) on gated copies of the kernels, computed once per batch.
"""

import contextlib
import hashlib
import math

from keras import backend
from keras import initializers
from keras import ops
from keras.layers import InputSpec
from keras.layers import RNN

from keras_l0 import hard_concrete
from keras_l0 import structure

PENALTY_FORMS = ("weights", "neurons")
DEFAULT_L0_PENALTY = 1e-5
DEFAULT_KEEP_PROBABILITY = 0.9999


class GatedCellMixin:
    """Gate weights, gate values and the L0 penalty of a gated cell.

    Mixed in before a Keras RNN cell class, whose `kernel`,
    `recurrent_kernel` and `bias` it gates.
    """

    def __init__(
        self,
        units,
        input_gates=True,
        hidden_gates=True,
        l0_penalty=DEFAULT_L0_PENALTY,
        penalty_form="weights",
        initial_keep_probability=DEFAULT_KEEP_PROBABILITY,
        **kwargs,
    ):
        super().__init__(units, **kwargs)
        if penalty_form not in PENALTY_FORMS:
            raise ValueError(
                f"`penalty_form` must be one of {PENALTY_FORMS}. "
                f"Received: penalty_form={penalty_form!r}"
            )
        if l0_penalty < 0:
            raise ValueError(
                f"`l0_penalty` must be >= 0. Received: l0_penalty={l0_penalty}"
            )
        self._initial_log_alpha = hard_concrete.log_alpha_for_keep_probability(
            initial_keep_probability
        )
        self.input_gates = bool(input_gates)
        self.hidden_gates = bool(hidden_gates)
        self.initial_l0_penalty = float(l0_penalty)
        self.penalty_form = penalty_form
        self.initial_keep_probability = float(initial_keep_probability)
        self._gated_weights_active = False

    @property
    def has_gates(self):
        return self.input_gates or self.hidden_gates

    def build(self, input_shape):
        super().build(input_shape)
        self.input_dim = int(input_shape[-1])
        log_alpha_init = initializers.Constant(self._initial_log_alpha)
        self.input_log_alpha = None
        self.hidden_log_alpha = None
        if self.input_gates:
            self.input_log_alpha = self.add_weight(
                shape=(self.input_dim,),
                name="input_log_alpha",
                initializer=log_alpha_init,
                dtype="float32",
                autocast=False,
            )
        if self.hidden_gates:
            self.hidden_log_alpha = self.add_weight(
                shape=(self.units,),
                name="hidden_log_alpha",
                initializer=log_alpha_init,
                dtype="float32",
                autocast=False,
            )
        if self.has_gates:
            self.l0_penalty = self._scalar(
                "l0_penalty", initializers.Constant(self.initial_l0_penalty)
            )
            self.gate_scale = self._scalar("gate_scale")
            self.step_scale = self._scalar("step_scale")
        self._initial_digest = self._weights_digest()

    def _scalar(self, name, initializer="ones"):
        return self.add_weight(
            shape=(),
            name=name,
            initializer=initializer,
            dtype="float32",
            trainable=False,
            autocast=False,
        )

    def _weights_digest(self):
        try:
            arrays = [
                ops.convert_to_numpy(w)
                for w in (self.kernel, self.recurrent_kernel)
            ]
        except Exception:
            # Built inside a traced function: the values are not concrete.
            return None
        digest = hashlib.blake2b(digest_size=16)
        for array in arrays:
            digest.update(array.tobytes())
        return digest.digest()

    def holds_initial_weights(self):
        """Whether the kernel and recurrent kernel still hold the values
        drawn by their initialisers when the cell was built (no training,
        loading or `set_weights` since). `False` when that is not known."""
        initial = getattr(self, "_initial_digest", None)
        return initial is not None and initial == self._weights_digest()

    def load_own_variables(self, store):
        # Files written before `gate_scale` and `step_scale` existed hold one
        # or two variables less: the last ones.
        prefix = self.kernel.path.rsplit("/", 1)[0] + "/"
        own = [v for v in self.variables if v.path.startswith(prefix)]
        missing = len(own) - len(store.keys())
        if self.has_gates and missing in (1, 2):
            for i, variable in enumerate(own[:-missing]):
                variable.assign(store[str(i)])
            for variable in own[-missing:]:
                variable.assign(1.0)
            return
        super().load_own_variables(store)

    def log_alphas(self):
        """Returns `(input log α, hidden log α)`, float32, `None` where off.

        The trainable variables `input_log_alpha` and `hidden_log_alpha`
        hold `log α / gate_scale`; `gate_scale` is 1 (the variables are
        log α) except while a `BudgetController` sets the pace at which an
        optimizer moves the gates, and it restores 1 at the end of `fit`.
        """
        if not self.has_gates:
            return None, None
        return tuple(
            None if v is None else ops.multiply(self.gate_scale, v)
            for v in (self.input_log_alpha, self.hidden_log_alpha)
        )

    def set_gate_scale(self, scale):
        """Sets `gate_scale`, rescaling the gate variables so that log α,
        and with it every gate, stays the same.

        Args:
            scale: float > 0. An optimizer step of size `s` on a gate
                variable then moves log α by `scale * s`.
        """
        scale = float(scale)
        if not scale > 0 or not math.isfinite(scale):
            raise ValueError(
                f"`scale` must be a finite number > 0. Received: {scale!r}"
            )
        old = float(ops.convert_to_numpy(self.gate_scale))
        for v in (self.input_log_alpha, self.hidden_log_alpha):
            if v is not None:
                v.assign(ops.convert_to_numpy(v) * (old / scale))
        self.gate_scale.assign(scale)

    def stepped_weight_names(self):
        """The weights that `step_scale` applies to: `kernel`,
        `recurrent_kernel` and, if used, `bias`."""
        names = ("kernel", "recurrent_kernel")
        return names + ("bias",) if self.use_bias else names

    def set_step_scale(self, scale):
        """Sets `step_scale`, rescaling the stepped weights' variables so
        that the weights, and what the cell computes, stay the same.

        The cell computes with `step_scale * v` for each stepped variable
        `v`, and the gradient reaches `v` as the gradient of the weight
        itself: whatever the optimizer, a step of size `s` on `v` then moves
        the weight by `scale * s`. `trained_weights` gives the weights.

        Args:
            scale: float > 0.
        """
        scale = float(scale)
        if not scale > 0 or not math.isfinite(scale):
            raise ValueError(
                f"`scale` must be a finite number > 0. Received: {scale!r}"
            )
        old = float(ops.convert_to_numpy(self.step_scale))
        if old == scale:
            return
        for name in self.stepped_weight_names():
            v = getattr(self, name)
            v.assign(ops.convert_to_numpy(v) * (old / scale))
        self.step_scale.assign(scale)

    def _stepped(self, variable):
        # Value `step_scale * variable`; gradient as for `variable`.
        value = ops.convert_to_tensor(variable)
        extra = ops.cast(ops.subtract(self.step_scale, 1.0), value.dtype)
        return ops.add(value, ops.stop_gradient(ops.multiply(value, extra)))

    def trained_weights(self):
        """`{name: numpy array}` of the stepped weights as the cell
        computes with them (`step_scale` applied)."""
        scale = 1.0
        if self.has_gates:
            scale = float(ops.convert_to_numpy(self.step_scale))
        return {
            name: ops.convert_to_numpy(getattr(self, name)) * scale
            if scale != 1.0
            else ops.convert_to_numpy(getattr(self, name))
            for name in self.stepped_weight_names()
        }

    def _gate(self, log_alpha, training):
        if log_alpha is None:
            return None
        if training:
            return hard_concrete.sample(log_alpha, seed=self.seed_generator)
        return hard_concrete.eval_gate(log_alpha)

    def gates(self, training=False):
        """Returns `(input_gate, hidden_gate)`, float32, `None` where off.

        In training, one hard-concrete sample per neuron, shared by every
        example and time step of the batch; otherwise the deterministic
        inference gate.
        """
        return tuple(self._gate(la, training) for la in self.log_alphas())

    def keep_probabilities(self):
        """Returns `(P(input gate != 0), P(hidden gate != 0))`, or `None`."""
        return tuple(
            None if la is None else hard_concrete.prob_nonzero(la)
            for la in self.log_alphas()
        )

    @property
    def num_blocks(self):
        return structure.num_blocks(self)

    @property
    def bias_rows(self):
        return structure.bias_rows(self)

    def expected_l0(self):
        """The expected L0 norm that the penalty multiplies.

        `penalty_form="weights"`: the expected number of non-zero weights of
        the gated kernel, recurrent kernel and bias, every gate block counted.
        A kernel weight survives when its input and its unit both do; a
        recurrent weight when both of its units do (one gate on the diagonal).

        `penalty_form="neurons"`: the expected number of surviving gated
        input features and hidden units.
        """
        p_in, p_h = self.keep_probabilities()
        if self.penalty_form == "neurons":
            return sum(ops.sum(p) for p in (p_in, p_h) if p is not None)
        n_in = self.input_dim if p_in is None else ops.sum(p_in)
        if p_h is None:
            n_h = float(self.units)
            recurrent = float(self.units) ** 2
        else:
            n_h = ops.sum(p_h)
            recurrent = n_h * n_h - ops.sum(p_h * p_h) + n_h
        per_block = n_in * n_h + recurrent + self.bias_rows * n_h
        return ops.cast(per_block * self.num_blocks, "float32")

    def penalty(self):
        """`l0_penalty * expected_l0()`, the term added to the loss."""
        return ops.multiply(self.l0_penalty, self.expected_l0())

    def gated_weights(self, input_gate, hidden_gate):
        """Kernels with their rows scaled by the gates, and the stepped
        weights at their `step_scale`."""
        weights = {
            name: self._stepped(getattr(self, name))
            for name in self.stepped_weight_names()
        }
        if input_gate is not None:
            weights["kernel"] = ops.multiply(
                weights["kernel"],
                ops.cast(input_gate, self.compute_dtype)[:, None],
            )
        if hidden_gate is not None:
            weights["recurrent_kernel"] = ops.multiply(
                weights["recurrent_kernel"],
                ops.cast(hidden_gate, self.compute_dtype)[:, None],
            )
        return weights

    @contextlib.contextmanager
    def using_weights(self, weights):
        """Within the block, the cell computes with `weights` in place of
        its own variables of the same names."""
        saved = {name: getattr(self, name) for name in weights}
        for name, value in weights.items():
            object.__setattr__(self, name, value)
        self._gated_weights_active = True
        try:
            yield
        finally:
            for name, value in saved.items():
                object.__setattr__(self, name, value)
            self._gated_weights_active = False

    def scale_output(self, output, hidden_gate):
        if hidden_gate is None:
            return output
        return output * ops.cast(hidden_gate, output.dtype)

    def call(self, inputs, states, training=False):
        if self._gated_weights_active or not self.has_gates:
            return super().call(inputs, states, training=training)
        input_gate, hidden_gate = self.gates(training=False)
        with self.using_weights(self.gated_weights(input_gate, hidden_gate)):
            output, new_states = super().call(inputs, states, training=training)
        return self.scale_output(output, hidden_gate), new_states

    def gate_config(self):
        return {
            "input_gates": self.input_gates,
            "hidden_gates": self.hidden_gates,
            "l0_penalty": self.initial_l0_penalty,
            "penalty_form": self.penalty_form,
            "initial_keep_probability": self.initial_keep_probability,
        }

    def get_config(self):
        return {**super().get_config(), **self.gate_config()}


class _SettingOutsideCall:
    """A layer's `use_cudnn` as seen from outside its call (see below)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return repr(self.value)


class GatedRNNMixin:
    """The layer side: gates drawn once per batch, penalty added once.

    Mixed in before a Keras recurrent layer class (`LSTM`, `GRU`,
    `SimpleRNN`) whose `cell` is a gated cell.
    """

    def _init_rnn(self, cell, use_cudnn=None, **rnn_kwargs):
        RNN.__init__(self, cell, **rnn_kwargs)
        self.input_spec = InputSpec(ndim=3)
        if use_cudnn is None:
            return
        if use_cudnn not in ("auto", True, False):
            raise ValueError(
                "Invalid value received for argument `use_cudnn`. "
                "Expected one of {'auto', True, False}. "
                f"Received: use_cudnn={use_cudnn}"
            )
        self.use_cudnn = use_cudnn
        if backend.backend() == "tensorflow" and use_cudnn in (True, "auto"):
            from keras.src.backend.tensorflow.rnn import cudnn_ok

            kwargs = {}
            if hasattr(cell, "reset_after"):
                kwargs["reset_after"] = cell.reset_after
            if cudnn_ok(
                cell.activation,
                cell.recurrent_activation,
                self.unroll,
                cell.use_bias,
                **kwargs,
            ):
                self.supports_jit = False

    @property
    def use_cudnn(self):
        # `keras.layers.Bidirectional` sends an LSTM/GRU pair whose
        # `use_cudnn` is True or "auto" through a fused kernel that reads the
        # raw cell weights, skipping the gates and the penalty. Outside its
        # own call the layer shows its setting wrapped, which that check
        # rejects, so each gated direction is called instead.
        if self.cell._gated_weights_active:
            return self._use_cudnn
        return _SettingOutsideCall(self._use_cudnn)

    @use_cudnn.setter
    def use_cudnn(self, value):
        if isinstance(value, _SettingOutsideCall):
            value = value.value
        self._use_cudnn = value

    @property
    def input_gates(self):
        return self.cell.input_gates

    @property
    def hidden_gates(self):
        return self.cell.hidden_gates

    @property
    def penalty_form(self):
        return self.cell.penalty_form

    @property
    def initial_keep_probability(self):
        return self.cell.initial_keep_probability

    @property
    def l0_penalty(self):
        """The current λ: a non-trainable float32 variable, or `None`."""
        return getattr(self.cell, "l0_penalty", None)

    def call(self, sequences, initial_state=None, mask=None, training=False):
        cell = self.cell
        if not cell.has_gates:
            return super().call(
                sequences,
                initial_state=initial_state,
                mask=mask,
                training=training,
            )
        input_gate, hidden_gate = cell.gates(training=bool(training))
        self.add_loss(cell.penalty())
        with cell.using_weights(cell.gated_weights(input_gate, hidden_gate)):
            result = super().call(
                sequences,
                initial_state=initial_state,
                mask=mask,
                training=training,
            )
        if self.return_state:
            return (cell.scale_output(result[0], hidden_gate), *result[1:])
        return cell.scale_output(result, hidden_gate)

    def get_config(self):
        return {**super().get_config(), **self.cell.gate_config()}
