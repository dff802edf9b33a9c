"""`Dense`, `TimeDistributed(Dense)` and `Conv1D`: rows and columns go."""

import keras
import numpy as np

from keras_l0.shrink.fold import bias_fold
from keras_l0.shrink.fold import numpy
from keras_l0.shrink.fold import per_feature
from keras_l0.shrink.fold import rebuild
from keras_l0.shrink.steps.base import Step
from keras_l0.shrink.steps.base import foldable
from keras_l0.shrink.steps.base import register
from keras_l0.shrink.steps.base import single_input
from keras_l0.shrink.views import SlimLayer

_L = keras.layers


def _plain(layer):
    return not getattr(layer, "lora_enabled", False) and (
        getattr(layer, "quantization_mode", None) is None
    )


@register(_L.Dense, _L.TimeDistributed, _L.Conv1D)
class DenseStep(Step):
    """Input rows of removed features go (a constant one is folded into the
    bias); output columns that nothing needs go when the activation is known
    to act per feature."""

    @classmethod
    def accepts(cls, layer, node):
        if not single_input(node):
            return "shrink supports one input"
        inner = layer.layer if type(layer) is _L.TimeDistributed else layer
        if type(inner) not in (_L.Dense, _L.Conv1D) or not _plain(inner):
            return "shrink rebuilds plain Dense and Conv1D layers only"
        if type(inner) is _L.Conv1D and (
            inner.data_format != "channels_last" or inner.groups != 1
            or type(layer) is _L.TimeDistributed
        ):
            return "shrink rebuilds channels_last Conv1D layers with groups=1"
        return None

    def __init__(self, plan, node):
        super().__init__(plan, node)
        self.inner = self.layer
        if type(self.layer) is _L.TimeDistributed:
            self.inner = self.layer.layer
        self.conv = type(self.inner) is _L.Conv1D
        self.bias = self.inner.use_bias and (
            not self.conv or self.inner.padding == "valid"
        )

    def needs(self):
        fill = self.plan.value(self.data)
        self.plan.require(self.data, ~foldable(fill, self.bias))
        if not per_feature(self.inner.activation):
            self.plan.require(self.outputs[0])

    def adjust(self):
        return self.at_least_one(
            self.outputs[0],
            f"Nothing reads layer '{self.layer.name}': its slim version keeps "
            "one unit.",
        )

    def plan_views(self):
        view = self.plan.in_view(self.data)
        self.rows, self.row_scale, fill = view.rows()
        self.fill = fill.copy()
        self.fill[self.rows] = np.nan
        self.cols = self.plan.kept_of(self.outputs[0])
        width = self.outputs[0].shape[-1]
        self.same = view.is_identity and len(self.cols) == width
        if self.same:
            self.slim.append(SlimLayer("clone", self.layer))
        elif self.conv:
            taps = int(self.inner.kernel.shape[0])
            params = taps * len(self.rows) * len(self.cols)
            params += len(self.cols) * self.inner.use_bias
            self.slim.append(SlimLayer("sized", params=params, flops=0))
        else:
            self.slim.append(
                SlimLayer(
                    "dense",
                    self.layer,
                    input_width=len(self.rows),
                    units=len(self.cols),
                    use_bias=self.inner.use_bias,
                )
            )
        return [self.plan.view(self.outputs[0], source=self.layer.name)]

    def weights(self):
        kernel = numpy(self.inner.kernel)
        if self.conv:
            kernel = kernel[..., self.cols]
            new = kernel[:, self.rows] * self.row_scale[None, :, None]
            folded = np.swapaxes(kernel, 0, 1).sum(axis=1)
        else:
            kernel = kernel[:, self.cols]
            new = kernel[self.rows] * self.row_scale[:, None]
            folded = kernel
        weights = [new]
        if self.inner.use_bias:
            bias = numpy(self.inner.bias)[self.cols].copy()
            extra = bias_fold(folded, self.fill, np.ones(len(self.fill)))
            if extra is not None:
                bias += extra
            weights.append(bias)
        return [w.astype("float32") for w in weights]

    def build(self):
        if self.same:
            return self.reuse()
        key = "filters" if self.conv else "units"
        new_inner = rebuild(self.inner, **{key: len(self.cols)})
        new = new_inner
        if self.inner is not self.layer:
            new = _L.TimeDistributed(
                new_inner, name=self.layer.name, trainable=self.layer.trainable
            )
        outputs = self.call(new)
        new_inner.set_weights(self.weights())
        return outputs

