"""Runtime checks of exported files with LiteRT: verify and benchmark."""

import time

import keras
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from keras_l0.export import _tf_compat
from keras_l0.export._common import DEFAULT_SEQUENCE_LENGTH
from keras_l0.export._common import ExportError
from keras_l0.export._common import check_count
from keras_l0.export._common import functional
from keras_l0.export._common import input_names
from keras_l0.export._common import input_specs
from keras_l0.export._common import is_masked
from keras_l0.export._common import layers
from keras_l0.export._common import model_sequence_length
from keras_l0.export._common import output_names
from keras_l0.export._flatbuffer import flatbuffer_model

SIGNATURE_KEY = "serving_default"
STREAMING_SIGNATURE_KEY = "step"
# Padding steps added to (or, in fixed-length files, written into) the
# sequences of masked models by verify(), cycling.
_PADDING_COUNTS = (1, 3, 2)


def signature_runner(flatbuffer):
    flatbuffer_model(flatbuffer)
    interpreter = Interpreter(model_content=bytes(flatbuffer))
    keys = list(interpreter.get_signature_list())
    if len(keys) != 1:
        raise ExportError(
            f"Expected a file with one signature, found {keys or 'none'}."
        )
    return keys[0], interpreter.get_signature_runner(keys[0])


class _FreshStates:
    """Runs a model with stateful layers from zero states at every call,
    restoring their states afterwards."""

    def __init__(self, model):
        self.model = model
        self.layers = [l for l in layers(model) if getattr(l, "stateful", 0)]

    def __enter__(self):
        self.saved = [
            [keras.ops.convert_to_numpy(v) for v in l.states]
            for l in self.layers
        ]
        return self

    def __call__(self, inputs):
        for layer in self.layers:
            layer.reset_state()
        packed = keras.tree.pack_sequence_as(
            _tf_compat.inputs_struct(functional(self.model)), inputs
        )
        return [
            keras.ops.convert_to_numpy(y)
            for y in keras.tree.flatten(self.model(packed, training=False))
        ]

    def __exit__(self, *exc):
        for layer, values in zip(self.layers, self.saved):
            for variable, value in zip(layer.states, values):
                variable.assign(value)


def verify(
    flatbuffer,
    model,
    *,
    num_samples=4,
    seed=0,
    streaming=False,
    sequence_length=None,
    return_scale=False,
):
    """Largest absolute difference between a TFLite file and its model.

    Runs `num_samples` random valid input batches (standard normal features,
    uniform token ids) through the Keras model and through LiteRT, one after
    the other on the same interpreter (so state leaking between calls would
    show). A streaming file is stepped through each sequence from zero
    states, feeding back its output states, and compared at every step for
    outputs with a time axis, at the last step for the others. Stateful
    Keras layers run from zero states for every sample (their states are
    restored afterwards), as the file does.

    Masked models (`Masking`, `Embedding(mask_zero=True)`): a
    variable-length or streaming file is fed the unpadded sequence while
    Keras gets it padded with 1 to 3 padding steps, before and after in
    turn, the outputs being compared at the real steps; a fixed-length file
    and Keras both get sequences whose first or last steps are padding.

    Args:
        flatbuffer: the file's `bytes`, from `to_tflite(model, ...)`.
        model: the Keras model it was exported from.
        num_samples: number of input batches. Default 4.
        seed: seed of the random inputs.
        streaming: whether the file is a streaming (`"step"`) export.
        sequence_length: the number of (real) time steps to check; by
            default the file's (full-sequence files with a fixed length),
            else the model's, else `DEFAULT_SEQUENCE_LENGTH`.
        return_scale: also return the largest absolute Keras output.

    Returns:
        The max abs difference over all outputs, samples and steps (float),
        and with `return_scale=True` the pair `(difference, scale)`.
    """
    num_samples = check_count(num_samples, "num_samples")
    key, runner = signature_runner(flatbuffer)
    expected_key = STREAMING_SIGNATURE_KEY if streaming else SIGNATURE_KEY
    if key != expected_key:
        raise ExportError(
            f"The file's signature is '{key}'; verify(streaming={streaming}) "
            f"expects '{expected_key}'."
        )
    details = runner.get_input_details()
    names = input_names(model)
    outputs = output_names(model)
    for kind, wanted, found in (
        ("inputs", names, details),
        ("outputs", outputs, runner.get_output_details()),
    ):
        missing = [name for name in wanted if name not in found]
        if missing:
            raise ExportError(
                f"The file lacks the model's {kind} {missing}; it has "
                f"{sorted(found)}."
            )
    batch_size = int(details[names[0]]["shape"][0])
    specs = input_specs(model, batch_size)
    file_length = None
    if not streaming and specs[0].is_sequence:
        file_length = int(details[names[0]]["shape_signature"][1])
        file_length = None if file_length < 0 else file_length
    if sequence_length is not None:
        sequence_length = check_count(sequence_length, "sequence_length")
        if file_length not in (None, sequence_length):
            raise ExportError(
                f"sequence_length={sequence_length} conflicts with the "
                f"file's fixed sequence length {file_length}."
            )
    length = (
        file_length
        or sequence_length
        or model_sequence_length(specs)
        or DEFAULT_SEQUENCE_LENGTH
    )
    masked = is_masked(model)
    unpadded = masked and file_length is None
    if masked and unpadded and model_sequence_length(specs) is not None:
        raise ExportError(
            "A masked model with a fixed sequence length can only be checked "
            "on padded sequences; export it with that fixed length."
        )
    specs = [spec.with_length(length) for spec in specs]
    state_names = [name for name in details if name not in names]
    rng = np.random.default_rng(seed)
    worst = scale = 0.0
    with _FreshStates(model) as keras_model:
        for sample in range(num_samples):
            inputs = [spec.random(rng, length) for spec in specs]
            count = _PADDING_COUNTS[sample % len(_PADDING_COUNTS)] * masked
            before = sample % 2 == 0
            if unpadded:
                padded = [s.pad(x, count, before) for s, x in zip(specs, inputs)]
            elif masked:
                count = min(count, length - 1)
                inputs = padded = [
                    s.pad(x[:, : length - count], count, before)
                    if s.is_sequence
                    else x
                    for s, x in zip(specs, inputs)
                ]
            else:
                padded = inputs
            expected = keras_model(padded)
            if unpadded and count:
                expected = [
                    _real_steps(y, count, before, length) for y in expected
                ]
            scale = max([scale] + [float(np.max(np.abs(y))) for y in expected if y.size])
            if not streaming:
                got = runner(**dict(zip(names, inputs)))
                for name, y in zip(outputs, expected):
                    worst = max(worst, _max_diff(name, got[name], y))
                continue
            states = {
                name: np.zeros(details[name]["shape"], np.float32)
                for name in state_names
            }
            for t in range(length):
                step = {
                    name: x[:, t : t + 1] if spec.is_sequence else x
                    for name, x, spec in zip(names, inputs, specs)
                }
                got = runner(**step, **states)
                states = {name: got[name] for name in state_names}
                for name, y in zip(outputs, expected):
                    y = _step_of(y, got[name], t, length)
                    if y is not None:
                        worst = max(worst, _max_diff(name, got[name], y))
    return (worst, scale) if return_scale else worst


def _real_steps(y, count, before, length):
    """The real (unpadded) steps of an output with a time axis."""
    if y.ndim >= 3 and y.shape[1] == length + count:
        return y[:, count:] if before else y[:, :length]
    return y


def _step_of(expected, got, t, length):
    """The part of a full-sequence output that step `t` should give."""
    if (
        expected.ndim >= 2
        and expected.ndim == got.ndim
        and expected.shape[1] == length
        and got.shape[1] == 1
    ):
        return expected[:, t : t + 1]
    return expected if t == length - 1 else None


def _max_diff(name, got, expected):
    if got.shape != expected.shape:
        raise ExportError(
            f"Output '{name}' has the shape {got.shape} in the file and "
            f"{expected.shape} in Keras."
        )
    if not got.size:
        return 0.0
    return float(np.max(np.abs(got.astype(np.float64) - expected)))


def benchmark(
    flatbuffers, *, runs=50, warmup=5, num_threads=1, sequence_length=None
):
    """Median latency of TFLite files, measured interleaved.

    Each file gets its own LiteRT interpreter with random inputs (standard
    normal floats, states included; token id 0). After `warmup` untimed
    rounds, `runs` rounds each invoke every file once, the order rotating
    from round to round, so that all files see the same machine conditions
    and their ratios are fair. Only `invoke()` is timed.

    Args:
        flatbuffers: dict `{name: flatbuffer bytes}`.
        runs: timed invocations per file. Default 50.
        warmup: untimed invocations per file first. Default 5.
        num_threads: LiteRT CPU threads. Default 1.
        sequence_length: length given to open time axes (files exported
            with `sequence_length="variable"`); required for those.

    Returns:
        dict `{name: median milliseconds per invocation}`.
    """
    runs = check_count(runs, "runs")
    warmup = check_count(warmup, "warmup", minimum=0)
    num_threads = check_count(num_threads, "num_threads")
    if not flatbuffers:
        raise ExportError("`flatbuffers` is empty: nothing to time.")
    rng = np.random.default_rng(0)
    interpreters = {}
    for name, flatbuffer in flatbuffers.items():
        flatbuffer_model(flatbuffer)
        interpreter = Interpreter(
            model_content=bytes(flatbuffer), num_threads=num_threads
        )
        for detail in interpreter.get_input_details():
            shape = list(detail["shape_signature"])
            if len(shape) >= 2 and shape[1] < 0:
                if sequence_length is None:
                    raise ExportError(
                        f"'{name}' has a variable sequence length; pass "
                        "`sequence_length`."
                    )
                shape[1] = check_count(sequence_length, "sequence_length")
                interpreter.resize_tensor_input(detail["index"], shape)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            shape = detail["shape"]
            if np.issubdtype(detail["dtype"], np.floating):
                value = rng.standard_normal(shape).astype(detail["dtype"])
            else:
                value = np.zeros(shape, detail["dtype"])
            interpreter.set_tensor(detail["index"], value)
        interpreters[name] = interpreter
    names = list(interpreters)
    times = {name: [] for name in names}
    for round_ in range(warmup + runs):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            interpreter = interpreters[name]
            start = time.perf_counter()
            interpreter.invoke()
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                times[name].append(elapsed)
    return {name: float(np.median(times[name]) * 1e3) for name in names}
