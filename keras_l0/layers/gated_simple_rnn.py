import keras
from keras.layers import SimpleRNN
from keras.layers import SimpleRNNCell

from keras_l0.layers.gating import DEFAULT_KEEP_PROBABILITY
from keras_l0.layers.gating import DEFAULT_L0_PENALTY
from keras_l0.layers.gating import GatedCellMixin
from keras_l0.layers.gating import GatedRNNMixin


@keras.saving.register_keras_serializable(package="keras_l0")
class GatedSimpleRNNCell(GatedCellMixin, SimpleRNNCell):
    """The cell of `GatedSimpleRNN`: `keras.layers.SimpleRNNCell`, L0 gates.

    Used on its own (e.g. in `keras.layers.RNN`) the cell applies the
    deterministic inference gates at every step and adds no penalty. Train
    with `GatedSimpleRNN`, which draws one gate sample per batch and adds
    the L0 penalty once per forward pass.

    Args:
        units: Positive integer, dimensionality of the output space.
        input_gates, hidden_gates, l0_penalty, penalty_form,
        initial_keep_probability: the gate arguments of `GatedSimpleRNN`.
        **kwargs: every other argument of `keras.layers.SimpleRNNCell`.

    Example:

    >>> rnn = keras.layers.RNN(keras_l0.GatedSimpleRNNCell(8))
    >>> rnn(np.zeros((2, 5, 3))).shape
    (2, 8)
    """


@keras.saving.register_keras_serializable(package="keras_l0")
class GatedSimpleRNN(GatedRNNMixin, SimpleRNN):
    """`keras.layers.SimpleRNN` whose input and hidden neurons carry L0 gates.

    A drop-in replacement for `keras.layers.SimpleRNN` (same arguments and
    defaults). See `GatedLSTM` for how the gates and the penalty work.

    Args:
        units: Positive integer, dimensionality of the output space.
        input_gates: Boolean, one gate per input feature. Default `True`.
        hidden_gates: Boolean, one gate per hidden unit. Default `True`.
        l0_penalty: Float λ >= 0, loss per expected surviving weight
            (or neuron, with `penalty_form="neurons"`). Default 1e-5.
        penalty_form: `"weights"` (default) or `"neurons"`.
        initial_keep_probability: P(gate != 0) at initialisation (0.9999).
        activation, use_bias, kernel_initializer, recurrent_initializer,
        bias_initializer, kernel_regularizer, recurrent_regularizer,
        bias_regularizer, activity_regularizer, kernel_constraint,
        recurrent_constraint, bias_constraint, dropout, recurrent_dropout,
        return_sequences, return_state, go_backwards, stateful, unroll,
        seed: as in `keras.layers.SimpleRNN`.

    Call arguments:
        inputs: A 3D tensor, with shape `(batch, timesteps, feature)`.
        mask: Binary tensor of shape `(samples, timesteps)` (optional).
        training: Python boolean: sample gates (`True`) or use the
            deterministic inference gates.
        initial_state: List of initial state tensors (optional).

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((None, 16)),
        keras_l0.GatedSimpleRNN(32, l0_penalty=1e-4),
        keras.layers.Dense(1),
    ])
    model.compile("adam", "mse")
    ```
    """

    def __init__(
        self,
        units,
        activation="tanh",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        seed=None,
        input_gates=True,
        hidden_gates=True,
        l0_penalty=DEFAULT_L0_PENALTY,
        penalty_form="weights",
        initial_keep_probability=DEFAULT_KEEP_PROBABILITY,
        **kwargs,
    ):
        cell = GatedSimpleRNNCell(
            units,
            input_gates=input_gates,
            hidden_gates=hidden_gates,
            l0_penalty=l0_penalty,
            penalty_form=penalty_form,
            initial_keep_probability=initial_keep_probability,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            dtype=kwargs.get("dtype", None),
            trainable=kwargs.get("trainable", True),
            name="gated_simple_rnn_cell",
        )
        self._init_rnn(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )
