"""Hard-concrete gates (Louizos, Welling & Kingma, 2018) in `keras.ops`.

A gate `z` in [0, 1] is a stretched and clipped binary-concrete variable
parameterised by `log_alpha`. It is exactly 0 or exactly 1 with non-zero
probability, which is what lets a whole neuron be switched off.
"""

import math

from keras import ops
from keras import random

BETA = 2.0 / 3.0
GAMMA = -0.1
ZETA = 1.1
EPSILON = 1e-6

# P(z != 0) = sigmoid(log_alpha - _SHIFT)
_SHIFT = BETA * math.log(-GAMMA / ZETA)


def _stretch_and_clip(s):
    return ops.clip(s * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def sample(log_alpha, seed=None):
    """Draws one training gate per entry of `log_alpha`.

    Args:
        log_alpha: float tensor, the gate parameters.
        seed: a `keras.random.SeedGenerator` or an int.

    Returns:
        A tensor shaped like `log_alpha` with values in [0, 1].
    """
    u = random.uniform(
        ops.shape(log_alpha),
        minval=EPSILON,
        maxval=1.0 - EPSILON,
        dtype=log_alpha.dtype,
        seed=seed,
    )
    logistic = ops.log(u) - ops.log(1.0 - u)
    return _stretch_and_clip(ops.sigmoid((logistic + log_alpha) / BETA))


def eval_gate(log_alpha):
    """The deterministic gate used at inference time."""
    return _stretch_and_clip(ops.sigmoid(log_alpha))


def prob_nonzero(log_alpha):
    """P(z != 0): the probability that the gate keeps its neuron."""
    return ops.sigmoid(log_alpha - _SHIFT)


def expected_gate(log_alpha, num_points=4096):
    """E[z], by the midpoint rule over the closed-form CDF of `z`.

    `P(z > t) = 1 - sigmoid(BETA * logit(s_t) - log_alpha)` with
    `s_t = (t - GAMMA) / (ZETA - GAMMA)`, and `E[z]` is its integral over
    `t` in [0, 1].
    """
    t = (ops.arange(num_points, dtype="float32") + 0.5) / num_points
    s = (t - GAMMA) / (ZETA - GAMMA)
    logit_s = ops.log(s) - ops.log(1.0 - s)
    log_alpha = ops.expand_dims(ops.cast(log_alpha, "float32"), -1)
    survival = 1.0 - ops.sigmoid(BETA * logit_s - log_alpha)
    return ops.mean(survival, axis=-1)


def log_alpha_for_keep_probability(keep_probability):
    """The `log_alpha` whose gate is non-zero with `keep_probability`."""
    if not 0.0 < keep_probability < 1.0:
        raise ValueError(
            "A keep probability must lie strictly between 0 and 1. "
            f"Received: {keep_probability}"
        )
    logit = math.log(keep_probability) - math.log1p(-keep_probability)
    return logit + _SHIFT
