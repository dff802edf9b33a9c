import keras
from keras.layers import LSTM
from keras.layers import LSTMCell

from keras_l0.layers.gating import GatedCellMixin
from keras_l0.layers.gating import GatedRNNMixin
from keras_l0.layers.gating import DEFAULT_KEEP_PROBABILITY
from keras_l0.layers.gating import DEFAULT_L0_PENALTY


@keras.saving.register_keras_serializable(package="keras_l0")
class GatedLSTMCell(GatedCellMixin, LSTMCell):
    """The cell of `GatedLSTM`: `keras.layers.LSTMCell` with L0 gates.

    Used on its own (e.g. in `keras.layers.RNN`) the cell applies the
    deterministic inference gates at every step and adds no penalty. Train
    with `GatedLSTM`, which draws one gate sample per batch and adds the L0
    penalty once per forward pass.

    Args:
        units: Positive integer, dimensionality of the output space.
        input_gates, hidden_gates, l0_penalty, penalty_form,
        initial_keep_probability: the gate arguments, as in `GatedLSTM`.
        **kwargs: every other argument of `keras.layers.LSTMCell`.

    Example:

    >>> rnn = keras.layers.RNN(keras_l0.GatedLSTMCell(8))
    >>> rnn(np.zeros((2, 5, 3))).shape
    (2, 8)
    """


@keras.saving.register_keras_serializable(package="keras_l0")
class GatedLSTM(GatedRNNMixin, LSTM):
    """`keras.layers.LSTM` whose input and hidden neurons carry L0 gates.

    A drop-in replacement for `keras.layers.LSTM` (same arguments and
    defaults) after Wen et al., "Structured Pruning of RNNs through Neuron
    Selection" (2019). In training, each input feature and each hidden unit
    is multiplied by a hard-concrete gate drawn once per batch, and
    `l0_penalty * E[L0]` is added to the model's losses once per forward
    pass. At inference the deterministic gates are used; a gate that is 0
    removes its neuron, which `keras_l0.shrink` then cuts out.

    The gates scale the kernel rows and the recurrent-kernel rows, and the
    layer then runs the `keras.layers.LSTM` inner loop, so the backend's
    fused cuDNN kernel is used where Keras would use it. The output is
    scaled by the hidden gates; returned states are the raw cell states.

    Args:
        units: Positive integer, dimensionality of the output space.
        input_gates: Boolean, one gate per input feature. Default `True`.
        hidden_gates: Boolean, one gate per hidden unit. Default `True`.
        l0_penalty: Float λ >= 0: loss added per expected surviving weight
            (`penalty_form="weights"`) or per expected surviving neuron
            (`penalty_form="neurons"`), in the units of the model's loss
            (a per-example mean for the usual Keras losses). Default 1e-5.
            Held in a non-trainable variable so that callbacks can change it.
        penalty_form: `"weights"` (default): the expected number of
            non-zero weights of the kernel, recurrent kernel and bias, every
            gate block counted, products of two hidden gates in the recurrent
            kernel. `"neurons"`: the expected number of surviving neurons.
        initial_keep_probability: P(gate != 0) at initialisation
            (default 0.9999: log α 7.6, inference gate exactly 1, 0.2%
            of training samples below 1): the network starts as the plain
            layer would, and λ or a `BudgetController` decides what closes.
        activation, recurrent_activation, use_bias, kernel_initializer,
        recurrent_initializer, bias_initializer, unit_forget_bias,
        kernel_regularizer, recurrent_regularizer, bias_regularizer,
        activity_regularizer, kernel_constraint, recurrent_constraint,
        bias_constraint, dropout, recurrent_dropout, seed, return_sequences,
        return_state, go_backwards, stateful, unroll, use_cudnn: as in
            `keras.layers.LSTM`. `seed` also seeds the gate samples.

    Call arguments:
        inputs: A 3D tensor, with shape `(batch, timesteps, feature)`.
        mask: Binary tensor of shape `(samples, timesteps)`, as in
            `keras.layers.LSTM`.
        training: Python boolean: sample gates (`True`) or use the
            deterministic inference gates.
        initial_state: List of initial state tensors (optional).

    Example:

    ```python
    inputs = keras.Input((None, 16))
    x = keras_l0.GatedLSTM(64, l0_penalty=1e-5)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile("adam", "mse")
    model.fit(x_train, y_train, callbacks=[keras_l0.callbacks.GateMonitor()])
    keras_l0.summary(model)
    slim = keras_l0.shrink(model)  # plain keras.layers.LSTM, fewer units
    ```
    """

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        use_cudnn="auto",
        input_gates=True,
        hidden_gates=True,
        l0_penalty=DEFAULT_L0_PENALTY,
        penalty_form="weights",
        initial_keep_probability=DEFAULT_KEEP_PROBABILITY,
        **kwargs,
    ):
        cell = GatedLSTMCell(
            units,
            input_gates=input_gates,
            hidden_gates=hidden_gates,
            l0_penalty=l0_penalty,
            penalty_form=penalty_form,
            initial_keep_probability=initial_keep_probability,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            unit_forget_bias=unit_forget_bias,
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
            dtype=kwargs.get("dtype", None),
            trainable=kwargs.get("trainable", True),
            name="gated_lstm_cell",
            seed=seed,
            implementation=kwargs.pop("implementation", 2),
        )
        self._init_rnn(
            cell,
            use_cudnn=use_cudnn,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )
