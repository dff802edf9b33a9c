"""`Add`, `Subtract`, `Multiply`, `Average`, `Maximum`, `Minimum`, and
`Concatenate` over the features.

The inputs of a merge and its output share one group per feature: a unit
leaves only if it can leave every branch. Branches whose slim scales differ
get a `Rescaling` to their original values first, so the sum is exact.
"""

import keras
import numpy as np
from keras import tree

from keras_l0 import _keras_compat as compat
from keras_l0.shrink.steps.base import Step
from keras_l0.shrink.steps.base import register
from keras_l0.shrink.views import SlimLayer
from keras_l0.shrink.views import View

_L = keras.layers


def _merge_value(kind, values):
    stack = np.stack(values)
    if kind is _L.Multiply:
        zero = np.any(stack == 0, axis=0)
        return np.where(zero, 0.0, np.prod(stack, axis=0))
    if kind is _L.Add:
        return stack.sum(axis=0)
    if kind is _L.Subtract:
        return stack[0] - stack[1]
    if kind is _L.Average:
        return stack.mean(axis=0)
    if kind is _L.Maximum:
        return stack.max(axis=0)
    return stack.min(axis=0)


def _tensors(node):
    args, _ = compat.node_call(node)
    if len(args) != 1 or not isinstance(args[0], (list, tuple)):
        return None
    return list(args[0])


@register(_L.Add, _L.Subtract, _L.Multiply, _L.Average, _L.Maximum, _L.Minimum)
class MergeStep(Step):
    passes = True

    @classmethod
    def accepts(cls, layer, node):
        tensors = _tensors(node)
        if tensors is None:
            return "shrink supports a list of inputs"
        shapes = {tuple(t.shape[1:]) for t in tensors}
        if len(shapes) != 1 or None in next(iter(shapes))[-1:]:
            return "its inputs have different or unknown shapes (broadcasting)"
        return None

    @property
    def branches(self):
        return _tensors(self.node)

    def values(self):
        return [_merge_value(type(self.layer), [self.plan.value(t) for t in self.branches])]

    def couple(self):
        for tensor in self.branches:
            self.plan.join(tensor, self.outputs[0])

    def needs(self):
        pass

    def plan_views(self):
        scales = [self.plan.in_view(t).scale for t in self.branches]
        self.unit = False
        if type(self.layer) is _L.Multiply:
            scale = np.prod(np.stack(scales), axis=0)
        elif all(np.array_equal(s, scales[0]) for s in scales):
            scale = scales[0]
        else:
            scale, self.unit = None, True
        self.slim.append(SlimLayer("clone", self.layer))
        return [self.plan.view(self.outputs[0], scale)]

    def build(self):
        return self.reuse(unit=self.unit)


@register(_L.Concatenate)
class ConcatenateStep(Step):
    passes = True

    @classmethod
    def accepts(cls, layer, node):
        tensors = _tensors(node)
        if tensors is None:
            return "shrink supports a list of inputs"
        rank = len(compat.node_outputs(node)[0].shape)
        if layer.axis not in (-1, rank - 1) or any(
            t.shape[-1] is None for t in tensors
        ):
            return "it does not concatenate known feature axes"
        return None

    @property
    def branches(self):
        return tree.flatten(self.data)

    def values(self):
        return [np.concatenate([self.plan.value(t) for t in self.branches])]

    def couple(self):
        spaces = [self.plan.space(t) for t in self.branches]
        self.plan.join(np.concatenate(spaces), self.outputs[0])

    def needs(self):
        pass

    def plan_views(self):
        self.slim.append(SlimLayer("clone", self.layer))
        view = View.concat([self.plan.in_view(t) for t in self.branches])
        view.fill = self.plan.value(self.outputs[0])
        return [view]

    def build(self):
        return self.reuse()
