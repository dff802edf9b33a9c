"""`keras-l0-shrink`: shrink a gated `.keras` model and export it to TFLite.

Reads a trained model with `keras_l0` gated layers, removes its closed
neurons (`keras_l0.shrink`), and writes into an output folder the slim
`.keras`, its `.tflite` (and, with `--streaming`, a one-step-per-call
`.tflite`) and `report.json`. It prints, per recurrent layer, units and inputs
before -> after, parameters and FLOPs per time step, the file sizes, the
largest output difference gated vs slim (Keras) and Keras vs TFLite, and the
latency of the dense and the slim TFLite model measured side by side.

The "dense" model is the gated model with every gate open: the plain Keras
model at the original sizes, which is what one would ship without pruning.

Checks. The tool refuses (exit status 2, nothing written) a slim model
whose outputs differ from the gated model's by more than
`GATED_TOLERANCE` times max(1, the largest gated output) on random inputs
(padded ones too for a masked model), and every `.tflite` it writes whose
LiteRT outputs differ from the slim Keras model's by more than
`keras_l0.export.tolerance(quantization, streaming, scale)` (float32:
1e-4 times max(1, scale); dynamic 3%, float16 0.2%, int8 15% and int8
streaming 75% of the largest output).

Masked models (`Masking`, `Embedding(mask_zero=True)`). With a variable
sequence length (the default for a model without one) and in streaming
form, the `.tflite` takes the unpadded sequence: the app feeds only the real
steps, never the padding token or value, which `report.json` names under
`"padding"`. With `--seq-len N` it takes padded sequences of N steps and
computes the mask itself (its LSTMs are then not fused).

The input file is never modified. The outputs are built in a temporary
folder next to their destination and moved into place at the end: a new
output folder appears whole or not at all; in an existing one (`--force` to
overwrite earlier outputs) each file is replaced atomically, `report.json`
last. A user mistake is one `keras-l0-shrink: error: ...` line on stderr and
exit status 2.

Example:

```
keras-l0-shrink model.keras -o model_slim --quantization dynamic --streaming
```
"""

import contextlib
import json
import os
import shutil
import sys
import warnings
import zipfile
import zlib

import keras
import numpy as np

import keras_l0
from keras_l0 import export
from keras_l0 import manifest
from keras_l0.gate_copy import FIXED_LOG_ALPHA
from keras_l0.shrink import ShrinkError
from keras_l0.shrink import gated_layers
from keras_l0.shrink import shrink
from keras_l0.summary import flops_per_step
from keras_l0.summary import summary
from keras_l0.cli._common import GATED_TOLERANCE
from keras_l0.cli._common import PROG
from keras_l0.cli._common import REPORT_NAME
from keras_l0.cli._common import UsageError
from keras_l0.cli._parser import build_parser
from keras_l0.cli._progress import _Progress
from keras_l0.cli._progress import _error
from keras_l0.cli._progress import _own_stream
from keras_l0.cli._report import format_report
from keras_l0.cli._report import _arrow
from keras_l0.cli._staging import _Staging
from keras_l0.cli._staging import _sha256
from keras_l0_shrink import native_stderr_to_file

VOCABULARY_NAME = "vocabulary.txt"
CHECK_BATCH_SIZE = 4
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"


def _check_input(path):
    """Raises `UsageError` unless `path` is a readable, intact `.keras`."""
    if not os.path.exists(path):
        raise UsageError(f"no such file: {path}")
    if os.path.isdir(path):
        raise UsageError(f"{path} is a folder, not a .keras file")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}")
    if head.startswith(_HDF5_SIGNATURE):
        raise UsageError(
            f"{path} is a legacy HDF5 model; load it and save it as .keras"
        )
    if not zipfile.is_zipfile(path):
        if head.startswith(_ZIP_SIGNATURE):
            raise UsageError(f"{path} is a corrupt or truncated .keras archive")
        raise UsageError(f"{path} is not a Keras model (.keras zip archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad_member = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
        raise UsageError(f"{path} is a corrupt .keras archive: {e}")
    if bad_member is not None:
        raise UsageError(
            f"{path} is a corrupt .keras archive: bad CRC in {bad_member}"
        )
    if "config.json" not in names:
        raise UsageError(
            f"{path} is not a Keras model: its archive has no config.json"
        )


def _load(path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras.models.load_model(path, compile=False)
    except Exception as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UsageError(
            f"cannot load {path} as a Keras model: "
            f"{type(e).__name__}: {message}"
        )
    if not isinstance(model, keras.Model):
        raise UsageError(
            f"{path} holds a {type(model).__name__}, not a keras.Model"
        )
    return model


def _log_alphas(layer):
    cell = layer.cell
    return [
        v
        for v in (cell.input_log_alpha, cell.hidden_log_alpha)
        if v is not None
    ]


def _dense_equivalent(path):
    """The plain Keras model at full size: a fresh copy of the model in
    `path` with every gate open, shrunk (nothing is removed)."""
    model = _load(path)
    for layer in gated_layers(model):
        for variable in _log_alphas(layer):
            variable.assign(np.full(variable.shape, FIXED_LOG_ALPHA, "float32"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return shrink(model)


def _check_inputs(model, batch_size, sequence_length, seed=0):
    """Random valid inputs for `model`, as `keras_l0.export.verify` draws
    them: token ids within the vocabulary for inputs read by an
    `Embedding`, standard normal features otherwise."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in export.input_specs(model, batch_size):
        x = spec.random(rng, sequence_length)
        if spec.padding is not None and spec.is_sequence:
            # Odd rows pre-padded, a third of their steps.
            count = max(1, x.shape[1] // 3)
            padded = spec.pad(x[:, : x.shape[1] - count], count, True)
            x[1::2] = padded[1::2]
        arrays.append(x)
    return arrays


def _outputs(model, inputs):
    result = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    return [keras.ops.convert_to_numpy(y) for y in keras.tree.flatten(result)]


def _max_abs_diff(model_a, model_b, inputs):
    """Largest |a - b| over the outputs, and the largest |a|."""
    outputs_a = _outputs(model_a, inputs)
    diff = max(
        float(np.max(np.abs(a.astype("float64") - b.astype("float64"))))
        for a, b in zip(outputs_a, _outputs(model_b, inputs))
    )
    return diff, max(float(np.max(np.abs(a))) for a in outputs_a)


def _model_batch_size(model):
    for tensor in model.inputs:
        if tensor.shape and tensor.shape[0] is not None:
            return tensor.shape[0]
    return None


def _check_file(what, flatbuffer, slim, quantization, **kwargs):
    """`export.verify`, raising `UsageError` above the tolerance."""
    streaming = kwargs.get("streaming", False)
    diff, scale = export.verify(flatbuffer, slim, return_scale=True, **kwargs)
    allowed = export.tolerance(quantization, streaming, scale)
    if not diff <= allowed:
        raise UsageError(
            f"the {what} differs from the slim Keras model by {diff:.3g} "
            f"(largest output {scale:.3g}; accepted with --quantization "
            f"{quantization}: {allowed:.3g}); nothing written"
        )
    return diff


def _model_sequence_length(model):
    for tensor in model.inputs:
        if len(tensor.shape) >= 2 and tensor.shape[1] is not None:
            return tensor.shape[1]
    return None


def _padding(slim, names, file_length, streaming):
    """`{file: {input: padding token or value}}` for the files of a masked
    model that take unpadded sequences."""
    contract = export.padding_contract(slim)
    if not contract:
        return {}
    files = {}
    if file_length == export.VARIABLE_LENGTH:
        files[names["tflite"]] = contract
    if streaming:
        files[names["streaming_tflite"]] = contract
    return files


def _output_names(stem, streaming, vocabulary):
    names = {
        "keras": f"{stem}_slim.keras",
        "tflite": f"{stem}_slim.tflite",
        "manifest": f"{stem}_slim.manifest.json",
        "report": REPORT_NAME,
    }
    if streaming:
        names["streaming_tflite"] = f"{stem}_slim_streaming.tflite"
        names["streaming_manifest"] = f"{stem}_slim_streaming.manifest.json"
    if vocabulary:
        names["vocabulary"] = VOCABULARY_NAME
    return names


def _write_manifests(args, names, staging, slim):
    """`<name>.manifest.json` beside every `.tflite`, checked against it.

    The padding token recorded is the mask token of a masked token input
    (`Embedding(mask_zero=True)`): a fixed-length file pads with it, a
    variable-length or streaming file must never be fed it."""
    tokens = [
        value
        for value in export.padding_contract(slim).values()
        if isinstance(value, (int, np.integer))
    ]
    pad = int(tokens[0]) if len(tokens) == 1 else None
    vocabulary = None
    if args.vocabulary:
        vocabulary = staging.file(names["vocabulary"])
        try:
            shutil.copyfile(args.vocabulary, vocabulary)
        except OSError as e:
            raise UsageError(
                f"cannot read --vocabulary {args.vocabulary}: {e.strerror}"
            )
    pairs = [("tflite", "manifest")]
    if args.streaming:
        pairs.append(("streaming_tflite", "streaming_manifest"))
    for tflite, manifest_name in pairs:
        path = staging.file(names[tflite])
        try:
            info = manifest.describe(
                path,
                quantization=args.quantization,
                padding=pad,
                vocabulary_file=vocabulary,
                special_tokens=dict(args.special_token or ()),
            )
            manifest.write(staging.file(names[manifest_name]), info)
            manifest.check(
                manifest.read(staging.file(names[manifest_name])), path
            )
        except manifest.ManifestError as e:
            raise UsageError(f"{args.model}: manifest: {e}")


def _check_backend():
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise UsageError(
            "the TFLite export needs the TensorFlow backend; run with "
            f"KERAS_BACKEND=tensorflow (current backend: {backend})"
        )


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _calibration(args):
    """The int8 representative dataset: --calibration-data, else random."""
    path = args.calibration_data
    if args.quantization != "int8":
        if path:
            raise UsageError("--calibration-data needs --quantization int8")
        return None
    if not path:
        return export.RANDOM_DATASET
    try:
        data = np.load(path, allow_pickle=False)
    except OSError as e:
        raise UsageError(f"cannot read --calibration-data {path}: {e}")
    except ValueError:
        raise UsageError(
            f"--calibration-data {path} is not a .npy or .npz file of arrays"
        )
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            return [{name: data[name] for name in data.files}]
    return [data]


def _run(args, progress):
    _check_backend()
    source = os.path.abspath(args.model)
    _check_input(args.model)
    calibration = _calibration(args)
    if args.vocabulary and not os.path.isfile(args.vocabulary):
        raise UsageError(f"--vocabulary {args.vocabulary}: no such file")
    if args.special_token and not args.vocabulary:
        raise UsageError("--special-token needs --vocabulary")
    stem = os.path.basename(source)
    if stem.endswith(".keras"):
        stem = stem[: -len(".keras")]
    output_dir = os.path.abspath(
        args.output_dir
        or os.path.join(os.path.dirname(source), f"{stem}_slim")
    )
    names = _output_names(stem, args.streaming, args.vocabulary)
    for name in names.values():
        target = os.path.join(output_dir, name)
        if os.path.exists(target) and os.path.samefile(target, source):
            raise UsageError(f"output {target} would overwrite the input")

    progress.total = 9 + args.streaming + 2 * (not args.no_benchmark)
    staging = _Staging(output_dir, list(names.values()), args.force)
    try:
        report = _build(args, progress, source, names, staging, calibration)
        with progress.step(f"Moving the outputs into {output_dir}"):
            staging.commit()
    finally:
        staging.cleanup()
    report["output_dir"] = output_dir
    return report


def _build(args, progress, source, names, staging, calibration):
    with progress.step(f"Loading {os.path.basename(source)}"):
        model = _load(source)
    model_length = _model_sequence_length(model)
    fixed_length = args.seq_len if isinstance(args.seq_len, int) else None
    if fixed_length and model_length not in (None, fixed_length):
        raise UsageError(
            f"--seq-len {fixed_length} conflicts with the model's fixed "
            f"sequence length {model_length}"
        )
    file_length = args.seq_len or model_length or export.VARIABLE_LENGTH
    check_length = (
        model_length or fixed_length or export.DEFAULT_SEQUENCE_LENGTH
    )
    model_batch = _model_batch_size(model)
    if args.batch is None:
        args.batch = model_batch or 1
    gated = gated_layers(model)
    warning_messages = []
    if gated:
        with progress.step("Removing closed neurons"):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("ignore")
                warnings.simplefilter("always", UserWarning)
                try:
                    slim = shrink(model)
                except ShrinkError as e:
                    raise UsageError(f"{args.model}: {e}")
            warning_messages = list(
                dict.fromkeys(str(w.message) for w in caught)
            )
        with progress.step("Building the dense model (every gate open)"):
            dense = _dense_equivalent(source)
    elif args.export_ungated:
        progress.total -= 2 + (not args.no_benchmark)
        slim = dense = model
    else:
        raise UsageError(
            f"{args.model} has no keras_l0 gated layer, nothing to shrink "
            "(use --export-ungated to export it unchanged)"
        )
    if calibration == export.RANDOM_DATASET:
        warning_messages.append(
            "int8 calibrated on random inputs, which only suits a smoke "
            "test; pass --calibration-data"
        )
    for message in warning_messages:
        progress.warn(message)
    try:
        rows = summary(model, print_fn=None)
    except ShrinkError as e:
        raise UsageError(f"{args.model}: {e}")

    with progress.step("Comparing gated and slim Keras outputs"):
        inputs = _check_inputs(
            model, model_batch or CHECK_BATCH_SIZE, check_length
        )
        keras_diff, scale = _max_abs_diff(model, slim, inputs)
        allowed = GATED_TOLERANCE * max(1.0, scale)
        if not keras_diff <= allowed:
            raise UsageError(
                f"{args.model}: the slim model differs from the gated one "
                f"by {keras_diff:.3g} (largest output {scale:.3g}; accepted: "
                f"{allowed:.3g}); nothing written"
            )

    with progress.step("Saving the slim .keras"):
        if gated:
            slim.save(staging.file(names["keras"]))
        else:
            shutil.copyfile(source, staging.file(names["keras"]))

    convert = dict(
        batch_size=args.batch,
        quantization=args.quantization,
        representative_dataset=calibration,
    )
    tflites = {}
    diffs = {"gated_vs_slim_keras": keras_diff}
    latency = None
    try:
        with progress.step("Converting the slim model to TFLite"):
            tflites["slim"] = export.to_tflite(
                slim,
                staging.file(names["tflite"]),
                sequence_length=file_length,
                **convert,
            )
        if gated and not args.no_benchmark:
            with progress.step("Converting the dense model to TFLite"):
                tflites["dense"] = export.to_tflite(
                    dense, sequence_length=file_length, **convert
                )
        elif not gated:
            tflites["dense"] = tflites["slim"]
        if args.streaming:
            with progress.step("Converting the streaming TFLite"):
                tflites["streaming"] = export.to_tflite(
                    slim,
                    staging.file(names["streaming_tflite"]),
                    streaming=True,
                    **convert,
                )
        with progress.step("Comparing Keras and TFLite outputs"):
            diffs["keras_vs_tflite"] = _check_file(
                "TFLite model",
                tflites["slim"],
                slim,
                args.quantization,
                sequence_length=check_length,
            )
            if args.streaming:
                diffs["keras_vs_streaming_tflite"] = _check_file(
                    "streaming TFLite model",
                    tflites["streaming"],
                    slim,
                    args.quantization,
                    streaming=True,
                    sequence_length=check_length,
                )
        with progress.step("Writing the manifests"):
            _write_manifests(args, names, staging, slim)
        if not args.no_benchmark:
            with progress.step("Timing the dense and the slim TFLite"):
                timings = export.benchmark(
                    {"dense": tflites["dense"], "slim": tflites["slim"]},
                    runs=args.runs,
                    sequence_length=check_length,
                )
            latency = {
                "dense": timings["dense"],
                "slim": timings["slim"],
                "speedup": timings["dense"] / timings["slim"],
                "runs": args.runs,
                "num_threads": 1,
            }
    except export.ExportError as e:
        raise UsageError(f"{args.model}: cannot export to TFLite: {e}")

    report = {
        "tool": PROG,
        "version": keras_l0.__version__,
        "input": {
            "path": source,
            "bytes": os.path.getsize(source),
            "sha256": _sha256(source),
            "gated": bool(gated),
        },
        "options": {
            "quantization": args.quantization,
            "calibration_data": args.calibration_data,
            "batch_size": args.batch,
            "sequence_length": file_length,
            "check_sequence_length": check_length,
            "streaming": args.streaming,
        },
        "padding": _padding(slim, names, file_length, args.streaming),
        "tolerances": {
            "gated_vs_slim_keras": GATED_TOLERANCE * max(1.0, scale),
            "keras_vs_tflite_fraction": export.TOLERANCES[
                args.quantization, False
            ],
        },
        "outputs": {k: v for k, v in names.items() if k != "report"},
        "layers": rows,
        "params": {
            "gated": model.count_params(),
            "dense": dense.count_params(),
            "slim": slim.count_params(),
        },
        "flops_per_step": {
            "dense": flops_per_step(dense),
            "slim": flops_per_step(slim),
        },
        "file_bytes": {
            "gated_keras": os.path.getsize(source),
            "slim_keras": os.path.getsize(staging.file(names["keras"])),
            "dense_tflite": len(tflites["dense"]) if "dense" in tflites else None,
            "slim_tflite": len(tflites["slim"]),
        },
        "max_abs_diff": diffs,
        "latency_ms": latency,
        "warnings": warning_messages,
    }
    if args.streaming:
        report["file_bytes"]["streaming_tflite"] = len(tflites["streaming"])
    report = _json_ready(report)
    with open(staging.file(REPORT_NAME), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    return report


def main(argv=None):
    """Runs `keras-l0-shrink` on `argv` (default: `sys.argv[1:]`).

    Returns:
        The exit status: 0 on success, 2 on a user mistake (after one
        `keras-l0-shrink: error: ...` line on stderr), 130 when interrupted.
    """
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:
            return e.code or 0
        stream = _own_stream(sys.stderr)
        try:
            with contextlib.ExitStack() as stack:
                if not args.verbose:
                    stack.enter_context(
                        native_stderr_to_file(
                            quiet=(UsageError, KeyboardInterrupt)
                        )
                    )
                report = _run(args, _Progress(stream, not args.quiet))
        finally:
            if stream is not sys.stderr:
                stream.close()
    except UsageError as e:
        _error(e)
        return 2
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    if not args.quiet:
        print(format_report(report, _arrow(sys.stdout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
