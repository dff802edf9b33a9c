"""DARB baseline: density-adaptive regular-block pruning of LSTM weights.

Ren et al. (2019), "DARB: A Density-Adaptive Regular-Block Pruning for Deep
Neural Networks". Every row of a weight matrix (here: the weights into one
gate pre-activation, i.e. a column of a Keras LSTM kernel or recurrent
kernel, a row of W in `W x`) keeps as many weights `k_r` as unstructured
magnitude pruning at the same density would keep in it; the row is split
into `k_r` contiguous regular blocks whose sizes differ by at most one, and
only the weight of largest magnitude of every block survives. Biases stay
dense; the embedding and the softmax layer are not pruned.

The masks hold exactly during training: the training model's kernel and
recurrent-kernel variables get a `MaskConstraint`, which Keras 3 optimizers
apply after every update (`BaseOptimizer.apply`, also in JAX's stateless
path). A constraint is traced into the compiled step, so a new mask needs a
new training model (`ptb_baseline.py` builds one per epoch). The saved
model is a plain dense LSTM chain whose pruned weights are exact zeros; it
is not smaller.

Nothing here imports TensorFlow.
"""

import keras
import numpy as np
from keras import ops

import ptb_lm

NAME = "darb"
THRESHOLDS = ("global", "matrix")


def gated_lstm_params(keep):
    """Parameters of the LSTMs of a plain chain of sizes `keep`
    (embedding, then the units of every LSTM), biases included."""
    inputs, *units = [int(size) for size in keep]
    total = 0
    for width in units:
        total += 4 * width * (inputs + width + 1)
        inputs = width
    return total


def lstm_cells(layers):
    """The LSTM cells of a plain chain (`chain_layers` or `.stack`)."""
    layers = [layer for layer in layers if layer.weights]
    ptb_lm.check_plain_chain(layers)
    return [layer.cell for layer in layers if ptb_lm.is_recurrent(layer)]


def lstm_variables(layers):
    """The pruned variables: kernel and recurrent kernel of every LSTM."""
    return [
        variable
        for cell in lstm_cells(layers)
        for variable in (cell.kernel, cell.recurrent_kernel)
    ]


def matrix_target(lstm_params, layers):
    """The kept kernel and recurrent weights for `lstm_params` LSTM
    parameters in all, the (dense) biases of `layers` deducted.

    Raises:
        ValueError: the target is negative or above the matrices' size.
    """
    cells = lstm_cells(layers)
    biases = sum(int(np.prod(cell.bias.shape)) for cell in cells)
    size = sum(int(np.prod(v.shape)) for v in lstm_variables(layers))
    target = int(lstm_params) - biases
    if not 0 <= target <= size:
        raise ValueError(
            f"{lstm_params} LSTM parameters leave {target} kernel weights "
            f"beside the {biases} biases; the kernels hold {size}"
        )
    return target


def _split(count, sizes):
    """`count` split over parts of `sizes` in proportion, largest
    remainders first, summing to `count` exactly."""
    sizes = np.asarray(sizes, dtype=np.int64)
    exact = count * sizes / sizes.sum()
    parts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - parts), kind="stable")
    parts[order[: count - parts.sum()]] += 1
    return parts


def row_counts(matrices, count, threshold="global"):
    """Weights per row that unstructured magnitude pruning to `count`
    weights keeps.

    Rows are the output units: the columns of a Keras kernel `(in, out)`.

    Args:
        matrices: list of 2-D numpy arrays.
        count: int, weights kept in all.
        threshold: "global" (one magnitude ranking over all matrices) or
            "matrix" (every matrix keeps its proportional share, ranked
            within it).

    Returns:
        A list of int arrays, one count per column of every matrix; they
        sum to `count`.
    """
    if threshold not in THRESHOLDS:
        raise ValueError(f"threshold must be one of {THRESHOLDS}")
    if threshold == "matrix":
        shares = _split(count, [m.size for m in matrices])
        return [
            row_counts([m], int(share))[0] for m, share in zip(matrices, shares)
        ]
    magnitude = np.concatenate([np.abs(m).ravel() for m in matrices])
    selected = np.zeros(magnitude.size, bool)
    # Stable: ties go to the earlier weight.
    selected[np.argsort(-magnitude, kind="stable")[:count]] = True
    counts, start = [], 0
    for m in matrices:
        counts.append(
            selected[start : start + m.size].reshape(m.shape).sum(axis=0)
        )
        start += m.size
    return counts


def block_ids(n, k):
    """The regular block of each of `n` positions split into `k >= 1`
    contiguous blocks whose sizes differ by at most one."""
    return (np.arange(n) * k) // n


def block_max_mask(matrix, counts):
    """The DARB mask of one matrix.

    Column `c` (a row of W) is split into `counts[c]` regular blocks
    (`block_ids`) and keeps the weight of largest |w| of each (ties: the
    first).

    Args:
        matrix: 2-D numpy array `(n, rows)`.
        counts: int array, kept weights per column, each in `[0, n]`.

    Returns:
        A boolean array of `matrix`'s shape.
    """
    n, rows = matrix.shape
    counts = np.asarray(counts)
    if counts.shape != (rows,) or counts.min() < 0 or counts.max() > n:
        raise ValueError(f"Need {rows} counts in [0, {n}], got {counts}")
    mask = np.zeros(matrix.shape, bool)
    columns = np.nonzero(counts)[0]
    if not len(columns):
        return mask
    blocks = (np.arange(n)[:, None] * counts[columns][None, :]) // n
    group = (np.arange(len(columns))[None, :] * n + blocks).T.ravel()
    magnitude = np.abs(matrix[:, columns]).T.ravel()
    order = np.lexsort((-magnitude, group))
    first = order[np.r_[True, np.diff(group[order]) != 0]]
    column, position = np.divmod(first, n)
    mask[position, columns[column]] = True
    return mask


def darb_masks(matrices, count, threshold="global"):
    """The DARB masks that keep `count` weights of `matrices` in all."""
    return [
        block_max_mask(m, c)
        for m, c in zip(matrices, row_counts(matrices, count, threshold))
    ]


def density_schedule(epoch, epochs, final):
    """Density of prune epoch `epoch` (0-based) of `epochs`: the cubic
    schedule of Zhu & Gupta (2017), reaching `final` in the last epoch."""
    progress = min(epoch + 1, epochs) / epochs
    return final + (1.0 - final) * (1.0 - progress) ** 3


class MaskConstraint(keras.constraints.Constraint):
    """Multiplies a variable by a fixed 0/1 mask (after every update).

    Args:
        mask: boolean numpy array of the variable's shape.
    """

    def __init__(self, mask):
        self.mask = np.asarray(mask, "float32")

    def __call__(self, w):
        return w * ops.cast(self.mask, w.dtype)


def apply_masks(layers, masks, constrain=True):
    """Zeroes the pruned weights of a chain's LSTMs and, with
    `constrain`, keeps them zero through training (`MaskConstraint`).

    Args:
        layers: `chain_layers(model)` or `CarriedStateModel.stack`.
        masks: one boolean array per `lstm_variables(layers)`.
        constrain: set the variables' constraints.
    """
    for variable, mask in zip(lstm_variables(layers), masks, strict=True):
        constraint = MaskConstraint(mask)
        variable.assign(constraint(ops.convert_to_numpy(variable.value)))
        if constrain:
            variable.constraint = constraint


def lstm_nonzeros(layers):
    """Nonzero LSTM parameters of a chain, biases included."""
    return sum(
        int(np.count_nonzero(ops.convert_to_numpy(v.value)))
        for cell in lstm_cells(layers)
        for v in (cell.kernel, cell.recurrent_kernel, cell.bias)
    )


def _numpy(variables):
    return [ops.convert_to_numpy(v.value) for v in variables]


class DARB:
    """The DARB method for `ptb_baseline.py`.

    Args:
        keep: sizes of the gated model to match (embedding, then LSTM
            units), or None with `lstm_params`.
        lstm_params: LSTM parameters (biases included) to keep, instead of
            those of `keep`.
        threshold: "global" or "matrix" (`row_counts`).
    """

    name = NAME

    def __init__(self, keep=None, lstm_params=None, threshold="global"):
        self.keep = None if keep is None else list(keep)
        self.lstm_params = (
            gated_lstm_params(keep) if lstm_params is None else int(lstm_params)
        )
        self.threshold = threshold

    def check(self, model, state):
        """Checks `model` and records the target in `state`.

        Raises:
            ValueError: `model` is not a plain chain, `keep` does not fit
                it or the target does not.
        """
        layers = ptb_lm.chain_layers(model)
        cells = lstm_cells(layers)
        if self.keep is not None:
            sizes = [int(cells[0].kernel.shape[0])] + [c.units for c in cells]
            if len(self.keep) != len(sizes) or not all(
                1 <= k <= s for k, s in zip(self.keep, sizes)
            ):
                raise ValueError(
                    f"--keep needs {len(sizes)} sizes in [1, {sizes}] "
                    f"(embedding, then each LSTM). Received: {self.keep}"
                )
        state["target"] = matrix_target(self.lstm_params, layers)
        state["matrix_weights"] = sum(
            int(np.prod(v.shape)) for v in lstm_variables(layers)
        )

    def schedule(self, phase, epoch, epochs, state):
        """`(density, kept weights)` of an epoch of `phase`."""
        target, size = state["target"], state["matrix_weights"]
        if phase != "prune" or epoch + 1 >= epochs:
            return target / size, target
        density = density_schedule(epoch, epochs, target / size)
        return density, int(round(density * size))

    def training_model(self, plain, batch_size, phase, epoch, epochs, state):
        """A training model for one epoch, its masks recomputed from the
        current weights at the epoch's density and held by constraints."""
        carried = ptb_lm.CarriedStateModel(plain, batch_size)
        density, count = self.schedule(phase, epoch, epochs, state)
        masks = darb_masks(
            _numpy(lstm_variables(carried.stack)), count, self.threshold
        )
        apply_masks(carried.stack, masks)
        self.current = dict(density=density, kept=count)
        return carried

    def epoch_logs(self, carried):
        return dict(
            self.current, lstm_nonzeros=lstm_nonzeros(carried.stack)
        )

    def end_prune(self, plain, state):
        """The model the fine-tuning starts from: `plain` masked at the
        final density (a no-op after a gradual prune phase; the one-shot
        pruning without one)."""
        layers = ptb_lm.chain_layers(plain)
        masks = darb_masks(
            _numpy(lstm_variables(layers)), state["target"], self.threshold
        )
        apply_masks(layers, masks, constrain=False)
        return plain

    def results(self, plain, state):
        return dict(
            method=NAME,
            lstm_params=lstm_nonzeros(ptb_lm.chain_layers(plain)),
            target_lstm_params=self.lstm_params,
            keep=self.keep,
            threshold=self.threshold,
            choices=choices(self.threshold),
        )


def choices(threshold):
    """One sentence for every choice the DARB paper leaves open."""
    scope = (
        "one global magnitude threshold over the kernels and recurrent "
        "kernels of both LSTMs, so that magnitude decides how the budget "
        "is spread over the matrices"
        if threshold == "global"
        else "a threshold per matrix, every matrix keeping the same density"
    )
    return [
        "The target is the gated model's LSTM parameter count for the --keep "
        "sizes, biases included (or --lstm-params); the dense biases are "
        "deducted, so the kernel and recurrent-kernel weights kept are that "
        "count minus the biases and the nonzero LSTM parameters match the "
        "gated and ISS models'.",
        f"The row densities come from unstructured magnitude pruning with "
        f"{scope} (--threshold), ties to the earlier weight.",
        "A row is the weights into one gate pre-activation (one row of W in "
        "W·x, i.e. a column of the Keras kernel and of the recurrent kernel, "
        "pruned as two separate rows), as DARB describes rows for "
        "matrix-vector products.",
        "A row of n weights with k kept is split into k contiguous blocks, "
        "position i in block floor(i·k/n) (sizes differ by at most one), "
        "and keeps the first weight of largest |w| of every block.",
        "Gradual pruning: the density follows the cubic schedule of Zhu & "
        "Gupta (2017) over the prune epochs (reaching the target in the "
        "last one), the masks are recomputed from the current weights at "
        "every epoch start, then the masks at the target density hold "
        "through the fine-tune epochs (with no prune epochs: one-shot "
        "pruning, then fine-tuning).",
        "The masks hold exactly through every update through Keras variable "
        "constraints (applied by the optimizer after each step); pruned "
        "weights may come back only when a later mask selects them.",
        "Biases, the embedding and the softmax layer stay dense, as DARB "
        "prunes the LSTM weight matrices.",
        "DARB does not shrink the model: the saved model is the dense LSTM "
        "chain with exact zeros, which LiteRT runs as masked dense weights, "
        "so its params and latency are the dense model's.",
    ]
