import hashlib
import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import keras_l0
from keras_l0 import cli
from keras_l0 import export
from keras_l0 import manifest
from keras_l0.shrink import gated_layers
from keras_l0.summary import count_params_after_shrink

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "shrink_and_convert.py")
VOCABULARY = 12
CLOSED = -10.0  # log_alpha whose eval gate is exactly 0
LSTM_CLOSED_UNITS = [1, 4, 6]
GRU_CLOSED_UNITS = [0, 5]


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _close(variable, indices):
    values = keras.ops.convert_to_numpy(variable).copy()
    values[indices] = CLOSED
    variable.assign(values)


def _tokens(shape, seed=0):
    return np.random.default_rng(seed).integers(0, VOCABULARY, shape)


def _gated_model():
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(VOCABULARY, 5)(tokens)
    x = keras_l0.GatedLSTM(8, return_sequences=True, name="lstm")(x)
    x = keras_l0.GatedGRU(6, name="gru")(x)
    return keras.Model(tokens, keras.layers.Dense(3)(x))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A gated model after a few steps of fit, with some units closed."""
    keras.backend.clear_session()
    model = _gated_model()
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    labels = np.random.default_rng(1).integers(0, 3, (32,))
    model.fit(_tokens((32, 7)), labels, batch_size=8, epochs=1, verbose=0)
    _close(model.get_layer("lstm").cell.hidden_log_alpha, LSTM_CLOSED_UNITS)
    _close(model.get_layer("gru").cell.hidden_log_alpha, GRU_CLOSED_UNITS)
    path = tmp_path_factory.mktemp("trained") / "gated.keras"
    model.save(path)
    return str(path)


def _fail(capsys, argv):
    """Runs the CLI, expects a user error; returns its stderr line.

    Besides progress lines, stderr must hold exactly that one line.
    """
    assert cli.main(argv) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    lines = printed.err.strip().splitlines()
    assert all(line.startswith("[") for line in lines[:-1]), lines
    assert lines[-1].startswith("keras-l0-shrink: error: ")
    return lines[-1]


def _hidden_entries(folder):
    return [n for n in os.listdir(folder) if n.startswith(".")]


def test_end_to_end(trained, tmp_path, capsys):
    before = _sha256(trained)
    out = tmp_path / "out"
    argv = [trained, "-o", str(out), "--streaming", "--runs", "5"]
    assert cli.main(argv) == 0
    assert _sha256(trained) == before
    printed = capsys.readouterr()
    assert "lstm" in printed.out and "latency" in printed.out
    assert "Traceback" not in printed.err

    assert sorted(os.listdir(out)) == sorted(
        [
            "gated_slim.keras",
            "gated_slim.tflite",
            "gated_slim.manifest.json",
            "gated_slim_streaming.tflite",
            "gated_slim_streaming.manifest.json",
            "report.json",
        ]
    )
    for name in ("gated_slim", "gated_slim_streaming"):
        info = manifest.read(out / f"{name}.manifest.json")
        manifest.check(info, str(out / f"{name}.tflite"))
    assert info["sequence_mode"] == "streaming"
    assert _hidden_entries(tmp_path) == []
    gated = keras.models.load_model(trained, compile=False)
    with open(out / "report.json") as f:
        report = json.load(f)
    assert report["input"]["sha256"] == before
    layers = {r["name"]: r for r in report["layers"]}
    assert layers["lstm"]["units"] == 8
    assert layers["lstm"]["units_kept"] == 8 - len(LSTM_CLOSED_UNITS)
    assert layers["gru"]["units_kept"] == 6 - len(GRU_CLOSED_UNITS)
    assert layers["gru"]["inputs_kept"] == layers["lstm"]["units_kept"]
    params = report["params"]
    assert params["slim"] < params["dense"] < params["gated"]
    assert params["slim"] == count_params_after_shrink(gated)
    flops = report["flops_per_step"]
    assert flops["slim"] < flops["dense"]
    sizes = report["file_bytes"]
    assert sizes["slim_tflite"] < sizes["dense_tflite"]
    assert sizes["slim_tflite"] == os.path.getsize(out / "gated_slim.tflite")
    diffs = report["max_abs_diff"]
    assert diffs["gated_vs_slim_keras"] < 1e-5
    assert diffs["keras_vs_tflite"] < 1e-4
    assert diffs["keras_vs_streaming_tflite"] < 1e-4
    latency = report["latency_ms"]
    assert latency["dense"] > 0 and latency["slim"] > 0
    assert latency["speedup"] == pytest.approx(
        latency["dense"] / latency["slim"]
    )

    slim = keras.models.load_model(out / "gated_slim.keras", compile=False)
    assert gated_layers(slim) == []
    tokens = _tokens((3, 9), seed=2)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(slim(tokens)),
        keras.ops.convert_to_numpy(gated(tokens)),
        atol=1e-5,
    )
    assert slim.count_params() == params["slim"]

    # A second run into the same folder needs --force and leaves it as is.
    stamps = {n: os.path.getmtime(out / n) for n in os.listdir(out)}
    message = _fail(capsys, [trained, "-o", str(out)])
    assert "exists" in message and "--force" in message
    assert {n: os.path.getmtime(out / n) for n in os.listdir(out)} == stamps
    assert _sha256(trained) == before


def test_failure_leaves_no_output(trained, tmp_path, capsys, monkeypatch):
    def fail(model, path=None, **kwargs):
        raise export.ExportError("no converter today")

    monkeypatch.setattr(export, "to_tflite", fail)
    out = tmp_path / "out"
    message = _fail(capsys, [trained, "-o", str(out)])
    assert message.endswith("no converter today")
    assert os.listdir(tmp_path) == []
    out.mkdir()
    message = _fail(capsys, [trained, "-o", str(out)])
    assert message.endswith("no converter today")
    assert os.listdir(out) == []


def _commands():
    commands = [[sys.executable, TOOL]]
    script = os.path.join(os.path.dirname(sys.executable), "keras-l0-shrink")
    if os.path.exists(script):
        commands.append([script])
    return commands


@pytest.mark.parametrize("command", _commands(), ids=lambda c: c[-1])
def test_subprocess_user_error_is_one_line(command, tmp_path):
    """Loading TensorFlow prints log lines on fd 2; none may show."""
    missing = tmp_path / "missing.keras"
    result = subprocess.run(
        [*command, str(missing), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"keras-l0-shrink: error: no such file: {missing}"
    ]


def test_subprocess_force_quantized(trained, tmp_path):
    before = _sha256(trained)
    out = tmp_path / "q"
    out.mkdir()
    (out / "gated_slim.tflite").write_bytes(b"stale")
    (out / "notes.txt").write_text("mine")
    argv = [trained, "-o", str(out), "--quantization", "dynamic", "--force"]
    result = subprocess.run(
        [sys.executable, TOOL, *argv, "--no-benchmark", "--seq-len", "6"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "gated vs slim" in result.stdout
    progress = [
        line for line in result.stderr.splitlines() if line.startswith("[")
    ]
    # --no-benchmark: the dense model is not converted.
    assert progress[0] == "[1/9] Loading gated.keras ..."
    assert progress[-1].startswith(f"[9/9] Moving the outputs into {out}: ")
    assert "Traceback" not in result.stderr
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(out)) == [
        "gated_slim.keras",
        "gated_slim.manifest.json",
        "gated_slim.tflite",
        "notes.txt",
        "report.json",
    ]
    with open(out / "report.json") as f:
        report = json.load(f)
    assert report["options"]["quantization"] == "dynamic"
    info = manifest.read(out / "gated_slim.manifest.json")
    assert info["quantization"] == "dynamic"
    assert report["options"]["sequence_length"] == 6
    assert report["latency_ms"] is None
    assert report["file_bytes"]["dense_tflite"] is None
    assert report["max_abs_diff"]["keras_vs_tflite"] < 0.1
    assert os.path.getsize(out / "gated_slim.tflite") == (
        report["file_bytes"]["slim_tflite"]
    )
    assert _sha256(trained) == before


def _truncated(path, target):
    with open(path, "rb") as f:
        data = f.read()
    target.write_bytes(data[: len(data) // 2])


def _bit_flipped(path, target):
    with zipfile.ZipFile(path) as archive:
        weights = archive.getinfo("model.weights.h5")
    data = bytearray(open(path, "rb").read())
    middle = weights.header_offset + 30 + len(weights.filename)
    data[middle + weights.compress_size // 2] ^= 0xFF
    target.write_bytes(bytes(data))


def _text(path, target):
    target.write_text("not a model\n")


def _hdf5(path, target):
    target.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))


def _no_config(path, target):
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("notes.txt", "hello")


@pytest.mark.parametrize(
    "make,expected",
    [
        (_truncated, "corrupt or truncated .keras archive"),
        (_bit_flipped, "corrupt .keras archive: bad CRC in model.weights.h5"),
        (_text, "is not a Keras model (.keras zip archive)"),
        (_hdf5, "is a legacy HDF5 model"),
        (_no_config, "its archive has no config.json"),
    ],
    ids=["truncated", "bit_flipped", "text", "hdf5", "no_config"],
)
def test_bad_file(trained, tmp_path, capsys, make, expected):
    bad = tmp_path / "bad.keras"
    make(trained, bad)
    before = _sha256(bad)
    message = _fail(capsys, [str(bad), "-o", str(tmp_path / "out")])
    assert expected in message
    assert _sha256(bad) == before
    assert os.listdir(tmp_path) == ["bad.keras"]


def test_missing_file(tmp_path, capsys):
    message = _fail(capsys, [str(tmp_path / "nope.keras")])
    assert message.endswith(f"no such file: {tmp_path / 'nope.keras'}")


def test_bad_option(trained, capsys):
    message = _fail(capsys, [trained, "--quantization", "int4"])
    assert "--quantization" in message and "int4" in message
    message = _fail(capsys, [trained, "--runs", "0"])
    assert "--runs" in message


def _plain_model():
    inputs = keras.Input((None, 3))
    x = keras.layers.LSTM(4)(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def test_ungated_model(tmp_path, capsys):
    path = tmp_path / "plain.keras"
    _plain_model().save(path)
    before = _sha256(path)
    out = tmp_path / "out"
    message = _fail(capsys, [str(path), "-o", str(out)])
    assert "no keras_l0 gated layer" in message
    assert "--export-ungated" in message
    assert not out.exists()

    argv = [str(path), "-o", str(out), "--export-ungated", "--no-benchmark"]
    assert cli.main([*argv, "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert _sha256(out / "plain_slim.keras") == before
    with open(out / "report.json") as f:
        report = json.load(f)
    assert report["input"]["gated"] is False
    assert report["params"]["slim"] == report["params"]["dense"]
    assert report["max_abs_diff"]["keras_vs_tflite"] < 1e-4
    assert _sha256(path) == before


def test_nan_log_alpha(tmp_path, capsys):
    model = _gated_model()
    variable = model.get_layer("gru").cell.hidden_log_alpha
    values = keras.ops.convert_to_numpy(variable).copy()
    values[2] = np.nan
    variable.assign(values)
    path = tmp_path / "nan.keras"
    model.save(path)
    before = _sha256(path)
    message = _fail(capsys, [str(path), "-o", str(tmp_path / "out")])
    assert "gru" in message and "NaN" in message
    assert _sha256(path) == before
    assert sorted(os.listdir(tmp_path)) == ["nan.keras"]


def test_unsupported_neighbour(tmp_path, capsys):
    inputs = keras.Input((None, 3))
    x = keras_l0.GatedLSTM(4, return_sequences=True)(inputs)
    x = keras.layers.LayerNormalization()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    _close(model.layers[1].cell.hidden_log_alpha, [0])
    path = tmp_path / "norm.keras"
    model.save(path)
    message = _fail(capsys, [str(path), "-o", str(tmp_path / "out")])
    assert "cannot shrink" in message.lower()
    assert "layer_normalization" in message
    assert sorted(os.listdir(tmp_path)) == ["norm.keras"]


def test_unwritable_output(trained, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    message = _fail(capsys, [trained, "-o", str(blocker / "out")])
    assert f"{blocker} is not a folder" in message
    message = _fail(capsys, [trained, "-o", str(blocker)])
    assert f"{blocker} exists and is not a folder" in message


def test_read_only_output(trained, tmp_path, capsys):
    if os.name == "posix" and os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o500)
    elif sys.platform.startswith("linux") and os.path.isdir("/sys"):
        folder = "/sys"  # read-only even for root
    else:
        pytest.skip("no read-only folder to write into")
    message = _fail(capsys, [trained, "-o", os.path.join(folder, "out")])
    assert f"cannot write to {folder}: " in message


def _perturbed(model, offset=0.05):
    copy = keras.models.clone_model(model)
    copy.set_weights([w + offset for w in model.get_weights()])
    return copy


def test_tflite_unlike_keras_is_refused(trained, tmp_path, capsys, monkeypatch):
    """A file that does not compute the slim model (here: converted from a
    perturbed copy) is not written."""
    real = export.to_tflite

    def wrong(model, path=None, **kwargs):
        return real(_perturbed(model), path, **kwargs)

    monkeypatch.setattr(export, "to_tflite", wrong)
    out = tmp_path / "out"
    message = _fail(capsys, [trained, "-o", str(out), "--no-benchmark"])
    assert "TFLite model differs from the slim Keras model" in message
    assert "nothing written" in message
    assert os.listdir(tmp_path) == []


def test_slim_unlike_gated_is_refused(trained, tmp_path, capsys, monkeypatch):
    real = cli.shrink
    monkeypatch.setattr(cli, "shrink", lambda model: _perturbed(real(model)))
    message = _fail(capsys, [trained, "-o", str(tmp_path / "out")])
    assert "slim model differs from the gated one" in message
    assert os.listdir(tmp_path) == []


def test_tolerances_are_stated_in_help(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"{cli.GATED_TOLERANCE:g} x max(1, largest output)" in text
    assert "dynamic 0.03" in text and "int8 streaming 0.75" in text


def test_masked_model_contract_in_report(tmp_path, capsys):
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCABULARY, 5, mask_zero=True)(tokens)
    x = keras_l0.GatedLSTM(6, name="lstm")(x)
    model = keras.Model(tokens, keras.layers.Dense(2)(x))
    _close(model.get_layer("lstm").cell.hidden_log_alpha, [1, 3])
    path = tmp_path / "masked.keras"
    model.save(path)
    out = tmp_path / "out"
    argv = [str(path), "-o", str(out), "--no-benchmark", "--streaming"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "unpadded sequences: tokens without padding 0" in printed
    with open(out / "report.json") as f:
        report = json.load(f)
    assert report["padding"] == {
        "masked_slim.tflite": {"tokens": 0},
        "masked_slim_streaming.tflite": {"tokens": 0},
    }
    assert report["max_abs_diff"]["keras_vs_tflite"] < 1e-4
    assert report["max_abs_diff"]["keras_vs_streaming_tflite"] < 1e-4


def test_language_model_manifest_names_the_vocabulary(tmp_path, capsys):
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(VOCABULARY, 5)(tokens)
    x = keras_l0.GatedLSTM(6, return_sequences=True, name="lstm")(x)
    model = keras.Model(tokens, keras.layers.Dense(VOCABULARY)(x))
    _close(model.get_layer("lstm").cell.hidden_log_alpha, [1, 4])
    path = tmp_path / "lm.keras"
    model.save(path)
    words = [f"w{i}" for i in range(VOCABULARY - 1)] + ["<eos>"]
    vocabulary = tmp_path / "words.txt"
    vocabulary.write_text("\n".join(words) + "\n")
    out = tmp_path / "out"
    argv = [str(path), "-o", str(out), "--streaming", "--no-benchmark"]
    message = _fail(capsys, argv + ["--special-token", "end_of_sentence=<eos>"])
    assert "--special-token needs --vocabulary" in message
    assert not out.exists()
    argv += ["--vocabulary", str(vocabulary)]
    assert cli.main(argv + ["--special-token", "end_of_sentence=<eos>"]) == 0
    assert (out / "vocabulary.txt").read_text() == vocabulary.read_text()
    info = manifest.read(out / "lm_slim_streaming.manifest.json")
    manifest.check(info, str(out / "lm_slim_streaming.tflite"), base_dir=str(out))
    assert info["language_model"]["vocabulary_file"] == "vocabulary.txt"
    assert info["language_model"]["special_tokens"]["end_of_sentence"] == {
        "token": "<eos>",
        "id": VOCABULARY - 1,
    }
    assert [s["input"] for s in info["states"]] == ["lstm_c", "lstm_h"]
