"""`L0Warmup`: λ ramps up from 0 over the first epochs."""

import keras
import numpy as np

from keras_l0.callbacks.sizing import named_gated_layers


def _check_int(name, value, minimum):
    if not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}. "
            f"Received: {name}={value!r}"
        )


def _steps_per_epoch(callback):
    steps = (callback.params or {}).get("steps")
    if not steps:
        raise ValueError(
            f"{type(callback).__name__} needs the number of steps per "
            "epoch, which this `fit` call does not know: pass "
            "`steps_per_epoch` to `fit`."
        )
    return steps


class L0Warmup(keras.callbacks.Callback):
    """Ramps λ linearly from 0 to its target over the first epochs.

    Training first with a small penalty lets the weights learn before the
    gates are asked to close. λ is 0 until `start_epoch`, then grows
    linearly and reaches `target` at epoch `start_epoch + warmup_epochs`,
    after which it stays there. The callback assigns the layers'
    `l0_penalty` variables, so a compiled train step is not retraced.

    Args:
        target: float λ for every gated layer, or `None` (default) for
            each layer's own `l0_penalty` argument.
        warmup_epochs: int >= 0, epochs from λ = 0 to λ = `target`.
            Default 5.
        start_epoch: int >= 0, the epoch at which the ramp starts (λ is 0
            before it). Default 0.
        per_batch: bool, update λ before every batch (a smooth ramp)
            instead of once per epoch. Default `False`.

    Example:

    >>> warmup = L0Warmup(warmup_epochs=4)
    >>> model.fit(x, y, epochs=10, callbacks=[warmup])
    """

    def __init__(
        self, target=None, warmup_epochs=5, start_epoch=0, per_batch=False
    ):
        super().__init__()
        if target is not None and not (
            isinstance(target, (int, float, np.floating)) and target >= 0
        ):
            raise ValueError(
                f"`target` must be None or a number >= 0. Received: {target!r}"
            )
        _check_int("warmup_epochs", warmup_epochs, 0)
        _check_int("start_epoch", start_epoch, 0)
        self.target = target
        self.warmup_epochs = warmup_epochs
        self.start_epoch = start_epoch
        self.per_batch = bool(per_batch)
        self._epoch = 0

    def fraction(self, epoch):
        """The fraction of the target λ at (fractional) `epoch`."""
        if epoch < self.start_epoch:
            return 0.0
        if self.warmup_epochs == 0:
            return 1.0
        return min(1.0, (epoch - self.start_epoch) / self.warmup_epochs)

    def _assign(self, epoch):
        fraction = self.fraction(epoch)
        for layer in named_gated_layers(self.model).values():
            cell = layer.cell
            target = self.target
            if target is None:
                target = cell.initial_l0_penalty
            cell.l0_penalty.assign(fraction * target)

    def on_train_begin(self, logs=None):
        if self.per_batch:
            self._steps = _steps_per_epoch(self)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._assign(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.per_batch and batch > 0:
            self._assign(self._epoch + batch / self._steps)
