"""Every catalogue architecture shrinks exactly and as far as its gates
allow, or fails with the catalogue's clear error."""

import warnings

import keras
import numpy as np
import pytest

import architectures
from keras_l0._keras_compat import attention_projections
from keras_l0.hard_concrete import eval_gate
from keras_l0.shrink import ShrinkError
from keras_l0.shrink import gated_layers
from keras_l0.shrink import shrink
from keras_l0.summary import count_params_after_shrink

SEEDS = (1, 2, 3)
L = keras.layers


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def open_units(layer):
    return numpy(eval_gate(layer.cell.hidden_log_alpha)) != 0


def open_inputs(layer):
    return numpy(eval_gate(layer.cell.input_log_alpha)) != 0


def by_type(model, cls):
    return [layer for layer in model.layers if type(layer) is cls]


def recurrent_units(slim):
    units = []
    for layer in slim.layers:
        if isinstance(layer, L.Bidirectional):
            units += [layer.forward_layer.units, layer.backward_layer.units]
        elif hasattr(layer, "cell"):
            units.append(layer.units)
    return units


def expected_units(case, model):
    """Units of each gated layer whose group has an open gate."""
    gated = gated_layers(model)
    opened = [open_units(layer) for layer in gated]
    name = case.name
    if name in ("residual_add", "encoder_decoder_lstm", "encoder_decoder_gru"):
        union = int((opened[0] | opened[1]).sum())
        return [union, union]
    if name in ("bidirectional_sum", "bidirectional_ave"):
        union = int((opened[0] | opened[1]).sum())
        return [union, union]
    if name == "masked_text_bilstm":
        padded = max(int(opened[0].sum()), int(opened[1].sum()))
        return [padded, padded]
    return [max(int(o.sum()), 1) for o in opened]


def feature_checks(case, model, slim):
    """Layers feeding a gated layer lose what its closed inputs allow."""
    gated = gated_layers(model)
    name = case.name
    if name == "cnn_lstm":
        (conv,) = by_type(slim, L.Conv1D)
        assert conv.filters == open_inputs(gated[0]).sum() < 8
    if name == "masked_text_bilstm":
        (embedding,) = by_type(slim, L.Embedding)
        read = open_inputs(gated[0]) | open_inputs(gated[1])
        assert embedding.output_dim == read.sum()
    if name == "time_distributed_head":
        (embedding,) = by_type(slim, L.Embedding)
        assert embedding.output_dim == open_inputs(gated[0]).sum() < 6
    if name == "sequential_with_add":
        dense = by_type(slim, L.Dense)[0]
        assert dense.units == open_inputs(gated[0]).sum() < 6
    if name == "lstm_batchnorm_lstm":
        (norm,) = by_type(slim, L.BatchNormalization)
        assert norm.gamma.shape[0] == open_units(gated[0]).sum() < 6
    if name in ("dense_sparsemax_lstm", "dense_custom_activation_lstm"):
        # Their activation mixes features: every unit stays.
        assert by_type(slim, L.Dense)[0].units == 6
        assert not open_inputs(gated[0]).all()
    if name == "lstm_attention":
        (mha,) = by_type(slim, L.MultiHeadAttention)
        rows = open_units(gated[0]).sum()
        projections = attention_projections(mha)
        for name in ("query", "key", "value"):
            assert projections[name].kernel.shape[0] == rows < 6
        assert projections["output"].kernel.shape[-1] == 6
    if name == "lstm_dot_attention":
        head = by_type(slim, L.Dense)[-1]
        assert head.kernel.shape[0] == open_units(gated[0]).sum() < 6


def outputs(model, xs, **kwargs):
    return [numpy(y) for y in keras.tree.flatten(model(xs, **kwargs))]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", architectures.ALL_CASES, ids=str)
def test_catalogue_case_shrinks_exactly_and_fully(case, seed):
    model = case.model(seed)
    arrays = case.inputs(model, seed)
    xs = arrays if len(arrays) > 1 else arrays[0]
    weights = [numpy(w).copy() for w in model.weights]
    expected = outputs(model, xs, training=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if case.shrink_error is not None:
            with pytest.raises(ShrinkError, match=case.shrink_error):
                shrink(model)
            return
        slim = shrink(model)
        planned = count_params_after_shrink(model)
    for before, after in zip(weights, model.weights):
        np.testing.assert_array_equal(before, numpy(after))
    got = outputs(slim, xs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=0)
    assert slim.count_params() == planned < model.count_params()
    assert recurrent_units(slim) == expected_units(case, model)
    feature_checks(case, model, slim)
    config = str(slim.get_config())
    assert "Gated" not in config and "keras_l0" not in config
