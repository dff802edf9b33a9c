"""ISS baseline: group lasso on Intrinsic Sparse Structures, then a cut.

Wen et al. (2018), "Learning Intrinsic Sparse Structures within Long
Short-Term Memory" (ICLR). An ISS component is everything that goes with
one neuron: for a hidden unit of an LSTM its column in every gate block of
the kernel, recurrent kernel and bias, its recurrent-kernel row and the row
of the next layer's kernel that reads it; for an embedding dimension its
embedding column and the first LSTM's kernel row. These are exactly the
groups of `ptb_lm.neuron_norms` (each weight counted once).

The prune phase trains a trained dense model on the data loss plus
`λ · Σ_groups ‖w_g‖₂` (`GroupLassoModel`). Then the groups are ranked by
norm and the model is cut to the requested sizes (`cut`, i.e.
`ptb_lm.magnitude_prune`: `fixed_gate_model` + `keras_l0.shrink`), and the
slim plain model is fine-tuned without the penalty.

Nothing here imports TensorFlow: the penalty is computed with `keras.ops`
on the training model's own variables, so it trains on TensorFlow and JAX.
"""

import numpy as np
from keras import ops

import ptb_lm

NAME = "iss"
# λ per unit of group norm, in units of the mean token loss: the ISS
# authors' PTB value (global_decay 0.00245 in wenwei202/iss-rnns,
# ptb/structure_grouplasso.json, on a loss summed over 35 steps) divided by
# 35. On a PTB small dense model Σ‖w_g‖₂ is about 7e3 (600 groups), so the
# penalty starts near 0.5, about a tenth of a loss of about 5.
DEFAULT_GROUP_LASSO = 7e-5
# Inside the square root: a finite gradient for a group of all zeros.
EPSILON = 1e-12


def weighted_layers(layers):
    """The layers of a chain that own weights, checked to be a plain
    Embedding -> LSTM ... -> Dense chain.

    Args:
        layers: `ptb_lm.chain_layers(model)` or `CarriedStateModel.stack`.

    Raises:
        ValueError: the chain is not a plain Embedding -> LSTM -> Dense one.
    """
    layers = [layer for layer in layers if layer.weights]
    ptb_lm.check_plain_chain(layers)
    return layers


def group_square_norms(layers):
    """The squared L2 norm of every ISS group, as `keras.ops` tensors.

    The same groups and values as `ptb_lm.neuron_norms` (squared), but
    differentiable and read from the layers' variables, so that it can sit
    inside a training step on any backend.

    Args:
        layers: the layers of a plain chain (`chain_layers(model)` or
            `CarriedStateModel.stack`).

    Returns:
        A list of 1-D tensors: embedding dimensions, then one per LSTM.
    """
    layers = weighted_layers(layers)
    squares = []
    for index, layer in enumerate(layers[:-1]):
        consumer = ptb_lm._consumer(layers, index)
        total = ops.sum(ops.square(consumer.kernel.value), axis=1)
        if ptb_lm.is_recurrent(layer):
            cell = layer.cell
            units = cell.units
            kernel = ops.square(cell.kernel.value)
            recurrent = ops.square(cell.recurrent_kernel.value)
            bias = ops.square(cell.bias.value)
            blocks = ops.reshape(recurrent, (units, -1, units))
            total = (
                total
                + ops.sum(ops.reshape(kernel, (-1, units)), 0)
                + ops.sum(blocks, (0, 1))
                + ops.sum(ops.reshape(bias, (-1, units)), 0)
                + ops.sum(recurrent, 1)
                # The recurrent weights from a unit to itself are in both
                # its column and its row.
                - ops.diagonal(ops.sum(blocks, 1))
            )
        else:
            total = total + ops.sum(ops.square(layer.embeddings.value), 0)
        squares.append(total)
    return squares


def group_lasso(layers):
    """`Σ_groups ‖w_g‖₂` over every ISS group of a plain chain, a scalar
    tensor (`group_square_norms`)."""
    return sum(
        ops.sum(ops.sqrt(ops.maximum(squares, 0.0) + EPSILON))
        for squares in group_square_norms(layers)
    )


class GroupLassoModel(ptb_lm.CarriedStateModel):
    """`CarriedStateModel` trained on the data loss plus λ · group lasso.

    The penalty is added in `compute_loss` during training only, so the
    reported `loss` of a training epoch includes it while validation and the
    `nll` metric are the data loss alone.

    Args:
        model: a plain chain model (`ptb_lm.build_model`, ungated).
        batch_size: int, the parallel streams.
        penalty: float, λ in units of the mean token loss.
    """

    def __init__(self, model, batch_size, penalty, **kwargs):
        self.penalty = float(penalty)
        super().__init__(model, batch_size, **kwargs)
        weighted_layers(self.stack)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        loss = super().compute_loss(
            x, y, y_pred, sample_weight, training=training
        )
        if training and self.penalty:
            loss = loss + self.penalty * group_lasso(self.stack)
        return loss


def cut(model, keep):
    """The slim plain model of the `keep` largest ISS groups of every kind.

    Args:
        model: the plain chain after the group-lasso phase.
        keep: kept embedding dimensions, then kept units of every LSTM.

    Returns:
        `(slim_model, kept)` as `ptb_lm.magnitude_prune` returns them.

    Raises:
        ValueError: bad `keep` or not a plain chain.
    """
    return ptb_lm.magnitude_prune(model, keep)


def lstm_params(model):
    """Parameters of the LSTM layers of a (slim) plain chain."""
    return sum(
        layer.count_params()
        for layer in ptb_lm.chain_layers(model)
        if ptb_lm.is_recurrent(layer)
    )


class ISS:
    """The ISS method for `ptb_baseline.py`.

    Args:
        keep: kept sizes: embedding dimensions, then units of every LSTM.
        penalty: λ of the group lasso (`--group-lasso`).
    """

    name = NAME

    def __init__(self, keep, penalty=DEFAULT_GROUP_LASSO):
        self.keep = list(keep)
        self.penalty = float(penalty)

    def check(self, model, state):
        """Raises `ValueError` where `model` cannot be cut to `keep`."""
        sizes = [len(group) for group in ptb_lm.neuron_norms(model)]
        if len(self.keep) != len(sizes) or not all(
            1 <= k <= size for k, size in zip(self.keep, sizes)
        ):
            raise ValueError(
                f"--keep needs {len(sizes)} sizes in [1, {sizes}] "
                f"(embedding, then each LSTM). Received: {self.keep}"
            )

    def training_model(self, plain, batch_size, phase, epoch, epochs, state):
        """The model that trains one epoch of `phase` ("prune" or
        "finetune")."""
        if phase == "prune":
            return GroupLassoModel(plain, batch_size, self.penalty)
        return ptb_lm.CarriedStateModel(plain, batch_size)

    def epoch_logs(self, carried):
        """Extra entries of an epoch's history line."""
        norms = [
            np.sqrt(np.maximum(ops.convert_to_numpy(squares), 0.0))
            for squares in group_square_norms(carried.stack)
        ]
        return dict(group_norm_sum=float(sum(np.sum(n) for n in norms)))

    def end_prune(self, plain, state):
        """The model the fine-tuning starts from: `plain` cut to `keep`."""
        norms = ptb_lm.neuron_norms(plain)
        slim, kept = cut(plain, self.keep)
        state["kept"] = [k.tolist() for k in kept]
        state["cut_norms"] = [
            dict(
                kept_min=float(np.min(n[k])),
                dropped_max=(
                    float(np.max(np.delete(n, k))) if len(k) < len(n) else None
                ),
            )
            for n, k in zip(norms, kept)
        ]
        return slim

    def results(self, plain, state):
        """Extra keys of results.json."""
        return dict(
            method=NAME,
            lstm_params=lstm_params(plain),
            keep=self.keep,
            group_lasso=self.penalty,
            cut_norms=state.get("cut_norms"),
            choices=choices(self.penalty),
        )


def choices(penalty):
    """One sentence for every choice the ISS paper leaves open."""
    return [
        "The ISS paper zeroes weights below a threshold during training and "
        "lets λ decide the sizes; here the sizes are fixed to the gated "
        "model's (--keep) so that the comparison is at equal size: after "
        "the group-lasso phase the groups of lowest L2 norm of every layer "
        "are removed (ptb_lm.magnitude_prune: fixed_gate_model + "
        "keras_l0.shrink) and the slim model is fine-tuned.",
        "Besides the hidden units (gate columns of kernel, recurrent kernel "
        "and bias, recurrent row, and the next LSTM's or the softmax's "
        "kernel row, as in the authors' PTB code), every embedding "
        "dimension is a group too (embedding column and first-LSTM kernel "
        "row), so that the embedding is cut to the gated model's size.",
        "Every weight of a group is counted once (the authors' code counts "
        "a unit's self-recurrent weights in both its row and its column); "
        "the softmax bias is in no group; the groups get no size weighting.",
        f"λ = {penalty:g} per unit of group norm on the per-token mean "
        "loss; the default 7e-5 is the authors' PTB value (global_decay "
        "0.00245 on a loss summed over 35 steps, wenwei202/iss-rnns) divided "
        "by 35, which makes the penalty about a tenth of the loss at the "
        "start on a trained PTB small model (Σ‖w_g‖₂ ≈ 7e3 over 600 groups) "
        "and shrinks every group norm by lr·35·λ ≈ 6e-4 per step.",
        "The penalty is minimised by plain (sub)gradient SGD with ε = 1e-12 "
        "inside each square root, without proximal steps or zeroing, and is "
        "not applied during fine-tuning.",
    ]
