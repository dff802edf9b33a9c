"""Linear dynamical systems of weight vectors, their distance, and the
similarity pruning of the LDS baseline (`ptb_lds.py`). Pure numpy.

A neuron's weights are read as a multichannel signal `y` of shape
`(channels, time)` (`embedding_signals`, `lstm_signals`) and modelled by an
output-only linear dynamical system of order `r`

    x[t + 1] = A x[t],    y[t] = C x[t] (+ noise),

identified by subspace identification (`fit_lds`): the block Hankel matrix
of the signal, its rank-`r` SVD `U S V^T`, the extended observability
matrix `O = U_r S_r^(1/2)` (so `C` is its first block row and `A` follows
from its shift invariance by least squares) and the state sequence
`X = S_r^(1/2) V_r^T`. Two systems are compared by a Martin-type distance
(`martin_distances`): `-sum log cos^2` of the principal angles between
their finite-horizon observability subspaces `[C; CA; ...; CA^(h-1)]`. It
does not change when a signal is scaled or the state basis changes, and
it is 0 for two signals of the same system. `prune_similar` removes,
while the group is above its target size, the neuron of smaller weight
norm from the currently most similar pair.
"""

import dataclasses
import math

import numpy as np


@dataclasses.dataclass
class LDS:
    """An identified system: `A (r, r)`, `C (channels, r)` and the states
    `X (r, columns)` of the Hankel columns (`X[:, t]` is `x[t]`)."""

    A: np.ndarray
    C: np.ndarray
    states: np.ndarray

    def reconstruct(self):
        """`C x[t]` for the identified states: `(channels, columns)`."""
        return self.C @ self.states

    def simulate(self, steps):
        """`C A^t x[0]` for `t < steps`: the noise-free output."""
        x = self.states[:, 0]
        out = []
        for _ in range(steps):
            out.append(self.C @ x)
            x = self.A @ x
        return np.stack(out, axis=1)

    def observability(self, horizon):
        """`[C; CA; ...; CA^(horizon-1)]`, `(horizon * channels, r)`."""
        blocks, block = [], self.C
        for _ in range(horizon):
            blocks.append(block)
            block = block @ self.A
        return np.concatenate(blocks, axis=0)


def hankel_depth(order, channels):
    """Block rows of the Hankel matrix: enough that the shifted
    observability matrix (`depth - 1` blocks) has at least `order` rows
    and the whole at least `2 * order`."""
    return max(math.ceil(order / channels) + 1, math.ceil(2 * order / channels))


def hankel(y, depth):
    """The block Hankel matrix `(depth * channels, time - depth + 1)` of
    `y (channels, time)`: column `t` stacks `y[:, t], ..., y[:, t+depth-1]`."""
    y = np.asarray(y, dtype="float64")
    channels, time = y.shape
    columns = time - depth + 1
    if columns < 1:
        raise ValueError(f"A signal of {time} samples is shorter than {depth}")
    return np.concatenate([y[:, i : i + columns] for i in range(depth)], 0)


def fit_lds(y, order, depth=None):
    """Identifies an order-`order` LDS from one signal `y (channels, time)`.

    Args:
        y: 2-D array, channels by time (a 1-D array is one channel).
        order: int, the state dimension `r`.
        depth: block rows of the Hankel matrix (default `hankel_depth`).

    Returns:
        An `LDS`.
    """
    y = np.atleast_2d(np.asarray(y, dtype="float64"))
    channels = y.shape[0]
    depth = depth or hankel_depth(order, channels)
    if (depth - 1) * channels < order:
        raise ValueError(
            f"Hankel depth {depth} is too small for order {order} with "
            f"{channels} channels"
        )
    u, s, vt = np.linalg.svd(hankel(y, depth), full_matrices=False)
    r = min(order, s.size)
    root = np.sqrt(s[:r])
    observability = u[:, :r] * root
    states = root[:, None] * vt[:r]
    if r < order:  # fewer Hankel columns than the order: pad with zeros
        observability = np.pad(observability, ((0, 0), (0, order - r)))
        states = np.pad(states, ((0, order - r), (0, 0)))
    a = np.linalg.pinv(observability[:-channels]) @ observability[channels:]
    return LDS(A=a, C=observability[:channels], states=states)


def orthonormal_basis(matrix):
    """An orthonormal basis `(rows, columns)` of the column space (QR)."""
    q, _ = np.linalg.qr(matrix)
    return q


def martin_distances(bases, eps=1e-12):
    """Pairwise `-sum log cos^2 theta` of the principal angles.

    Args:
        bases: array `(n, rows, r)`, orthonormal bases of `n` subspaces.

    Returns:
        A symmetric `(n, n)` array, zeros on the diagonal.
    """
    bases = np.asarray(bases, dtype="float64")
    products = np.einsum("iar,jas->ijrs", bases, bases)
    cosines = np.clip(np.linalg.svd(products, compute_uv=False), eps, 1.0)
    distances = -np.sum(np.log(cosines**2), axis=-1)
    distances = (distances + distances.T) / 2
    np.fill_diagonal(distances, 0.0)
    return distances


def observability_basis(y, order, horizon=None):
    """The orthonormal observability basis of the LDS of one signal.

    `horizon` (block rows) defaults to twice the Hankel depth."""
    y = np.atleast_2d(y)
    depth = hankel_depth(order, y.shape[0])
    system = fit_lds(y, order, depth)
    return orthonormal_basis(system.observability(horizon or 2 * depth))


def lds_distances(signals, order, horizon=None):
    """The Martin-type distance between the LDSs of every pair of signals.

    Args:
        signals: array `(n, channels, time)`, one signal per neuron.
        order: int, the LDS order.

    Returns:
        A symmetric `(n, n)` array.
    """
    return martin_distances(
        [observability_basis(y, order, horizon) for y in signals]
    )


def prune_similar(distances, norms, keep):
    """The neurons kept by greedy similarity pruning.

    While more than `keep` neurons are left, the pair of smallest distance
    among them loses the one of smaller norm (the higher index on a tie).

    Args:
        distances: symmetric `(n, n)` array.
        norms: `(n,)` array, the neurons' weight norms.
        keep: int in `[1, n]`.

    Returns:
        The sorted indices of the kept neurons.
    """
    distances = np.array(distances, dtype="float64")
    norms = np.asarray(norms, dtype="float64")
    n = norms.size
    if not 1 <= keep <= n:
        raise ValueError(f"`keep` must lie in [1, {n}]. Received: {keep}")
    np.fill_diagonal(distances, np.inf)
    alive = np.ones(n, bool)
    for _ in range(n - keep):
        i, j = np.unravel_index(np.argmin(distances), distances.shape)
        if norms[i] < norms[j] or (norms[i] == norms[j] and i > j):
            removed = i
        else:
            removed = j
        alive[removed] = False
        distances[removed, :] = np.inf
        distances[:, removed] = np.inf
    return np.flatnonzero(alive)


def embedding_signals(embeddings):
    """Embedding `(vocabulary, dims)` -> `(dims, 1, vocabulary)`: each
    dimension's column, the word ids (frequency ranks) as time."""
    return np.asarray(embeddings, dtype="float64").T[:, None, :]


def lstm_signals(kernel, recurrent_kernel, bias):
    """An LSTM's weights -> `(units, 4, inputs + units + 1)`.

    Each hidden unit's incoming weights in its four gate blocks (i, f, c,
    o: the channels), the kernel rows, then the recurrent-kernel rows,
    then the bias as time.
    """
    parts = (kernel, recurrent_kernel, np.asarray(bias)[None])
    weights = np.concatenate([np.asarray(p) for p in parts], axis=0)
    weights = weights.astype("float64")
    units = weights.shape[1] // 4
    return weights.reshape(weights.shape[0], 4, units).transpose(2, 1, 0)
