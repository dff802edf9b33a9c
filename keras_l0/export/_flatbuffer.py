"""Edits and queries of TFLite flatbuffers (no TensorFlow graph needed)."""

import os
import tempfile

import numpy as np

from keras_l0.export._common import ExportError
from keras_l0.export._tf_compat import flatbuffer_utils
from keras_l0.export._tf_compat import schema

_TFLITE_IDENTIFIER = b"TFL3"
# Inputs 18 and 19 of UNIDIRECTIONAL_SEQUENCE_LSTM: its output (h) and cell
# (c) states, which the op updates in place.
_LSTM_STATE_INPUTS = (18, 19)
_FILL_VERSIONS = {
    schema.TensorType.INT8: 3,
    schema.TensorType.INT16: 3,
    schema.TensorType.FLOAT16: 4,
}
_NUMPY_TYPES = {
    schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.INT8: np.int8,
    schema.TensorType.INT16: np.int16,
}
_OPERATOR_NAMES = {
    code: name
    for name, code in vars(schema.BuiltinOperator).items()
    if not name.startswith("_")
}


def flatbuffer_model(flatbuffer):
    flatbuffer = bytes(flatbuffer)
    if flatbuffer[4:8] != _TFLITE_IDENTIFIER:
        raise ExportError("Not a TFLite flatbuffer (no 'TFL3' identifier).")
    return schema.Model.GetRootAs(flatbuffer, 0)


def op_names(flatbuffer):
    """The ops of a TFLite file, one name per op, every subgraph in order.

    Builtin ops are named as in the TFLite schema
    (`"UNIDIRECTIONAL_SEQUENCE_LSTM"`, `"WHILE"`, `"FULLY_CONNECTED"`, ...);
    custom ops by their custom code. Flex (`SELECT_TF_OPS`) ops, which the
    stock LiteRT runtime lacks, are custom ops whose code starts with
    `"Flex"` (see `flex_ops`).

    Args:
        flatbuffer: the file's `bytes`.

    Returns:
        A list of op names.
    """
    model = flatbuffer_model(flatbuffer)
    names = []
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            code = model.OperatorCodes(subgraph.Operators(o).OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if builtin == schema.BuiltinOperator.CUSTOM:
                names.append(code.CustomCode().decode())
            else:
                names.append(_OPERATOR_NAMES[builtin])
    return names


def flex_ops(flatbuffer):
    """The Flex (TensorFlow, `SELECT_TF_OPS`) ops of a TFLite file."""
    return [name for name in op_names(flatbuffer) if name.startswith("Flex")]



def flex_op_outputs(flatbuffer):
    """`[(flex op name, [output tensor names])]` of a TFLite file."""
    model = flatbuffer_model(flatbuffer)
    found = []
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            operator = subgraph.Operators(o)
            code = model.OperatorCodes(operator.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if builtin != schema.BuiltinOperator.CUSTOM:
                continue
            name = code.CustomCode().decode()
            if not name.startswith("Flex"):
                continue
            outputs = [
                subgraph.Tensors(operator.Outputs(i)).Name().decode()
                for i in range(operator.OutputsLength())
            ]
            found.append((name, outputs))
    return found


def unshare_constants(flatbuffer):
    """Gives every op input that reads a constant its own tensor and buffer.

    The converter merges equal constants, e.g. the forget-gate biases of two
    freshly initialised LSTMs of the same size. The quantizer then quantizes
    the shared buffer with the scale of one of its readers only, which
    corrupts the others.
    """
    model = flatbuffer_utils.convert_bytearray_to_object(flatbuffer)
    used_buffers = set()
    for subgraph in model.subgraphs:
        used_tensors = set(np.asarray(subgraph.outputs).tolist())
        for operator in subgraph.operators:
            inputs = np.array(operator.inputs, dtype=np.int32)
            for slot, index in enumerate(inputs):
                if index < 0:
                    continue
                tensor = subgraph.tensors[index]
                buffer = model.buffers[tensor.buffer]
                if tensor.buffer == 0 or buffer.data is None:
                    continue
                if index in used_tensors or tensor.buffer in used_buffers:
                    copy = schema.BufferT()
                    copy.data = np.array(buffer.data, copy=True)
                    model.buffers.append(copy)
                    tensor = _copy_tensor(tensor, "/unshared")
                    tensor.buffer = len(model.buffers) - 1
                    subgraph.tensors.append(tensor)
                    inputs[slot] = len(subgraph.tensors) - 1
                used_tensors.add(int(inputs[slot]))
                used_buffers.add(tensor.buffer)
            operator.inputs = inputs
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _copy_tensor(tensor, suffix):
    copy = schema.TensorT()
    for name, value in vars(tensor).items():
        setattr(copy, name, value)
    copy.name = tensor.name + suffix.encode()
    return copy


def _operator_index(model, code):
    for i, operator in enumerate(model.operatorCodes):
        if max(operator.builtinCode, operator.deprecatedBuiltinCode) == code:
            return i
    operator = schema.OperatorCodeT()
    operator.builtinCode = code
    operator.deprecatedBuiltinCode = min(
        code, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES
    )
    operator.version = 1
    model.operatorCodes.append(operator)
    return len(model.operatorCodes) - 1


def _add_constant(model, subgraph, name, array, tensor_type, quantization):
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(array.tobytes(), dtype=np.uint8)
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.name = name.encode()
    tensor.shape = np.array(array.shape, dtype=np.int32)
    tensor.type = tensor_type
    tensor.buffer = len(model.buffers) - 1
    tensor.quantization = quantization
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def _zeroed_state(model, subgraph, index):
    """A new variable tensor like tensor `index`, and the FILL op that
    writes (quantized) zeros into it."""
    tensor = _copy_tensor(subgraph.tensors[index], "/state")
    tensor.buffer = 0
    tensor.isVariable = True
    subgraph.tensors.append(tensor)
    state = len(subgraph.tensors) - 1
    quantization = tensor.quantization
    zero_point = 0
    if quantization is not None and quantization.zeroPoint is not None:
        zero_point = int(np.asarray(quantization.zeroPoint).ravel()[0])
    name = tensor.name.decode()
    shape = _add_constant(
        model,
        subgraph,
        f"{name}/zero_shape",
        np.array(tensor.shape, dtype=np.int32),
        schema.TensorType.INT32,
        None,
    )
    value = _add_constant(
        model,
        subgraph,
        f"{name}/zero",
        np.array(zero_point, dtype=_NUMPY_TYPES[tensor.type]),
        tensor.type,
        quantization,
    )
    fill = _operator_index(model, schema.BuiltinOperator.FILL)
    model.operatorCodes[fill].version = max(
        model.operatorCodes[fill].version,
        _FILL_VERSIONS.get(tensor.type, 1),
    )
    operator = schema.OperatorT()
    operator.opcodeIndex = fill
    operator.inputs = np.array([shape, value], dtype=np.int32)
    operator.outputs = np.array([state], dtype=np.int32)
    operator.builtinOptionsType = schema.BuiltinOptions.FillOptions
    operator.builtinOptions = schema.FillOptionsT()
    return state, operator


def finish(flatbuffer, signature_key):
    """Zeroes the fused LSTM states at every call; names the signature.

    Every fused LSTM op gets its own state tensors (the converter may share
    its zero initial state with other readers, which the op would then
    overwrite), written with zeros by a FILL op just before it.
    """
    model = flatbuffer_utils.convert_bytearray_to_object(flatbuffer)
    lstm = schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM
    for subgraph in model.subgraphs:
        operators = []
        for operator in subgraph.operators:
            code = model.operatorCodes[operator.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) == lstm:
                inputs = np.array(operator.inputs, dtype=np.int32)
                for i in _LSTM_STATE_INPUTS:
                    inputs[i], fill = _zeroed_state(model, subgraph, inputs[i])
                    operators.append(fill)
                operator.inputs = inputs
            operators.append(operator)
        subgraph.operators = operators
    for signature in model.signatureDefs:
        signature.signatureKey = signature_key.encode()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def write_atomic(path, data):
    path = os.fspath(path)
    fd, temp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.",
        suffix=".tmp",
        dir=os.path.dirname(os.path.abspath(path)),
    )
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise

