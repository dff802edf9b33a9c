"""Physically removes the neurons that L0 gates switched off.

`shrink(model)` rebuilds a Sequential or functional model from standard
Keras layers, without the units its gates closed and with the surviving
fractional gate values folded in, so that the slim model computes exactly
what the gated model computes at inference. Units are removed in coupled
groups (see `keras_l0.shrink.plan`): a unit leaves only if it can leave
every layer it is joined to by a merge, a state or a per-feature layer.

Modules: `plan` (graph walk, groups, building), `views` (how a slim tensor
stands for an original one), `fold` (gates, activations, rebuilding
layers), `steps` (one module per layer family, a `REGISTRY` from layer type
to step).
"""

import keras

from keras_l0.layers.gating import GatedRNNMixin
from keras_l0.shrink.errors import ShrinkError
from keras_l0.shrink.plan import ShrinkPlan
from keras_l0.shrink.plan import functional_graph
from keras_l0.shrink.steps.recurrent import RecurrentPlan
from keras_l0.shrink.views import SlimLayer

__all__ = [
    "RecurrentPlan",
    "ShrinkError",
    "ShrinkPlan",
    "SlimLayer",
    "gated_layers",
    "shrink",
]


def gated_layers(model):
    """The gated recurrent layers of `model`, in layer order.

    A `Bidirectional` wrapper contributes its forward and backward layers,
    a nested model its own gated layers.

    Args:
        model: a Keras model.

    Returns:
        A list of `GatedLSTM`, `GatedGRU` and `GatedSimpleRNN` layers.

    Example:

    >>> [layer.name for layer in gated_layers(model)]
    ['gated_lstm']
    """
    found = []
    for layer in model.layers:
        if isinstance(layer, GatedRNNMixin):
            found.append(layer)
        elif isinstance(layer, keras.layers.Bidirectional):
            found.extend(
                sub
                for sub in (layer.forward_layer, layer.backward_layer)
                if isinstance(sub, GatedRNNMixin)
            )
        elif isinstance(layer, keras.Model):
            found.extend(gated_layers(layer))
    return found


def shrink(model):
    """Returns a slim copy of `model` without the neurons its gates closed.

    The copy is made of standard Keras layers and computes exactly what
    `model` computes at inference (`training=False`), up to float rounding.
    Every gated layer becomes its plain Keras layer with the kept units.
    Units are removed in coupled groups: the inputs of `Add`, `Subtract`,
    `Multiply`, `Average`, `Maximum`, `Minimum`; a layer's returned states
    and the layer whose `initial_state` they are; the two directions of a
    sum, ave or mul `Bidirectional`; the query and key of `Attention`; and
    the input and output of per-feature layers (`Dropout`, pooling over
    time, activations known to act per feature, `BatchNormalization`). A
    group leaves when no member reads it as a varying value: a closed unit
    is the constant 0, a constant (e.g. `BatchNormalization` of a closed
    unit) is folded into the next bias. Closed inputs remove the `Dense`
    units, `Conv1D` filters and `Embedding` columns that feed them (a
    `Dense` or `Conv1D` only if its activation is known to act per feature).
    Fractional gates are folded into the next layer's weights, or applied by
    a `Rescaling` layer where a sum of branches or a non-linear layer needs
    the original values. Layers that nothing changes are reused (copied
    with their weights where Keras can copy them, else the same object).
    `model` is not modified. The slim model is not compiled.

    Inputs and outputs keep their shapes. A model output whose features were
    removed gets a `Dense` layer that puts the kept features back in place
    (their constants elsewhere), one whose features were only rescaled a
    `Rescaling` layer. A raw model input keeps its width.

    A layer whose hidden units are all closed keeps one unit whose output
    nothing reads, and a `UserWarning` says so.

    Args:
        model: a built Sequential or functional Keras model with gated
            recurrent layers (`keras_l0.GatedLSTM`, `GatedGRU`,
            `GatedSimpleRNN`, also inside `Bidirectional`).

    Returns:
        A new `keras.Sequential` model if `model` is one (and the slim graph
        is a chain), else a functional `keras.Model`, with the same name,
        inputs and output shapes.

    Raises:
        ShrinkError: if `model` has no gated layer, is neither Sequential
            nor functional, has a NaN gate parameter, or has a layer that
            reads removed features and that `shrink` cannot rebuild exactly
            (e.g. `LayerNormalization` over the features; the message names
            the layer and the reason).

    Example:

    >>> inputs = keras.Input((None, 8))
    >>> x = keras_l0.GatedLSTM(16)(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(1)(x))
    >>> slim = keras_l0.shrink(model)
    >>> slim.layers[1].__class__.__name__
    'LSTM'
    """
    functional_graph(model)
    if not gated_layers(model):
        raise ShrinkError(
            f"Model '{model.name}' has no gated layer: nothing to shrink."
        )
    return ShrinkPlan(model).build()
