"""The architecture catalogue through `keras-l0-shrink`, in every mode.

Each case of `tests/architectures.py` is saved as a gated `.keras` and run
through the CLI (`cli.main`, in-process, `--no-benchmark`) for the sequence
modes it lists: a fixed length, a variable length and, where it applies,
streaming. A run must exit 0 and write builtin-only files (no Flex op) with
one fused `UNIDIRECTIONAL_SEQUENCE_LSTM` per LSTM that can fuse, which the
CLI has checked against Keras (here: LiteRT vs Keras <= 1e-4 in float32).
A few cases also go through dynamic-range and float16 quantization.

Cases whose shrink raises today are xfailed with the `ShrinkError`
message (they turn green once shrink rebuilds them), and their plain-Keras
analogue (gated layers swapped for plain ones) goes through the CLI with
`--export-ungated` instead, so that their layers are exported now.
"""

import json
import re

import keras
import numpy as np
import pytest

pytest.importorskip("tf_keras")
pytest.importorskip("ai_edge_litert")

import architectures  # noqa: E402
import keras_l0  # noqa: E402
from keras_l0 import cli  # noqa: E402
from keras_l0 import export  # noqa: E402
from keras_l0.layers import GATED_TO_PLAIN  # noqa: E402
from keras_l0.shrink import ShrinkError  # noqa: E402

FUSED_LSTM = "UNIDIRECTIONAL_SEQUENCE_LSTM"
FLOAT_TOLERANCE = 1e-4
# Masked cases whose Keras output depends on the padding (a layer ignores
# the mask), so that no file fed unpadded sequences can match them: their
# variable-length export must be refused, naming that layer.
PADDING_DEPENDENT = {"masked_text_bilstm": "global_max_pooling1d"}
QUANTIZED = {"cnn_lstm": "dynamic", "time_distributed_head": "float16"}


def _plain_layer(layer):
    plain = GATED_TO_PLAIN[type(layer)]
    config = layer.get_config()
    keys = set(plain(units=1).get_config())
    return plain.from_config({k: v for k, v in config.items() if k in keys})


def _plain_analogue(model):
    """`model` with every gated layer replaced by its plain Keras layer."""

    def clone(layer):
        if type(layer) in GATED_TO_PLAIN:
            return _plain_layer(layer)
        if isinstance(layer, keras.layers.Bidirectional) and (
            type(layer.forward_layer) in GATED_TO_PLAIN
        ):
            return keras.layers.Bidirectional(
                _plain_layer(layer.forward_layer),
                backward_layer=_plain_layer(layer.backward_layer),
                merge_mode=layer.merge_mode,
                name=layer.name,
            )
        return layer.__class__.from_config(layer.get_config())

    plain = keras.models.clone_model(model, clone_function=clone)
    architectures.randomize(plain, 0)
    return plain


def _fusable(layer):
    config = layer.get_config()
    return (
        type(layer) is keras.layers.LSTM
        and not layer.unroll
        and not layer.return_state
        and config["activation"] == "tanh"
        and config["recurrent_activation"] == "sigmoid"
    )


def _expected_fused(model):
    """Fused LSTM ops a file of `model` has when it computes no mask."""
    count = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Bidirectional):
            count += 2 * _fusable(layer.forward_layer)
        elif _fusable(layer):
            initial = any(
                len(n.arguments.args) > 1
                or n.arguments.kwargs.get("initial_state") is not None
                for n in layer._inbound_nodes
            )
            count += not initial
    return count


def _runs(case):
    """(name, extra CLI arguments) per mode run."""
    runs = []
    if "fixed" in case.modes:
        runs.append(("fixed", ["--seq-len", str(architectures.LENGTH)]))
    if "variable" in case.modes:
        extra = ["--seq-len", "variable"]
        if "streaming" in case.modes:
            extra.append("--streaming")
        runs.append(("variable", extra))
    return runs


def _run(capsys, argv):
    status = cli.main(argv)
    printed = capsys.readouterr()
    return status, printed.err.strip().splitlines()[-1:] or [""]


def _check_outputs(case, out, slim, stem, mode, quantization="none"):
    with open(out / "report.json") as f:
        report = json.load(f)
    files = [f"{stem}_slim.tflite"]
    diffs = report["max_abs_diff"]
    keys = ["keras_vs_tflite"]
    if "--streaming" in mode:
        files.append(f"{stem}_slim_streaming.tflite")
        keys.append("keras_vs_streaming_tflite")
    masked_in_file = export.padding_contract(slim) and "--seq-len" in mode and (
        mode[mode.index("--seq-len") + 1] != "variable"
    )
    for name in files:
        flatbuffer = (out / name).read_bytes()
        ops = export.op_names(flatbuffer)
        assert export.flex_ops(flatbuffer) == [], (name, ops)
        if "streaming" in name:
            assert FUSED_LSTM not in ops and "WHILE" not in ops, ops
        elif masked_in_file:
            assert FUSED_LSTM not in ops, ops
        else:
            assert ops.count(FUSED_LSTM) == _expected_fused(slim), ops
    for key in keys:
        if quantization == "none":
            assert diffs[key] <= FLOAT_TOLERANCE, (key, diffs)
        else:
            assert 0 < diffs[key], (key, diffs)
    assert diffs["gated_vs_slim_keras"] <= FLOAT_TOLERANCE
    return report


def _exercise(case, model, path, tmp_path, capsys, slim, extra=()):
    stem = path.stem
    for name, mode in _runs(case):
        out = tmp_path / name
        argv = [str(path), "-o", str(out), "--no-benchmark", "-q", *extra, *mode]
        status, last = _run(capsys, argv)
        dependent = PADDING_DEPENDENT.get(case.name)
        if dependent and name == "variable":
            assert status == 2, last
            assert dependent in last[0] and "padding" in last[0], last
            assert not out.exists()
            continue
        assert status == 0, last
        _check_outputs(case, out, slim, stem, mode)
    quantization = QUANTIZED.get(case.name)
    if quantization:
        name, mode = _runs(case)[-1]
        out = tmp_path / f"{quantization}_{name}"
        argv = [str(path), "-o", str(out), "--no-benchmark", "-q", *extra]
        argv += [*mode, "--quantization", quantization]
        status, last = _run(capsys, argv)
        assert status == 0, last
        _check_outputs(case, out, slim, stem, mode, quantization)


@pytest.mark.parametrize("case", architectures.CASES, ids=str)
def test_case_through_the_cli(case, tmp_path, capsys):
    model = case.model(0)
    try:
        slim = keras_l0.shrink(model)
    except ShrinkError as e:
        if case.shrink_error is None:
            pytest.xfail(f"shrink cannot rebuild it yet: {e}")
        assert re.search(case.shrink_error, str(e))
        path = tmp_path / f"{case.name}.keras"
        model.save(path)
        status, last = _run(capsys, [str(path), "-o", str(tmp_path / "o")])
        assert status == 2 and case.shrink_error in last[0], last
        return
    assert case.shrink_error is None
    path = tmp_path / f"{case.name}.keras"
    model.save(path)
    _exercise(case, model, path, tmp_path, capsys, slim)


def _shrink_fails(case):
    try:
        keras_l0.shrink(case.model(0))
    except ShrinkError:
        return True
    return False


@pytest.mark.parametrize("case", architectures.CASES, ids=str)
def test_plain_analogue_through_the_cli(case, tmp_path, capsys):
    """The layers of cases that shrink refuses, exported today."""
    if not _shrink_fails(case):
        pytest.skip("shrink rebuilds this case: test_case_through_the_cli")
    plain = _plain_analogue(case.model(0))
    path = tmp_path / f"{case.name}_plain.keras"
    plain.save(path)
    _exercise(case, plain, path, tmp_path, capsys, plain, ["--export-ungated"])


def test_padding_dependent_case_really_depends_on_padding():
    """Keras itself gives the padded and the unpadded sequence different
    outputs, so refusing its unpadded export is right."""
    for name in PADDING_DEPENDENT:
        case = architectures.BY_NAME[name]
        slim = keras_l0.shrink(case.model(0))
        rng = np.random.default_rng(0)
        tokens = rng.integers(1, architectures.VOCABULARY, (1, 4))
        padded = np.concatenate([np.zeros((1, 2), int), tokens], axis=1)
        difference = np.abs(
            keras.ops.convert_to_numpy(slim(tokens))
            - keras.ops.convert_to_numpy(slim(padded))
        ).max()
        assert difference > 1e-3
