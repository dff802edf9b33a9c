"""Export of slim Keras 3 models to LiteRT (TFLite) flatbuffers.

`to_tflite` converts a Keras 3 model (`Sequential` or functional, nested
models included) into a `.tflite` file that runs on the stock LiteRT
runtime: builtin ops only, no Flex (`SELECT_TF_OPS`) op. It is the last step
after `keras_l0.shrink`. This package is the only part of `keras_l0` that
imports TensorFlow.

How it converts (`_trace`). The model is traced on the TensorFlow backend:
one `tf.function` walks the functional graph and calls every Keras 3 layer
itself, so any layer that TensorFlow's converter lowers to builtin ops
exports (`Conv1D`, pooling, `BatchNormalization`, `MultiHeadAttention`,
`Reshape`, layers written in `keras.ops`, ...), with no list of supported
layers. The exception is the `LSTM`: a Keras 3 LSTM converts to a `WHILE`
loop, while a `tf_keras` LSTM converts to the fused
`UNIDIRECTIONAL_SEQUENCE_LSTM` op (1.6-2x faster at small sizes), so every
LSTM (tanh/sigmoid activations, not unrolled) is traced as a `tf_keras`
LSTM holding its weights, a `Bidirectional` LSTM as two of them. LSTMs
called with an `initial_state` or reading a mask, and `GRU` and `SimpleRNN`
(which have no fused op), become `WHILE` loops of builtin ops; the
converter does not fuse an LSTM with `return_state=True` either. A layer
that needs a TensorFlow op without a builtin is named in an `ExportError`.

Shapes. Batch size and sequence length are fixed in the file (batch 1 and
the model's sequence length by default); a dynamic batch size does not
convert. `sequence_length="variable"` leaves the time axis open; LiteRT
then resizes the inputs to each call's length. Axis 1 of every input of
rank 2 or more is its time axis.

Masks (`Masking`, `Embedding(mask_zero=True)`). A variable-length or
streaming file of a masked model takes the *unpadded* sequence: the app
feeds only the real steps (no padding token 0, no step whose features all
equal the `Masking` value), for which every mask is all true, and the file
computes no mask (its LSTMs stay fused). For a model whose masked layers
honour the mask this equals Keras on the padded sequence, pre- or
post-padded; a model that is not padding-invariant (e.g. a
`GlobalMaxPooling1D`, which ignores masks, after a masked LSTM) is refused.
A fixed-length file of a masked model takes padded sequences and computes
the mask itself, exactly as Keras does; its LSTMs become `WHILE` loops.

State. The fused LSTM op keeps its state in variable tensors, which LiteRT
carries from one invocation to the next. The exported file gives every
fused LSTM op its own state tensors, zeroed by a `FILL` op just before it
at every invocation, so that each call is one independent sequence, as in
Keras. Stateful recurrent layers also start every call of a full-sequence
file from zero states; stream them (`streaming=True`) to carry states.

Signatures. The full-sequence file has one signature, `"serving_default"`;
its inputs are named after the model's `Input` layers and its outputs after
the layers that produce them (`input_names(model)`, `output_names(model)`:
characters other than letters, digits and `_` become `_`, and repeated names
get `_1`, `_2`, ...). The streaming file (`streaming=True`) has one
signature, `"step"`, that advances every recurrent layer by one time step.
Its inputs are the model's inputs with a time axis of length 1, plus one
`float32` input of shape `(batch, units)` per recurrent state, named
`"<layer>_h"` (and `"<layer>_c"` for an LSTM's carry state); its outputs are
the model's outputs for that step (with a time axis of length 1 where the
model returns sequences) plus the new states, under the same state names.
An app starts from zero states and feeds each step's output states back
in. The step is the cell's builtin ops (`FULLY_CONNECTED`, `LOGISTIC`,
`TANH`, `MUL`, `ADD`, ...), with no loop.

Types. Inputs that feed an `Embedding` (or are integer in Keras) are `int32`
token ids; the others are `float32`. Quantized files keep these input and
output types.

Quantization. `"int8"` calibrates with TensorFlow's older quantizer, after
giving every op its own copy of constants that the converter merged (with
TF 2.21 the newer quantizer, and merged constants such as the equal
forget-gate biases of fresh LSTMs, give errors larger than the outputs).
TF 2.21's calibrator crashes on `WHILE` loops, so `"int8"` is refused for
models that convert to one (GRU, SimpleRNN, unfused LSTMs) unless streamed.
In a streaming file the unrolled cell computes its gates and states in int8,
less precisely than the fused op, whose cell state is int16.

Checks. `to_tflite` runs the file it made with LiteRT against the Keras
model (`verify`) and raises `ExportError` instead of returning or writing
it when the largest difference exceeds `tolerance(quantization,
streaming, scale)`: `TOLERANCES[...]` times the largest absolute Keras
output (float32 files: times at least 1).

Modules: `_trace` (the traced function), `_convert` (conversion,
calibration, errors mapped to layers), `_flatbuffer` (file edits and
queries), `_runtime` (`verify`, `benchmark`), `_tf_compat` (every private
TensorFlow/Keras API used).
"""

from keras_l0.export._common import DEFAULT_SEQUENCE_LENGTH
from keras_l0.export._common import VARIABLE_LENGTH
from keras_l0.export._common import ExportError
from keras_l0.export._common import input_names
from keras_l0.export._common import input_specs
from keras_l0.export._common import output_names
from keras_l0.export._convert import RANDOM_CALIBRATION_BATCHES
from keras_l0.export._convert import RANDOM_DATASET
from keras_l0.export._flatbuffer import flex_ops
from keras_l0.export._flatbuffer import op_names
from keras_l0.export._runtime import SIGNATURE_KEY
from keras_l0.export._runtime import STREAMING_SIGNATURE_KEY
from keras_l0.export._runtime import benchmark
from keras_l0.export._runtime import verify
from keras_l0.export._to_tflite import QUANTIZATIONS
from keras_l0.export._to_tflite import TOLERANCES
from keras_l0.export._to_tflite import padding_contract
from keras_l0.export._to_tflite import to_tflite
from keras_l0.export._to_tflite import tolerance

# The CLI's former private name.
_input_specs = input_specs

__all__ = [
    "DEFAULT_SEQUENCE_LENGTH",
    "ExportError",
    "QUANTIZATIONS",
    "RANDOM_CALIBRATION_BATCHES",
    "RANDOM_DATASET",
    "SIGNATURE_KEY",
    "STREAMING_SIGNATURE_KEY",
    "TOLERANCES",
    "VARIABLE_LENGTH",
    "benchmark",
    "flex_ops",
    "input_names",
    "input_specs",
    "op_names",
    "output_names",
    "padding_contract",
    "to_tflite",
    "tolerance",
    "verify",
]
