"""The command line of `keras-l0-shrink`."""

import argparse

import keras_l0
from keras_l0 import export
from keras_l0.cli._common import GATED_TOLERANCE
from keras_l0.cli._common import PROG
from keras_l0.cli._common import UsageError


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _special_token(text):
    role, sep, token = text.partition("=")
    if not sep or not role or not token:
        raise argparse.ArgumentTypeError(f"expected ROLE=TOKEN, got {text!r}")
    return role, token


def _sequence_length(text):
    if text == export.VARIABLE_LENGTH:
        return text
    return _positive_int(text)


def build_parser():
    """The command-line parser of `keras-l0-shrink`."""
    parser = _ArgumentParser(
        prog=PROG,
        description=(
            "Remove the closed neurons of a trained keras_l0 model and "
            "export the slim model to TFLite, with a size, accuracy and "
            "latency report."
        ),
        epilog=(
            "Checks: nothing is written (exit status 2) when the slim model "
            "differs from the gated one by more than "
            f"{GATED_TOLERANCE:g} x max(1, largest output), or a .tflite "
            "differs from the slim Keras model by more than its tolerance: "
            + "; ".join(
                f"{q}{' streaming' if st else ''} {t:g}"
                for (q, st), t in export.TOLERANCES.items()
                if not (st and export.TOLERANCES[q, False] == t)
            )
            + " (float32: x max(1, largest output), quantized: x largest "
            "output). Masked models: a variable-length or streaming .tflite "
            "takes the unpadded sequence (report.json names the padding "
            "token/value per input); --seq-len N gives a file for padded "
            "sequences that computes the mask."
        ),
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="the trained .keras model with keras_l0 gated layers",
    )
    parser.add_argument(
        "-o",
        "--output-dir",
        metavar="DIR",
        help="folder for the outputs (default: MODEL's name + '_slim', "
        "next to it)",
    )
    parser.add_argument(
        "--quantization",
        choices=export.QUANTIZATIONS,
        default="none",
        help="TFLite quantization (default: none); int8 calibrates on "
        "--calibration-data, else on random inputs",
    )
    parser.add_argument(
        "--calibration-data",
        metavar="FILE",
        help="int8 calibration inputs: a .npy array (one-input models) or "
        "a .npz keyed by input name, of shape (samples, time, ...)",
    )
    parser.add_argument(
        "--seq-len",
        type=_sequence_length,
        metavar="N|variable",
        help="sequence length of the TFLite models, an integer or "
        "'variable' (default: the model's own, else variable); also the "
        "length of the check and benchmark inputs (default: "
        f"{export.DEFAULT_SEQUENCE_LENGTH} for a variable length)",
    )
    parser.add_argument(
        "--batch",
        type=_positive_int,
        metavar="N",
        help="batch size of the TFLite models (default: the model's fixed "
        "batch size, else 1)",
    )
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="also write a TFLite model that runs one time step per call, "
        "with the recurrent states as inputs and outputs",
    )
    parser.add_argument(
        "--no-benchmark",
        action="store_true",
        help="skip the dense model's conversion and the dense vs slim "
        "TFLite latency measurement",
    )
    parser.add_argument(
        "--runs",
        type=_positive_int,
        metavar="N",
        default=50,
        help="timed invocations per model in the benchmark (default: 50)",
    )
    parser.add_argument(
        "--vocabulary",
        metavar="FILE",
        help="for a language model: its vocabulary, one token per line in "
        "id order; copied beside the outputs as vocabulary.txt and named in "
        "every manifest",
    )
    parser.add_argument(
        "--special-token",
        type=_special_token,
        action="append",
        metavar="ROLE=TOKEN",
        help="with --vocabulary: a special token for the manifest, e.g. "
        "end_of_sentence='<eos>' (repeatable)",
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite existing outputs"
    )
    parser.add_argument(
        "--export-ungated",
        action="store_true",
        help="export a model without gated layers unchanged instead of "
        "refusing it",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only warnings and errors",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show the log lines of TensorFlow and LiteRT",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {keras_l0.__version__}",
    )
    return parser
