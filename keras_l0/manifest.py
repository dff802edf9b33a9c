"""The model manifest: what an app needs to know to run an exported `.tflite`.

A `.tflite` written by `keras_l0.export.to_tflite` (or `keras-l0-shrink`)
has an implicit contract with the code that runs it: the signature key, the
names, shapes and dtypes of its inputs and outputs, which state output feeds
which state input at the next call (streaming files), how it was quantised,
and, for a language model, which vocabulary maps its token ids to words. A
manifest is that contract as a small versioned JSON file written beside the
model, read from the file itself (`describe`), so that an Android or web app
reads names and shapes from it instead of hard-coding them, and checked
against the file (`check`) so that a stale or edited manifest is caught.

This module itself imports only numpy and `ai_edge_litert` (not
TensorFlow), so that a test or deployment step can use it without a
converter.

Example:

>>> from keras_l0 import manifest
>>> info = manifest.describe("out/gated_slim_streaming.tflite",
...                          sequence_mode="streaming", quantization="none",
...                          vocabulary_file="out/vocabulary.txt",
...                          special_tokens={"end_of_sentence": "<eos>",
...                                          "unknown": "<unk>"})
>>> manifest.write("out/gated_slim_streaming.json", info)
>>> manifest.check(manifest.read("out/gated_slim_streaming.json"),
...                "out/gated_slim_streaming.tflite")

Format (version 1), every key always present (`null` where it does not
apply):

```
{
  "format": "keras-l0-manifest", "version": 1,
  "model": {"file": "<name of the .tflite, beside the manifest>",
            "bytes": int, "sha256": "<hex>"},
  "signature": "step" | "serving_default",
  "sequence_mode": "fixed" | "variable" | "streaming",
  "batch_size": int,
  "sequence_length": int (fixed) | null (variable) | 1 (streaming),
  "quantization": "none" | "dynamic" | "float16" | "int8",
  "inputs":  [{"name", "role", "shape", "shape_signature", "dtype",
               "quantization": null | {"scale": [...], "zero_point": [...]}},
              ...],
  "outputs": [same],
  "states": [{"input": "<layer>_h", "output": "<layer>_h",
              "layer": "<layer>", "kind": "h" | "c", "shape", "dtype"}, ...],
  "padding": null | {"token": str | null, "id": int},
  "language_model": null | {
      "vocabulary_file": "<name, beside the manifest>",
      "vocabulary_size": int | null,
      "token_input": "<input name>", "logits_output": "<output name>",
      "special_tokens": {"<role>": {"token": str, "id": int | null}, ...}}
}
```

Inputs and outputs are listed in the signature's order of names (sorted).
`role` is `"state"` for a recurrent state of a streaming file (an input
whose name is also an output's), `"tokens"` for an `int32` input, else
`"features"`; for outputs, `"state"` or `"output"`. Shapes are lists of
ints; `shape_signature` has `-1` for an open (variable) time axis. An app
starts a streaming file with every state input at zero (of the listed
shape and dtype), and after each call copies every `states[i].output` into
`states[i].input` for the next call.
"""

import hashlib
import json
import os
import tempfile

import numpy as np

FORMAT = "keras-l0-manifest"
VERSION = 1
SEQUENCE_MODES = ("fixed", "variable", "streaming")
# The quantization modes of keras_l0.export.to_tflite (not imported here:
# that module loads TensorFlow).
QUANTIZATIONS = ("none", "dynamic", "float16", "int8")
STREAMING_SIGNATURE_KEY = "step"
SIGNATURE_KEY = "serving_default"
_STATE_KINDS = ("h", "c")
_TOP_KEYS = (
    "format",
    "version",
    "model",
    "signature",
    "sequence_mode",
    "batch_size",
    "sequence_length",
    "quantization",
    "inputs",
    "outputs",
    "states",
    "padding",
    "language_model",
)


class ManifestError(ValueError):
    """A manifest is malformed, or does not match its `.tflite` file."""


def _read_bytes(tflite):
    if isinstance(tflite, (bytes, bytearray, memoryview)):
        return bytes(tflite), None
    path = os.fspath(tflite)
    with open(path, "rb") as f:
        return f.read(), path


def _dtype_name(dtype):
    return np.dtype(dtype).name


def _quantization(detail):
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), dtype=np.float64)
    if scales.size == 0:
        return None
    zero_points = np.asarray(params.get("zero_points", []), dtype=np.int64)
    return {
        "scale": [float(s) for s in scales],
        "zero_point": [int(z) for z in zero_points],
        "quantized_dimension": int(params.get("quantized_dimension", 0)),
    }


def _tensor(name, detail, role):
    return {
        "name": name,
        "role": role,
        "shape": [int(n) for n in detail["shape"]],
        "shape_signature": [int(n) for n in detail["shape_signature"]],
        "dtype": _dtype_name(detail["dtype"]),
        "quantization": _quantization(detail),
    }


def _compatible_quantizations(interpreter):
    """The `quantization` modes that can have produced the file, from its
    tensor types and ops: float16 tensors mean "float16"; int16 tensors (the
    fused LSTM's int8 cell state) or a QUANTIZE op (float inputs into int8
    activations) mean "int8"; other int8 tensors (weights) "dynamic"; none
    of these "none", or "dynamic" (which leaves weights under 1024 elements
    in float32)."""
    dtypes = {
        np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()
    }
    try:
        ops = {op["op_name"] for op in interpreter._get_ops_details()}
    except AttributeError:  # a LiteRT without the ops listing
        ops = set()
    if "float16" in dtypes:
        return ("float16",)
    if "int16" in dtypes or "QUANTIZE" in ops:
        return ("int8",)
    if "int8" in dtypes:
        return ("dynamic",)
    return ("none", "dynamic")


def _interpreter(flatbuffer):
    from ai_edge_litert.interpreter import Interpreter

    try:
        return Interpreter(model_content=flatbuffer)
    except (ValueError, RuntimeError) as e:
        raise ManifestError(f"not a readable .tflite file: {e}") from None


def file_quantizations(tflite):
    """The `quantization` modes compatible with a `.tflite` (path or
    bytes), read from its tensor types and ops, e.g. `("int8",)`; a float
    file whose weights were all too small to quantise gives
    `("none", "dynamic")`."""
    return _compatible_quantizations(_interpreter(_read_bytes(tflite)[0]))


def _signature(flatbuffer, quantization=None):
    """`(key, input details, output details)` of the file's one signature,
    read by LiteRT's Interpreter; checks `quantization` against it."""
    interpreter = _interpreter(flatbuffer)
    if quantization is not None:
        compatible = _compatible_quantizations(interpreter)
        if quantization not in compatible:
            raise ManifestError(
                f"quantization={quantization!r} but the file's tensors and "
                f"ops are those of {' or '.join(map(repr, compatible))}"
            )
    keys = list(interpreter.get_signature_list())
    if len(keys) != 1:
        raise ManifestError(
            f"expected a file with one signature, found {keys or 'none'}"
        )
    runner = interpreter.get_signature_runner(keys[0])
    return keys[0], runner.get_input_details(), runner.get_output_details()


def _file_sequence_mode(key, inputs):
    if key == STREAMING_SIGNATURE_KEY:
        return "streaming"
    for detail in inputs.values():
        signature = list(detail["shape_signature"])
        if len(signature) >= 2 and signature[1] < 0:
            return "variable"
    return "fixed"


def _sequence_length(mode, inputs, states):
    if mode == "streaming":
        return 1
    if mode == "variable":
        return None
    for name, detail in sorted(inputs.items()):
        if name not in states and len(detail["shape"]) >= 2:
            return int(detail["shape"][1])
    return None


def _state_pairs(inputs, outputs):
    """States of a streaming file: names both input and output, as
    `keras_l0.export` names them (`<layer>_h`, `<layer>_c`)."""
    pairs = []
    for name in sorted(set(inputs) & set(outputs)):
        layer, _, kind = name.rpartition("_")
        if kind not in _STATE_KINDS or not layer:
            layer, kind = name, None
        detail = inputs[name]
        pairs.append(
            {
                "input": name,
                "output": name,
                "layer": layer,
                "kind": kind,
                "shape": [int(n) for n in detail["shape"]],
                "dtype": _dtype_name(detail["dtype"]),
            }
        )
    return pairs


def _read_vocabulary(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def _special(special_tokens, vocabulary):
    index = {}
    if vocabulary is not None:
        for i, word in enumerate(vocabulary):
            index.setdefault(word, i)
    result = {}
    for role, token in (special_tokens or {}).items():
        if not isinstance(role, str) or not isinstance(token, str):
            raise ManifestError(
                "special_tokens must map role names to token strings, got "
                f"{role!r}: {token!r}"
            )
        token_id = index.get(token)
        if vocabulary is not None and token_id is None:
            raise ManifestError(
                f"special token {role}={token!r} is not in the vocabulary"
            )
        result[role] = {"token": token, "id": token_id}
    return result


def _padding(padding, vocabulary):
    """`padding`: None, a token id (int), or a token string."""
    if padding is None:
        return None
    if isinstance(padding, (bool, np.bool_)):
        raise ManifestError(f"padding must be a token or an id, got {padding!r}")
    if isinstance(padding, (int, np.integer)):
        token = None
        if vocabulary is not None:
            if not 0 <= padding < len(vocabulary):
                raise ManifestError(
                    f"padding id {padding} is outside the vocabulary "
                    f"(size {len(vocabulary)})"
                )
            token = vocabulary[padding]
        return {"token": token, "id": int(padding)}
    if isinstance(padding, str):
        if vocabulary is None:
            raise ManifestError(
                f"padding token {padding!r} needs a vocabulary_file to get "
                "its id; pass the id instead"
            )
        if padding not in vocabulary:
            raise ManifestError(f"padding token {padding!r} is not in the vocabulary")
        return {"token": padding, "id": vocabulary.index(padding)}
    raise ManifestError(f"padding must be a token or an id, got {padding!r}")


def _language_model(inputs, outputs, vocabulary_file, special_tokens):
    if vocabulary_file is None:
        if special_tokens:
            raise ManifestError("special_tokens need a vocabulary_file")
        return None, None
    tokens = [t for t in inputs if t["role"] == "tokens"]
    logits = [t for t in outputs if t["role"] == "output"]
    if len(tokens) != 1 or len(logits) != 1:
        raise ManifestError(
            "a language model manifest needs one int32 token input and one "
            f"non-state output; the file has token inputs "
            f"{[t['name'] for t in tokens]} and outputs "
            f"{[t['name'] for t in logits]}"
        )
    vocabulary = None
    path = os.fspath(vocabulary_file)
    if os.path.isfile(path):
        vocabulary = _read_vocabulary(path)
        width = logits[0]["shape"][-1]
        if len(vocabulary) != width:
            raise ManifestError(
                f"the vocabulary {path} has {len(vocabulary)} words but the "
                f"output '{logits[0]['name']}' has {width} logits"
            )
    info = {
        "vocabulary_file": os.path.basename(path),
        "vocabulary_size": None if vocabulary is None else len(vocabulary),
        "token_input": tokens[0]["name"],
        "logits_output": logits[0]["name"],
        "special_tokens": _special(special_tokens, vocabulary),
    }
    return info, vocabulary


def describe(
    tflite,
    *,
    sequence_mode=None,
    quantization="none",
    padding=None,
    vocabulary_file=None,
    special_tokens=None,
    model_file=None,
):
    """The manifest of a `.tflite` file, read from the file itself.

    Args:
        tflite: the file's path, or its bytes.
        sequence_mode: `"fixed"`, `"variable"` or `"streaming"`, as the file
            was exported; `None` (default) reads it from the file (signature
            `"step"`: streaming; an open time axis: variable). When given,
            it must agree with the file.
        quantization: the `quantization` the file was exported with
            (`"none"`, `"dynamic"`, `"float16"`, `"int8"`), checked against
            the file's tensor types and ops (`file_quantizations`); the
            file's input and output tensors' own quantisation parameters
            are recorded per tensor.
        padding: the padding token of a language model, as an id (int) or
            a token string (then `vocabulary_file` must exist); `None` when
            the model has none (a streaming file never pads).
        vocabulary_file: for a language model, the path of its vocabulary
            (one word a line, line `i` is token id `i`), to be kept beside
            the manifest; only its name is recorded. When the file exists
            its size is checked against the logits and recorded.
        special_tokens: for a language model, dict `{role: token}`, e.g.
            `{"end_of_sentence": "<eos>", "unknown": "<unk>"}`; their ids
            are looked up in the vocabulary.
        model_file: the name the `.tflite` has beside the manifest; default
            the base name of `tflite` when it is a path.

    Returns:
        The manifest, a JSON-ready dict (see the module docstring).

    Raises:
        ManifestError: the file cannot be read, has not one signature, or
            disagrees with the arguments.
    """
    if sequence_mode is not None and sequence_mode not in SEQUENCE_MODES:
        raise ManifestError(
            f"sequence_mode must be one of {SEQUENCE_MODES}, got "
            f"{sequence_mode!r}"
        )
    if quantization not in QUANTIZATIONS:
        raise ManifestError(
            f"quantization must be one of {QUANTIZATIONS}, got "
            f"{quantization!r}"
        )
    flatbuffer, path = _read_bytes(tflite)
    key, in_details, out_details = _signature(flatbuffer, quantization)
    found_mode = _file_sequence_mode(key, in_details)
    if sequence_mode is not None and sequence_mode != found_mode:
        raise ManifestError(
            f"sequence_mode={sequence_mode!r} but the file is a "
            f"{found_mode} export (signature '{key}')"
        )
    states = (
        _state_pairs(in_details, out_details)
        if found_mode == "streaming"
        else []
    )
    state_names = {s["input"] for s in states}
    inputs = [
        _tensor(
            name,
            detail,
            "state"
            if name in state_names
            else (
                "tokens"
                if np.issubdtype(detail["dtype"], np.integer)
                else "features"
            ),
        )
        for name, detail in sorted(in_details.items())
    ]
    outputs = [
        _tensor(name, detail, "state" if name in state_names else "output")
        for name, detail in sorted(out_details.items())
    ]
    language_model, vocabulary = _language_model(
        inputs, outputs, vocabulary_file, special_tokens
    )
    if model_file is None:
        model_file = os.path.basename(path) if path else None
    batch = {t["shape"][0] for t in inputs if t["shape"]}
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {
            "file": model_file,
            "bytes": len(flatbuffer),
            "sha256": hashlib.sha256(flatbuffer).hexdigest(),
        },
        "signature": key,
        "sequence_mode": found_mode,
        "batch_size": batch.pop() if len(batch) == 1 else None,
        "sequence_length": _sequence_length(found_mode, in_details, state_names),
        "quantization": quantization,
        "inputs": inputs,
        "outputs": outputs,
        "states": states,
        "padding": _padding(padding, vocabulary),
        "language_model": language_model,
    }


def write(path, manifest):
    """Writes `manifest` as JSON to `path` atomically (a temporary file in
    the same folder, then `os.replace`): readers see the old file or the
    new one, never a part. Validates its format first."""
    _check_format(manifest)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def read(path):
    """The manifest in the JSON file `path`, its format validated."""
    with open(os.fspath(path), encoding="utf-8") as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path} is not JSON: {e}") from None
    _check_format(manifest)
    return manifest


def _check_format(manifest):
    if not isinstance(manifest, dict):
        raise ManifestError(f"a manifest is a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise ManifestError(
            f"not a {FORMAT} (format: {manifest.get('format')!r})"
        )
    if manifest.get("version") != VERSION:
        raise ManifestError(
            f"unsupported {FORMAT} version {manifest.get('version')!r} "
            f"(this keras_l0 reads version {VERSION})"
        )
    missing = [k for k in _TOP_KEYS if k not in manifest]
    if missing:
        raise ManifestError(f"the manifest lacks {missing}")


def _differences(expected, got, where=""):
    """Paths at which two JSON values differ (floats to 1e-6 relative)."""
    if isinstance(expected, dict) and isinstance(got, dict):
        out = []
        for key in sorted(set(expected) | set(got), key=str):
            here = f"{where}.{key}" if where else str(key)
            if key not in got:
                out.append(f"{here}: missing")
            elif key not in expected:
                out.append(f"{here}: unexpected")
            else:
                out += _differences(expected[key], got[key], here)
        return out
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return [f"{where}: {len(got)} entries, the file has {len(expected)}"]
        out = []
        for i, (a, b) in enumerate(zip(expected, got)):
            label = a.get("name") or a.get("input") if isinstance(a, dict) else None
            out += _differences(a, b, f"{where}[{label or i}]")
        return out
    if isinstance(expected, float) or isinstance(got, float):
        if (
            isinstance(got, (int, float))
            and not isinstance(got, bool)
            and np.isclose(expected, got, rtol=1e-6, atol=0)
        ):
            return []
    elif type(expected) is type(got) and expected == got:
        return []
    return [f"{where}: {got!r} in the manifest, {expected!r} in the file"]


def check(manifest, tflite, *, base_dir=None):
    """Verifies a manifest against its `.tflite` file.

    Describes the file again, with the manifest's own sequence mode,
    quantization, padding and language-model fields (the vocabulary read
    from `base_dir` when it is there), and compares everything: signature,
    every input and output (names, roles, shapes, dtypes, quantisation
    parameters), the state pairs, sizes and the file's sha256.

    Args:
        manifest: the manifest dict (e.g. from `read`).
        tflite: the file's path or bytes.
        base_dir: the folder of the manifest, where its vocabulary file is;
            default the folder of `tflite` when it is a path.

    Returns:
        None.

    Raises:
        ManifestError: naming every field that differs.
    """
    _check_format(manifest)
    flatbuffer, path = _read_bytes(tflite)
    if base_dir is None and path is not None:
        base_dir = os.path.dirname(os.path.abspath(path))
    lm = manifest.get("language_model")
    if lm is not None and not isinstance(lm, dict):
        raise ManifestError("language_model must be an object or null")
    vocabulary_file = None
    special = None
    if lm:
        vocabulary_file = lm.get("vocabulary_file")
        if not isinstance(vocabulary_file, str):
            raise ManifestError("language_model.vocabulary_file must be a name")
        if base_dir is not None:
            vocabulary_file = os.path.join(base_dir, vocabulary_file)
        special = {
            role: (entry or {}).get("token")
            for role, entry in (lm.get("special_tokens") or {}).items()
        }
    padding = manifest.get("padding")
    if isinstance(padding, dict):
        padding = padding.get("id")
    try:
        expected = describe(
            flatbuffer,
            sequence_mode=None,
            quantization=manifest.get("quantization"),
            padding=padding,
            vocabulary_file=vocabulary_file,
            special_tokens=special,
            model_file=(manifest.get("model") or {}).get("file"),
        )
    except ManifestError as e:
        raise ManifestError(f"the manifest does not match the file: {e}") from None
    if lm and expected["language_model"]["vocabulary_size"] is None:
        # No vocabulary file to read: keep what the manifest says of it.
        expected["language_model"]["vocabulary_size"] = lm.get("vocabulary_size")
        for role, entry in expected["language_model"]["special_tokens"].items():
            entry["id"] = ((lm.get("special_tokens") or {}).get(role) or {}).get("id")
        if expected["padding"] is not None:
            expected["padding"]["token"] = (manifest.get("padding") or {}).get("token")
    differences = _differences(expected, manifest)
    if differences:
        raise ManifestError(
            "the manifest does not match the file: " + "; ".join(differences)
        )
