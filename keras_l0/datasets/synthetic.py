"""A sequence classification task in which few input features matter.

Every example is a sequence of `num_features` standard normal features. Only
`num_informative` of them carry signal: the label thresholds sums of them
over (part of) the sequence, and the other features are pure noise. A model
that selects its inputs well keeps exactly the informative features.
"""

import numpy as np


def feature_selection_task(
    num_train=4000,
    num_test=1000,
    timesteps=16,
    num_features=40,
    num_informative=4,
    seed=0,
):
    """Generates the task.

    The informative features, in increasing order, form pairs `(a, b)`
    (the first two, the next two, ...), and each pair gives one bit of the
    label. The first pair: is the sum of `a + b` over the whole
    sequence positive? Every later pair: is the sum of `a - b` over the
    second half of the sequence positive? The label is the number written
    by these bits (first pair most significant), so there are
    `2 ** (num_informative // 2)` classes, about equally frequent.
    Telling the classes apart needs every informative feature, memory over
    the sequence, and knowing when the second half starts.

    Args:
        num_train: int, number of training examples.
        num_test: int, number of test examples.
        timesteps: int >= 2, sequence length.
        num_features: int, total number of input features.
        num_informative: even int >= 2, the number of features that carry
            signal, at most `num_features`.
        seed: int, seeds the choice of the informative features and the
            data, so the same arguments always give the same arrays.

    Returns:
        Tuple `(x_train, y_train, x_test, y_test, informative)`: `x_*`
        float32 arrays of shape `(num, timesteps, num_features)`, `y_*`
        int32 class labels of shape `(num,)`, and `informative` the sorted
        int64 indices of the informative features.

    Example:

    >>> x, y, x_test, y_test, informative = feature_selection_task(seed=1)
    >>> x.shape, len(informative), int(y.max()) + 1
    ((4000, 16, 40), 4, 4)
    """
    for name, value, minimum in (
        ("num_train", num_train, 1),
        ("num_test", num_test, 1),
        ("timesteps", timesteps, 2),
        ("num_features", num_features, 2),
        ("num_informative", num_informative, 2),
    ):
        if not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(
                f"`{name}` must be an integer >= {minimum}. "
                f"Received: {name}={value!r}"
            )
    if num_informative % 2 or num_informative > num_features:
        raise ValueError(
            "`num_informative` must be even (the features come in pairs) "
            "and at most `num_features`. Received: "
            f"num_informative={num_informative}, num_features={num_features}"
        )
    rng = np.random.default_rng(seed)
    informative = np.sort(
        rng.choice(num_features, size=num_informative, replace=False)
    )
    x = rng.standard_normal(
        (num_train + num_test, timesteps, num_features), dtype="float32"
    )
    whole = x[:, :, informative[:2]].sum(axis=1)
    late = x[:, timesteps // 2 :, informative[2:]].sum(axis=1)
    bits = np.concatenate(
        [whole[:, :1] + whole[:, 1:] > 0, late[:, 0::2] - late[:, 1::2] > 0],
        axis=1,
    )
    y = (bits @ (2 ** np.arange(bits.shape[1])[::-1])).astype("int32")
    return (
        x[:num_train],
        y[:num_train],
        x[num_train:],
        y[num_train:],
        informative.astype("int64"),
    )
