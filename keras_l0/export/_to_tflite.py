"""`to_tflite`: trace, convert, edit and check one file."""

import keras

from keras_l0.export import _tf_compat
from keras_l0.export._common import VARIABLE_LENGTH
from keras_l0.export._common import ExportError
from keras_l0.export._common import InputSpec
from keras_l0.export._common import check_count
from keras_l0.export._common import functional
from keras_l0.export._common import input_specs
from keras_l0.export._common import is_masked
from keras_l0.export._common import model_sequence_length
from keras_l0.export._common import output_names
from keras_l0.export._convert import RANDOM_DATASET
from keras_l0.export._convert import calibration
from keras_l0.export._convert import concrete_function
from keras_l0.export._convert import convert
from keras_l0.export._flatbuffer import finish
from keras_l0.export._flatbuffer import op_names
from keras_l0.export._flatbuffer import write_atomic
from keras_l0.export._runtime import SIGNATURE_KEY
from keras_l0.export._runtime import STREAMING_SIGNATURE_KEY
from keras_l0.export._runtime import verify
from keras_l0.export._trace import Trace
from keras_l0.export._trace import zero_states

QUANTIZATIONS = ("none", "dynamic", "float16", "int8")
# Largest accepted |LiteRT - Keras|, as a fraction of the largest |Keras
# output| (float32 files: of max(1, that)), per (quantization, streaming).
# Quantized files were measured (tests/test_export.py) at dynamic <= 0.9%,
# float16 <= 0.042%, int8 <= 4.6%, int8 streaming up to 31% of the output
# scale; the tolerances leave a margin of about 3x (int8 streaming: 2.5x).
TOLERANCES = {
    ("none", False): 1e-4,
    ("none", True): 1e-4,
    ("dynamic", False): 0.03,
    ("dynamic", True): 0.03,
    ("float16", False): 2e-3,
    ("float16", True): 2e-3,
    ("int8", False): 0.15,
    ("int8", True): 0.75,
}


def tolerance(quantization, streaming, scale):
    """The largest |LiteRT - Keras| accepted for a file.

    Args:
        quantization: the file's quantization mode.
        streaming: whether it is a streaming file.
        scale: the largest absolute Keras output on the checked inputs.
    """
    fraction = TOLERANCES[quantization, bool(streaming)]
    if quantization == "none":
        return fraction * max(1.0, scale)
    return fraction * scale


def padding_contract(model):
    """What an app feeds a variable-length or streaming file of `model`.

    Returns:
        `{input name: padding}` for the inputs of a masked model whose
        padding the file must not be fed (token id 0 of an
        `Embedding(mask_zero=True)`, the `mask_value` of a `Masking`); an
        empty dict for a model without mask.
    """
    if not is_masked(model):
        return {}
    return {
        spec.name: spec.padding
        for spec in input_specs(model, 1)
        if spec.padding is not None
    }


def _mask_droppers(model):
    """Layers that read a masked tensor but ignore the mask."""
    graph = functional(model)
    masked = set()
    droppers = []
    for node in _tf_compat.nodes(graph):
        layer = node.operation
        if layer is None or node.is_input:
            continue
        reads = any(id(x) in masked for x in node.input_tensors)
        source = type(layer) is keras.layers.Masking or (
            type(layer) is keras.layers.Embedding and layer.mask_zero
        )
        if reads and not getattr(layer, "supports_masking", True):
            droppers.append(layer)
        elif reads or source:
            masked.update(id(y) for y in node.outputs)
    return droppers


def _export_length(specs, sequence_length):
    """The time length of the exported file (None: variable)."""
    model_length = model_sequence_length(specs)
    if sequence_length is None:
        if model_length is None and any(s.is_sequence for s in specs):
            raise ExportError(
                "The model's sequence length is undefined; pass "
                "`sequence_length` (an int, or 'variable')."
            )
        return model_length
    if sequence_length == VARIABLE_LENGTH:
        return None
    length = check_count(sequence_length, "sequence_length")
    if model_length is not None and model_length != length:
        raise ExportError(
            f"sequence_length={length} conflicts with the model's fixed "
            f"sequence length {model_length}."
        )
    return length


def _check(flatbuffer, model, quantization, streaming, unpadded):
    diff, scale = verify(
        flatbuffer, model, streaming=streaming, return_scale=True
    )
    allowed = tolerance(quantization, streaming, scale)
    if diff <= allowed:
        return
    kind = "streaming file" if streaming else "file"
    message = (
        f"The {kind} differs from Keras by {diff:.3g} (largest output "
        f"{scale:.3g}; accepted for quantization='{quantization}': "
        f"{allowed:.3g})"
    )
    if unpadded:
        droppers = _mask_droppers(model)
        names = ", ".join(
            f"'{l.name}' ({type(l).__name__})" for l in droppers
        )
        message += (
            ". The file is fed unpadded sequences, and the model's output "
            "depends on the padding"
            + (f": {names} ignores the mask" if droppers else "")
            + ". Export it with a fixed sequence length: that file takes "
            "padded sequences and computes the mask"
        )
    raise ExportError(message + ".")


def to_tflite(
    model,
    path=None,
    *,
    batch_size=1,
    sequence_length=None,
    quantization="none",
    representative_dataset=None,
    streaming=False,
    check=True,
):
    """Converts a slim Keras model to a LiteRT (TFLite) flatbuffer.

    LSTMs keep their fused TFLite form (one `UNIDIRECTIONAL_SEQUENCE_LSTM`
    op, two for a bidirectional LSTM); every other layer is traced as Keras
    computes it; the file holds builtin ops only. The package docstring
    describes the signatures, names, types, masks and checks.

    Args:
        model: a built `keras.Sequential` or functional `keras.Model` of
            layers that TensorFlow's converter lowers to builtin ops, and
            nested such models. Gated layers must first be removed with
            `keras_l0.shrink`. Not modified.
        path: optional file path; the file is written atomically, only
            once it passed the check.
        batch_size: the file's fixed batch size. Default 1.
        sequence_length: the file's fixed number of time steps. `None`
            (default) takes the model's, which must then be defined.
            `"variable"` leaves the time axis open (a masked model's file
            then takes unpadded sequences, `padding_contract(model)`). Not
            used with `streaming=True`, whose calls take one time step.
        quantization: `"none"` (default, float32), `"dynamic"` (int8
            weights, float activations), `"float16"` (float16 weights) or
            `"int8"` (int8 weights and activations, int16 LSTM cell states,
            float32 inputs and outputs).
        representative_dataset: with `quantization="int8"` only, and then
            required: the calibration inputs, an iterable (or a callable
            returning one) of input batches, each an array (one-input
            models), a list or tuple of arrays in `model.inputs` order, or a
            dict keyed by input name, with full sequences also for
            `streaming=True`. Batches are cut into `batch_size` rows.
            `"random"` calibrates on random valid inputs (standard normal
            features, uniform token ids), which only suits smoke tests.
        streaming: `False` (default): one call runs a whole sequence, from
            zero states. `True`: one call runs one time step, the recurrent
            states being explicit inputs and outputs (signature `"step"`).
        check: run the file with LiteRT against Keras (`verify`) and raise
            when the difference exceeds `tolerance(...)`. Default `True`.

    Returns:
        The flatbuffer, as `bytes`.

    Raises:
        ExportError: for a layer that cannot be exported (named in the
            message), a missing or conflicting sequence length, an invalid
            argument, a failed conversion or a failed check.

    Example:

    >>> from keras_l0 import export
    >>> model = keras.Sequential([
    ...     keras.Input((35, 16)),
    ...     keras.layers.Conv1D(16, 3, padding="same"),
    ...     keras.layers.LSTM(32),
    ...     keras.layers.Dense(4),
    ... ])
    >>> flatbuffer = export.to_tflite(model, "model.tflite")
    >>> "UNIDIRECTIONAL_SEQUENCE_LSTM" in export.op_names(flatbuffer)
    True
    """
    batch_size = check_count(batch_size, "batch_size")
    if quantization not in QUANTIZATIONS:
        raise ExportError(
            f"`quantization` must be one of {QUANTIZATIONS}, got "
            f"{quantization!r}."
        )
    if quantization != "int8" and representative_dataset is not None:
        raise ExportError(
            "`representative_dataset` is only used with quantization='int8'."
        )
    if quantization == "int8" and representative_dataset is None:
        raise ExportError(
            "quantization='int8' needs `representative_dataset` (input "
            f"batches like the real data), or '{RANDOM_DATASET}' for a "
            "smoke test."
        )
    specs = input_specs(model, batch_size)
    masked = is_masked(model)
    if streaming:
        signature_specs = [spec.with_length(1) for spec in specs]
        unpadded = masked
    else:
        length = _export_length(specs, sequence_length)
        specs = signature_specs = [spec.with_length(length) for spec in specs]
        unpadded = masked and length is None
    if unpadded and not padding_contract(model):
        raise ExportError(
            "The model's mask is not computed from an input (by a Masking "
            "layer or an Embedding with mask_zero=True reading it), so the "
            "unpadded inputs of a variable-length or streaming file are "
            "undefined; export it with a fixed sequence length."
        )
    trace = Trace(
        model,
        batch_size,
        streaming=streaming,
        keep_masks=masked and not unpadded,
    )
    if streaming and not trace.state_names:
        raise ExportError(
            "streaming=True needs a recurrent layer; the model has none."
        )
    signature_specs = signature_specs + [
        InputSpec(name, shape, "float32")
        for name, shape in zip(trace.state_names, trace.state_shapes)
    ]
    names = output_names(model) + trace.state_names
    function = concrete_function(trace, signature_specs, names)
    dataset = None
    if quantization == "int8":
        if "WHILE" in op_names(convert(trace, function, "none", None)):
            raise ExportError(
                "quantization='int8' cannot quantize the model's recurrent "
                "loops (GRU, SimpleRNN and LSTMs that do not fuse become "
                "WHILE loops, on which the TF 2.21 calibrator crashes); use "
                "'dynamic' or 'float16', or streaming=True."
            )
        states = list(zip(trace.state_names, zero_states(trace)))

        def dataset():
            return calibration(
                representative_dataset,
                specs,
                batch_size,
                function if streaming else None,
                states,
            )

    flatbuffer = convert(trace, function, quantization, dataset)
    flatbuffer = finish(
        flatbuffer, STREAMING_SIGNATURE_KEY if streaming else SIGNATURE_KEY
    )
    if check:
        _check(flatbuffer, model, quantization, streaming, unpadded)
    if path is not None:
        write_atomic(path, flatbuffer)
    return flatbuffer
