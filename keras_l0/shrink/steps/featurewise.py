"""Layers that compute every feature from that feature alone.

They pass removals through (their input and output channel `j` form one
group). Linear ones (dropout, pooling, cropping, ...) keep the slim scale;
activations get the original values (a `Rescaling` before them if needed);
`BatchNormalization` is rebuilt on the kept features with the scale folded
in; `LayerNormalization` over another axis is used as it is.
"""

import keras
import numpy as np

from keras_l0.shrink.fold import apply
from keras_l0.shrink.fold import numpy
from keras_l0.shrink.fold import per_feature
from keras_l0.shrink.fold import rebuild
from keras_l0.shrink.steps.base import Step
from keras_l0.shrink.steps.base import register
from keras_l0.shrink.steps.base import single_input
from keras_l0.shrink.views import SlimLayer

_L = keras.layers

# A constant feature stays that constant (else only 0 stays 0).
_KEEP_CONSTANTS = (
    _L.Dropout, _L.SpatialDropout1D, _L.GaussianNoise, _L.GaussianDropout,
    _L.AlphaDropout, _L.ActivityRegularization, _L.Identity,
    _L.GlobalAveragePooling1D, _L.GlobalMaxPooling1D, _L.MaxPooling1D,
    _L.Cropping1D, _L.UpSampling1D, _L.RepeatVector,
)
_LINEAR = _KEEP_CONSTANTS + (_L.AveragePooling1D, _L.ZeroPadding1D)
_ACTIVATIONS = (_L.Activation, _L.ReLU, _L.LeakyReLU, _L.ELU)


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _last_axis(axis, rank):
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return [a % rank for a in axes]


class FeatureWiseStep(Step):
    passes = True

    @classmethod
    def accepts(cls, layer, node):
        if not single_input(node):
            return "shrink supports one input"
        if not _channels_last(layer):
            return "it is not channels_last"
        return None

    def couple(self):
        self.plan.join(self.data, self.outputs[0])

    def needs(self):
        pass


@register(*_LINEAR)
class LinearStep(FeatureWiseStep):
    def values(self):
        value = self.plan.value(self.data)
        if type(self.layer) in _KEEP_CONSTANTS:
            return [value]
        return [np.where(value == 0, 0.0, np.nan)]

    def plan_views(self):
        view = self.plan.in_view(self.data)
        self.slim.append(SlimLayer("clone", self.layer))
        return [self.plan.view(self.outputs[0], view.scale)]

    def build(self):
        return self.reuse()


@register(*_ACTIVATIONS)
class ActivationStep(FeatureWiseStep):
    @classmethod
    def accepts(cls, layer, node):
        why = super().accepts(layer, node)
        if why is None and type(layer) is _L.Activation and not per_feature(
            layer.activation
        ):
            return "its activation is not known to act on every feature alone"
        return why

    def values(self):
        return [apply(self.layer, self.plan.value(self.data))]

    def plan_views(self):
        self.slim.append(SlimLayer("clone", self.layer))
        return [self.plan.view(self.outputs[0])]

    def build(self):
        return self.reuse(unit=True)


@register(_L.BatchNormalization)
class BatchNormStep(FeatureWiseStep):
    """At inference `a * x + b` per feature: rebuilt on the kept features
    with the slim scale folded into `a`."""

    @classmethod
    def accepts(cls, layer, node):
        why = super().accepts(layer, node)
        rank = len(node.outputs[0].shape)
        if why is None and _last_axis(layer.axis, rank) != [rank - 1]:
            return "it normalises over an axis other than the features"
        return why

    def _affine(self):
        layer = self.layer
        var = numpy(layer.moving_variance)
        a = 1.0 / np.sqrt(var + layer.epsilon)
        if layer.scale:
            a = a * numpy(layer.gamma)
        b = -a * numpy(layer.moving_mean)
        if layer.center:
            b = b + numpy(layer.beta)
        return a.astype("float32"), b.astype("float32")

    def values(self):
        a, b = self._affine()
        return [a * self.plan.value(self.data) + b]

    def plan_views(self):
        view = self.plan.in_view(self.data)
        self.kept, self.scale = view.kept, view.scale
        self.same = view.is_identity
        if self.same:
            self.slim.append(SlimLayer("clone", self.layer))
        else:
            self.slim.append(SlimLayer("sized", params=4 * len(self.kept), flops=0))
        return [self.plan.view(self.outputs[0])]

    def build(self):
        if self.same:
            return self.reuse()
        new = rebuild(self.layer, center=True, scale=True)
        outputs = self.call(new)
        a, b = self._affine()
        var = numpy(self.layer.moving_variance)[self.kept]
        gamma = a[self.kept] * self.scale * np.sqrt(var + self.layer.epsilon)
        new.set_weights(
            [gamma, b[self.kept], np.zeros_like(var), var]
        )
        return outputs


@register(_L.LayerNormalization)
class OtherAxisNormStep(FeatureWiseStep):
    """`LayerNormalization` over axes other than the features: per feature,
    but not linear; over the features it is used as it is (and reading
    removed features is a `ShrinkError`)."""

    @classmethod
    def accepts(cls, layer, node):
        why = super().accepts(layer, node)
        rank = len(node.outputs[0].shape)
        if why is None and rank - 1 in _last_axis(layer.axis, rank):
            return (
                "it normalises over the features, and a LayerNormalization "
                "over fewer features computes something else"
            )
        return why

    def plan_views(self):
        self.slim.append(SlimLayer("clone", self.layer))
        return [self.plan.view(self.outputs[0])]

    def build(self):
        return self.reuse(unit=True)
