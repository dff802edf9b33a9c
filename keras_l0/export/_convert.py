"""Conversion of a traced model to a flatbuffer, and int8 calibration."""

import re
import warnings

import numpy as np
import tensorflow as tf

from keras_l0.export import _flatbuffer
from keras_l0.export import _tf_compat
from keras_l0.export._common import DEFAULT_SEQUENCE_LENGTH
from keras_l0.export._common import ExportError
from keras_l0.export._common import model_sequence_length

RANDOM_DATASET = "random"
RANDOM_CALIBRATION_BATCHES = 100


def concrete_function(trace, specs, names):
    """The traced model as a concrete function of the signature `specs`
    (model inputs, then states), returning `{name: tensor}`."""
    signature = [
        tf.TensorSpec(spec.shape, spec.dtype, name=spec.name) for spec in specs
    ]
    count = len(specs) - len(trace.state_names)

    @tf.function(input_signature=signature)
    def serve(*inputs):
        outputs = trace(list(inputs[:count]), inputs[count:])
        return dict(zip(names, outputs))

    try:
        return serve.get_concrete_function()
    except ExportError:
        raise
    except Exception as e:
        raise _layer_error(trace, e, "cannot be traced") from e


def _first_line(error):
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[0]


def _layer_error(trace, error, what, ops=()):
    """An `ExportError` naming the layer whose name scope holds one of the
    graph ops `ops`, or is mentioned in `error`."""
    best = None
    for scope in trace.scopes.values():
        hit = any(op.startswith(f"{scope}/") for op in ops) or (
            not ops and f"{scope}/" in str(error)
        )
        if hit and (best is None or len(scope) > len(best)):
            best = scope
    layer = trace.layer_of_scope(best) if best else None
    types = sorted(set(re.findall(r"'tf\.(\w+)' op", str(error))))
    if layer is None:
        return ExportError(f"TFLite conversion failed: {_first_line(error)}")
    if types:
        return ExportError(
            f"Layer '{layer.name}' ({type(layer).__name__}) {what}: it uses "
            f"the TensorFlow op(s) {', '.join(types)}, which LiteRT has no "
            "builtin op for. Write it with other ops, or export the model "
            "without it."
        )
    return ExportError(
        f"Layer '{layer.name}' ({type(layer).__name__}) {what}: "
        f"{_first_line(error)}"
    )


def _graph_ops(graph):
    yield from graph.get_operations()
    for inner in getattr(graph, "_functions", {}).values():
        inner_graph = getattr(inner, "graph", None)
        if inner_graph is not None:
            yield from _graph_ops(inner_graph)


def _ops_named_in(function, error):
    """Names of the graph ops whose type a converter error names
    (`'tf.Erfinv' op is neither a custom op nor a flex op`)."""
    types = set(re.findall(r"'tf\.(\w+)' op", str(error)))
    if not types:
        return []
    return [op.name for op in _graph_ops(function.graph) if op.type in types]


def _converter(function, variables, ops):
    module = tf.Module()
    module.weights = variables
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function], module
    )
    converter.target_spec.supported_ops = ops
    return converter


def convert(trace, function, quantization, calibration):
    """The flatbuffer of `function`, builtin ops only.

    A failure is mapped back to the layer that produced the op: the model
    is converted once more with TensorFlow (Flex) ops allowed, and the
    layers whose ops became Flex ops are named.
    """
    variables = trace.variables()
    converter = _converter(
        function, variables, [tf.lite.OpsSet.TFLITE_BUILTINS]
    )
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        converter.representative_dataset = calibration
        # The MLIR quantizer of TF 2.21 calibrates a stacked LSTM's second
        # layer wrongly (max error above the output's range); the older
        # quantizer does not, once constants are unshared.
        _tf_compat.use_old_quantizer(converter, _flatbuffer.unshare_constants)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        ]
    try:
        with warnings.catch_warnings():
            # The calibrator runs the deprecated tf.lite.Interpreter.
            warnings.filterwarnings(
                "ignore", "(?s).*tf.lite.Interpreter is deprecated"
            )
            flatbuffer = converter.convert()
    except ExportError:
        raise
    except Exception as e:
        raise _flex_error(trace, function, variables, e) from e
    flex = _flatbuffer.flex_ops(flatbuffer)
    if flex:
        raise ExportError(f"The converter emitted Flex ops {flex}.")
    return flatbuffer


def _flex_error(trace, function, variables, error):
    converter = _converter(
        function,
        variables,
        [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS],
    )
    named = _ops_named_in(function, error)
    if named:
        return _layer_error(trace, error, "cannot be converted", named)
    try:
        flatbuffer = converter.convert()
    except Exception:
        return _layer_error(trace, error, "cannot be converted")
    flex = _flatbuffer.flex_op_outputs(flatbuffer)
    if not flex:
        return _layer_error(trace, error, "cannot be converted")
    by_layer = {}
    for op, tensor_names in flex:
        for scope in trace.scopes.values():
            if any(name.startswith(f"{scope}/") or f"/{scope}/" in name for name in tensor_names):
                by_layer.setdefault(scope, set()).add(op[len("Flex"):])
    if not by_layer:
        ops = sorted({op for op, _ in flex})
        return ExportError(
            "The model needs TensorFlow ops that LiteRT has no builtin for "
            f"({', '.join(ops)}); a builtin-only file cannot hold them."
        )
    scope = min(by_layer, key=lambda s: list(trace.scopes.values()).index(s))
    layer = trace.layer_of_scope(scope)
    return ExportError(
        f"Layer '{layer.name}' ({type(layer).__name__}) cannot be exported: "
        "it needs the TensorFlow op(s) "
        f"{', '.join(sorted(by_layer[scope]))}, which LiteRT has no builtin "
        "op for (only a Flex op, which the stock runtime lacks). Write it "
        "with other ops, or export the model without it."
    )


def dataset_batches(dataset, specs, batch_size):
    """The items of a representative dataset, as lists of `batch_size` rows."""
    items = dataset() if callable(dataset) else dataset
    try:
        items = iter(items)
    except TypeError:
        raise ExportError(
            "`representative_dataset` must be an iterable of input batches "
            f"or a callable returning one, got {type(dataset).__name__}."
        ) from None
    for item in items:
        if isinstance(item, dict):
            missing = [s.name for s in specs if s.name not in item]
            if missing:
                raise ExportError(
                    f"A representative_dataset item lacks the inputs "
                    f"{missing}; its keys are {sorted(item)}."
                )
            arrays = [item[s.name] for s in specs]
        elif isinstance(item, (list, tuple)):
            arrays = list(item)
        else:
            arrays = [item]
        if len(arrays) != len(specs):
            raise ExportError(
                f"representative_dataset items must hold {len(specs)} input "
                f"arrays, got {len(arrays)}."
            )
        arrays = [np.asarray(a, dtype=s.dtype) for a, s in zip(arrays, specs)]
        for array, spec in zip(arrays, specs):
            if len(array.shape) != len(spec.shape) or any(
                d is not None and d != n
                for d, n in zip(spec.shape[1:], array.shape[1:])
            ):
                expected = ", ".join(str(d) for d in spec.shape[1:])
                raise ExportError(
                    f"representative_dataset gives input '{spec.name}' the "
                    f"shape {array.shape}; expected (batch, {expected})."
                )
        for start in range(0, len(arrays[0]) - batch_size + 1, batch_size):
            yield [a[start : start + batch_size] for a in arrays]


def calibration(dataset, specs, batch_size, step=None, states=()):
    """The converter's representative dataset: dicts of signature inputs.

    A streaming file (`step`: its float function, `states`: `(name, zeros)`
    pairs) is calibrated on the steps of each sequence, with the states
    that the float model reaches at each step.
    """
    if isinstance(dataset, str) and dataset == RANDOM_DATASET:
        rng = np.random.default_rng(0)
        length = model_sequence_length(specs) or DEFAULT_SEQUENCE_LENGTH
        batches = (
            [spec.random(rng, length) for spec in specs]
            for _ in range(RANDOM_CALIBRATION_BATCHES)
        )
    elif isinstance(dataset, str):
        raise ExportError(
            "`representative_dataset` must be an iterable, a callable or "
            f"'{RANDOM_DATASET}', got {dataset!r}."
        )
    else:
        batches = dataset_batches(dataset, specs, batch_size)
    names = [spec.name for spec in specs]
    state_names = [name for name, _ in states]
    count = 0
    for count, batch in enumerate(batches, 1):
        if step is None:
            yield dict(zip(names, batch))
            continue
        values = [zeros for _, zeros in states]
        length = max(a.shape[1] for a, s in zip(batch, specs) if s.is_sequence)
        for t in range(length):
            inputs = [
                a[:, t : t + 1] if s.is_sequence else a
                for a, s in zip(batch, specs)
            ]
            yield dict(zip(names + state_names, inputs + values))
            outputs = step(*inputs, *values)
            values = [np.asarray(outputs[name]) for name in state_names]
    if not count:
        raise ExportError(
            "representative_dataset gave no batch (of at least batch_size "
            f"= {batch_size} rows)."
        )
