"""`MultiHeadAttention`, `Attention` and `AdditiveAttention` reading
pruned features.

`MultiHeadAttention`: the query, key and value projections lose the rows of
removed features (a constant one is folded into the projection bias); the
output projection keeps the original width. `Attention` and
`AdditiveAttention` score the query against the key feature by feature:
query and key features form one group, removed only where they are exactly
0; the output is a mix of the value's features (value and output features
form one group). Their inputs get their original values.
"""

import keras
import numpy as np

from keras_l0 import _keras_compat as compat
from keras_l0.shrink.fold import bias_fold
from keras_l0.shrink.fold import numpy
from keras_l0.shrink.fold import rebuild
from keras_l0.shrink.steps.base import Step
from keras_l0.shrink.steps.base import foldable
from keras_l0.shrink.steps.base import register
from keras_l0.shrink.views import SlimLayer

_L = keras.layers


@register(_L.Attention, _L.AdditiveAttention)
class DotAttentionStep(Step):
    @classmethod
    def accepts(cls, layer, node):
        args, _ = compat.node_call(node)
        if len(args) != 1 or not isinstance(args[0], (list, tuple)):
            return "shrink supports a list of inputs"
        if len(args[0]) not in (2, 3):
            return "shrink supports [query, value] or [query, value, key]"
        return None

    def __init__(self, plan, node):
        super().__init__(plan, node)
        q, v = self.data[0], self.data[1]
        k = self.data[2] if len(self.data) == 3 else v
        self.query, self.value_, self.key = q, v, k

    def values(self):
        v = self.plan.value(self.value_)
        return [np.where(v == 0, 0.0, np.nan)] + [None] * (len(self.outputs) - 1)

    def couple(self):
        self.plan.join(self.query, self.key)
        self.plan.join(self.value_, self.outputs[0])

    def needs(self):
        for tensor in (self.query, self.key):
            self.plan.require(tensor, self.plan.value(tensor) != 0)
        for tensor in self.outputs[1:]:
            self.plan.require(tensor)

    def plan_views(self):
        self.kept = self.plan.kept_of(self.query)
        self.rebuilt = (
            type(self.layer) is _L.AdditiveAttention
            and self.layer.use_scale
            and len(self.kept) < self.query.shape[-1]
        )
        if self.rebuilt:
            self.slim.append(SlimLayer("sized", params=len(self.kept), flops=0))
        else:
            self.slim.append(SlimLayer("clone", self.layer))
        return [self.plan.view(t) for t in self.outputs]

    def build(self):
        if not self.rebuilt:
            return self.reuse(unit=True)
        new = rebuild(self.layer)
        outputs = self.call(new, unit=True)
        new.scale.assign(numpy(self.layer.scale)[self.kept])
        return outputs


@register(_L.MultiHeadAttention)
class MultiHeadAttentionStep(Step):
    @classmethod
    def accepts(cls, layer, node):
        args, kwargs = compat.node_call(node)
        if len(args) < 2 or any(isinstance(a, (list, tuple)) for a in args):
            return "shrink supports query and value passed by position"
        if layer.get_config().get("use_gate"):
            return "shrink does not rebuild a gated MultiHeadAttention"
        return None

    def __init__(self, plan, node):
        super().__init__(plan, node)
        query, value = self.args[0], self.args[1]
        key = self.args[2] if len(self.args) > 2 else self.kwargs.get("key")
        self.tensors = {"query": query, "value": value, "key": value if key is None else key}
        self.bias = self.layer.get_config().get("use_bias", True)

    def needs(self):
        for tensor in self.tensors.values():
            self.plan.require(tensor, ~foldable(self.plan.value(tensor), self.bias))
        for tensor in self.outputs:
            self.plan.require(tensor)

    def plan_views(self):
        self.views = {k: self.plan.in_view(t) for k, t in self.tensors.items()}
        self.same = all(v.is_identity for v in self.views.values())
        if self.same:
            self.slim.append(SlimLayer("clone", self.layer))
        else:
            proj = compat.attention_projections(self.layer)
            params = self.layer.count_params()
            for name, view in self.views.items():
                kernel = proj[name].kernel.shape
                params -= (kernel[0] - len(view.kept)) * int(np.prod(kernel[1:]))
            self.slim.append(SlimLayer("sized", params=params, flops=0))
        return [self.plan.view(t) for t in self.outputs]

    def build(self):
        if self.same:
            return self.reuse()
        width = self.outputs[0].shape[-1]
        config = self.layer.get_config()
        shape = config.get("output_shape") or width
        new = rebuild(self.layer, output_shape=shape)
        outputs = self.call(new)
        old, fresh = (compat.attention_projections(x) for x in (self.layer, new))
        for name, view in self.views.items():
            kept, scale, fill = view.rows()
            kernel = numpy(old[name].kernel)
            weights = [kernel[kept] * scale.reshape((-1,) + (1,) * (kernel.ndim - 1))]
            if self.bias:
                bias = numpy(old[name].bias).copy()
                removed = fill.copy()
                removed[kept] = np.nan
                extra = bias_fold(kernel, removed, np.ones(len(fill)))
                if extra is not None:
                    bias += extra
                weights.append(bias)
            fresh[name].set_weights([w.astype("float32") for w in weights])
        fresh["output"].set_weights(old["output"].get_weights())
        return outputs
