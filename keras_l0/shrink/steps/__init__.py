"""One step per layer family; `REGISTRY` maps a layer type to its step.

A step class is registered for exact layer types (subclasses may compute
something else and are used as they are). Its `accepts(layer, node)` says
why it cannot handle a particular use of the layer (`None` if it can); the
layer is then used as it is by `ReuseStep`, which refuses to let the
features it reads be removed.
"""

from keras_l0 import _keras_compat as compat
from keras_l0.shrink.steps.base import REGISTRY
from keras_l0.shrink.steps.base import InputStep
from keras_l0.shrink.steps.base import ReuseStep
from keras_l0.shrink.steps import attention  # noqa: F401
from keras_l0.shrink.steps import bidirectional  # noqa: F401
from keras_l0.shrink.steps import dense  # noqa: F401
from keras_l0.shrink.steps import embedding  # noqa: F401
from keras_l0.shrink.steps import featurewise  # noqa: F401
from keras_l0.shrink.steps import merge  # noqa: F401
from keras_l0.shrink.steps import recurrent  # noqa: F401


def step_for(plan, node, calls):
    """The step that plans and rebuilds one node of the graph."""
    if compat.node_is_input(node):
        return InputStep(plan, node)
    layer = compat.node_operation(node)
    if calls[id(layer)] > 1:
        return ReuseStep(plan, node, "it is shared (called more than once)")
    cls = REGISTRY.get(type(layer))
    if cls is None:
        return ReuseStep(plan, node)
    why = cls.accepts(layer, node)
    if why is not None:
        return ReuseStep(plan, node, why)
    return cls(plan, node)
