"""keras_l0.manifest: describe / write / read / check against the file.

Small language models are exported with `keras_l0.export.to_tflite` in the
three sequence modes; their manifests are compared with what LiteRT's
Interpreter says of the file, and edited manifests must fail `check`.
"""

import copy
import json
import os

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from keras_l0 import export
from keras_l0 import manifest

VOCABULARY = ["<eos>", "<unk>", "the", "a", "cat", "dog", "sat", "ran", "N", "."]
SPECIAL = {"end_of_sentence": "<eos>", "unknown": "<unk>"}


def _language_model(length=None):
    tokens = keras.Input((length,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(len(VOCABULARY), 6)(tokens)
    x = keras.layers.LSTM(8, return_sequences=True, name="lstm")(x)
    x = keras.layers.GRU(5, return_sequences=True, name="gru")(x)
    logits = keras.layers.Dense(len(VOCABULARY), name="logits")(x)
    return keras.Model(tokens, logits)


MODES = {
    "fixed": dict(sequence_length=7),
    "variable": dict(sequence_length="variable"),
    "streaming": dict(streaming=True),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """`{mode: (path of the .tflite, its folder)}`, one small LM each, with
    the vocabulary file beside it."""
    keras.backend.clear_session()
    model = _language_model()
    out = {}
    for mode, kwargs in MODES.items():
        folder = tmp_path_factory.mktemp(mode)
        path = folder / f"lm_{mode}.tflite"
        export.to_tflite(model, str(path), **kwargs)
        (folder / "vocabulary.txt").write_text("\n".join(VOCABULARY) + "\n")
        out[mode] = (str(path), str(folder))
    return out


def _describe(path, folder, mode, **kwargs):
    return manifest.describe(
        path,
        sequence_mode=mode,
        quantization="none",
        vocabulary_file=os.path.join(folder, "vocabulary.txt"),
        special_tokens=SPECIAL,
        **kwargs,
    )


def _interpreter_details(path):
    interpreter = Interpreter(model_path=path)
    (key,) = interpreter.get_signature_list()
    runner = interpreter.get_signature_runner(key)
    return key, runner.get_input_details(), runner.get_output_details()


@pytest.mark.parametrize("mode", list(MODES))
def test_describe_matches_the_interpreter(files, mode):
    path, folder = files[mode]
    info = _describe(path, folder, mode)
    key, inputs, outputs = _interpreter_details(path)

    assert info["format"] == "keras-l0-manifest" and info["version"] == 1
    assert info["signature"] == key
    assert key == ("step" if mode == "streaming" else "serving_default")
    assert info["sequence_mode"] == mode
    assert info["batch_size"] == 1
    assert info["sequence_length"] == {"fixed": 7, "variable": None, "streaming": 1}[mode]
    assert info["model"]["file"] == os.path.basename(path)
    assert info["model"]["bytes"] == os.path.getsize(path)
    for listed, details in ((info["inputs"], inputs), (info["outputs"], outputs)):
        assert [t["name"] for t in listed] == sorted(details)
        for t in listed:
            d = details[t["name"]]
            assert t["shape"] == list(d["shape"])
            assert t["shape_signature"] == list(d["shape_signature"])
            assert np.dtype(t["dtype"]) == np.dtype(d["dtype"])
            assert t["quantization"] is None  # float32 inputs and outputs
    by_name = {t["name"]: t for t in info["inputs"]}
    assert by_name["tokens"]["role"] == "tokens"
    assert by_name["tokens"]["dtype"] == "int32"
    lm = info["language_model"]
    assert lm == {
        "vocabulary_file": "vocabulary.txt",
        "vocabulary_size": len(VOCABULARY),
        "token_input": "tokens",
        "logits_output": "logits",
        "special_tokens": {
            "end_of_sentence": {"token": "<eos>", "id": 0},
            "unknown": {"token": "<unk>", "id": 1},
        },
    }
    assert info["padding"] is None
    if mode == "variable":
        assert by_name["tokens"]["shape_signature"] == [1, -1]
    if mode == "fixed":
        assert by_name["tokens"]["shape"] == [1, 7]
    manifest.check(info, path)


def test_streaming_state_pairs(files):
    path, folder = files["streaming"]
    info = _describe(path, folder, "streaming")
    _, inputs, outputs = _interpreter_details(path)
    assert info["states"] == [
        {"input": "gru_h", "output": "gru_h", "layer": "gru", "kind": "h",
         "shape": [1, 5], "dtype": "float32"},
        {"input": "lstm_c", "output": "lstm_c", "layer": "lstm", "kind": "c",
         "shape": [1, 8], "dtype": "float32"},
        {"input": "lstm_h", "output": "lstm_h", "layer": "lstm", "kind": "h",
         "shape": [1, 8], "dtype": "float32"},
    ]
    for pair in info["states"]:
        assert list(inputs[pair["input"]]["shape"]) == pair["shape"]
        assert list(outputs[pair["output"]]["shape"]) == pair["shape"]
    roles = {t["name"]: t["role"] for t in info["inputs"] + info["outputs"]}
    assert roles == {"tokens": "tokens", "logits": "output", "gru_h": "state",
                     "lstm_c": "state", "lstm_h": "state"}
    logits = {t["name"]: t for t in info["outputs"]}["logits"]
    assert logits["shape"] == [1, 1, len(VOCABULARY)]

    # The manifest is enough to run the file: the state loop gives the
    # outputs of the full-sequence file.
    interpreter = Interpreter(model_path=path)
    runner = interpreter.get_signature_runner(info["signature"])
    states = {s["input"]: np.zeros(s["shape"], s["dtype"]) for s in info["states"]}
    ids = [2, 4, 6, 9, 0, 3, 5, 7]
    stepped = []
    for token in ids:
        got = runner(tokens=np.array([[token]], np.int32), **states)
        states = {s["input"]: got[s["output"]] for s in info["states"]}
        stepped.append(got["logits"][0, 0])
    variable = Interpreter(model_path=files["variable"][0])
    full = variable.get_signature_runner("serving_default")
    expected = full(tokens=np.array([ids], np.int32))["logits"][0]
    np.testing.assert_allclose(np.array(stepped), expected, atol=1e-5)


def test_non_streaming_files_have_no_states(files):
    for mode in ("fixed", "variable"):
        path, folder = files[mode]
        info = _describe(path, folder, mode)
        assert info["states"] == []
        assert [t["name"] for t in info["inputs"]] == ["tokens"]


def test_sequence_mode_is_read_from_the_file_and_checked(files):
    path, folder = files["streaming"]
    assert manifest.describe(path)["sequence_mode"] == "streaming"
    assert manifest.describe(files["variable"][0])["sequence_mode"] == "variable"
    with pytest.raises(manifest.ManifestError, match="streaming export"):
        manifest.describe(path, sequence_mode="fixed")
    with pytest.raises(manifest.ManifestError, match="quantization"):
        manifest.describe(path, quantization="int4")


def test_quantization_is_checked_against_the_file(tmp_path):
    keras.backend.clear_session()
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(300, 48)(tokens)
    x = keras.layers.LSTM(48, return_sequences=True, name="lstm")(x)
    model = keras.Model(tokens, keras.layers.Dense(300, name="logits")(x))
    compatible = {
        "none": ("none", "dynamic"),
        "dynamic": ("dynamic",),
        "float16": ("float16",),
        "int8": ("int8",),
    }
    for quantization, modes in compatible.items():
        extra = {"representative_dataset": "random"} if quantization == "int8" else {}
        flatbuffer = export.to_tflite(
            model, streaming=True, quantization=quantization, **extra
        )
        assert manifest.file_quantizations(flatbuffer) == modes
        info = manifest.describe(flatbuffer, quantization=quantization)
        assert info["quantization"] == quantization
        assert {t["dtype"] for t in info["inputs"]} == {"int32", "float32"}
        manifest.check(info, flatbuffer)
        wrong = "float16" if quantization != "float16" else "int8"
        with pytest.raises(manifest.ManifestError, match="quantization="):
            manifest.describe(flatbuffer, quantization=wrong)


def test_bytes_input_and_no_vocabulary(files):
    path, _ = files["fixed"]
    with open(path, "rb") as f:
        info = manifest.describe(f.read(), sequence_mode="fixed")
    assert info["model"]["file"] is None
    assert info["language_model"] is None
    manifest.check(info, path)


def test_vocabulary_must_fit_the_logits(files, tmp_path):
    path, _ = files["streaming"]
    short = tmp_path / "vocabulary.txt"
    short.write_text("\n".join(VOCABULARY[:-1]) + "\n")
    with pytest.raises(manifest.ManifestError, match="9 words but"):
        manifest.describe(path, vocabulary_file=str(short))
    with pytest.raises(manifest.ManifestError, match="not in the vocabulary"):
        manifest.describe(
            path,
            vocabulary_file=os.path.join(files["streaming"][1], "vocabulary.txt"),
            special_tokens={"padding": "<pad>"},
        )


def test_padding(files):
    path, folder = files["fixed"]
    info = _describe(path, folder, "fixed", padding="<eos>")
    assert info["padding"] == {"token": "<eos>", "id": 0}
    manifest.check(info, path)
    assert _describe(path, folder, "fixed", padding=3)["padding"] == {"token": "a", "id": 3}
    with pytest.raises(manifest.ManifestError, match="outside the vocabulary"):
        _describe(path, folder, "fixed", padding=99)


def test_write_read_roundtrip_is_atomic(files, tmp_path):
    path, folder = files["streaming"]
    info = _describe(path, folder, "streaming")
    target = tmp_path / "model.json"
    target.write_text("old")
    manifest.write(str(target), info)
    assert manifest.read(str(target)) == info
    assert json.loads(target.read_text()) == info
    assert sorted(os.listdir(tmp_path)) == ["model.json"]  # no temp file left
    with pytest.raises(manifest.ManifestError):
        manifest.write(str(tmp_path / "bad.json"), {"format": "other"})
    assert sorted(os.listdir(tmp_path)) == ["model.json"]


def _tampered(info, edit):
    info = copy.deepcopy(info)
    edit(info)
    return info


def _set_state_output(info):
    info["states"][0]["output"] = "lstm_h"


def _set_input_name(info):
    info["inputs"][0]["name"] = "lstm_hidden"


def _set_shape(info):
    info["outputs"][0]["shape"][-1] += 1


def _set_dtype(info):
    info["inputs"][-1]["dtype"] = "int64"


def _drop_state(info):
    del info["states"][-1]


TAMPERINGS = {
    "signature": lambda m: m.update(signature="serving_default"),
    "sequence_mode": lambda m: m.update(sequence_mode="fixed"),
    "state pair": _set_state_output,
    "input name": _set_input_name,
    "output shape": _set_shape,
    "input dtype": _set_dtype,
    "missing state": _drop_state,
    "quantization": lambda m: m.update(quantization="int8"),
    "sha256": lambda m: m["model"].update(sha256="0" * 64),
    "vocabulary size": lambda m: m["language_model"].update(vocabulary_size=11),
    "special token id": lambda m: m["language_model"]["special_tokens"]["unknown"].update(id=2),
    "logits output": lambda m: m["language_model"].update(logits_output="lstm_h"),
}


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_a_tampered_manifest_fails_check(files, name):
    path, folder = files["streaming"]
    info = _describe(path, folder, "streaming")
    manifest.check(info, path)
    with pytest.raises(manifest.ManifestError, match="does not match"):
        manifest.check(_tampered(info, TAMPERINGS[name]), path)


def test_check_against_another_file_fails(files):
    info = _describe(*files["fixed"], "fixed")
    with pytest.raises(manifest.ManifestError, match="does not match"):
        manifest.check(info, files["variable"][0])


def test_read_rejects_other_formats_and_versions(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"format": "keras-l0-manifest", "version": 2}))
    with pytest.raises(manifest.ManifestError, match="version 2"):
        manifest.read(str(path))
    path.write_text("{not json")
    with pytest.raises(manifest.ManifestError, match="not JSON"):
        manifest.read(str(path))
