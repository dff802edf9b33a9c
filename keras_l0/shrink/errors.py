"""The error `shrink` raises for a model it cannot rebuild exactly."""


class ShrinkError(ValueError):
    """A model, or a layer of it, that `shrink` cannot rebuild exactly."""
