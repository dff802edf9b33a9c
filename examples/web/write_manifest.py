"""Writes the manifest of an exported `.tflite` beside it, with
`keras_l0.manifest` (until `keras-l0-shrink` writes it itself).

`<name>.tflite` gets `<name>.manifest.json` in the same folder, and, with
`--vocabulary`, a copy of the vocabulary file beside it (`vocabulary.txt`),
so that the folder is everything an app needs. The quantization is taken
from the `report.json` that `keras-l0-shrink` wrote in that folder (else
`--quantization`); the sequence mode is read from the file. The manifest is
checked against the file before this exits.

Example:

```
python examples/web/write_manifest.py model/slim/gated_slim_streaming.tflite \\
    --vocabulary model/train/vocabulary.txt
```
"""

import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_l0 import manifest  # noqa: E402

VOCABULARY_NAME = "vocabulary.txt"
PTB_SPECIAL_TOKENS = {"end_of_sentence": "<eos>", "unknown": "<unk>"}


def manifest_path(tflite):
    """`<name>.manifest.json` beside `<name>.tflite`."""
    root, _ = os.path.splitext(tflite)
    return root + ".manifest.json"


def _quantization(tflite, given):
    if given:
        return given
    report = os.path.join(os.path.dirname(os.path.abspath(tflite)), "report.json")
    if os.path.isfile(report):
        with open(report, encoding="utf-8") as f:
            return json.load(f)["options"]["quantization"]
    return "none"


def write_manifest(tflite, vocabulary=None, quantization=None, special_tokens=None):
    """Writes and checks the manifest of `tflite`; returns its path."""
    folder = os.path.dirname(os.path.abspath(tflite))
    vocabulary_file = None
    if vocabulary is not None:
        vocabulary_file = os.path.join(folder, VOCABULARY_NAME)
        if os.path.abspath(vocabulary) != vocabulary_file:
            shutil.copyfile(vocabulary, vocabulary_file)
        if special_tokens is None:
            special_tokens = PTB_SPECIAL_TOKENS
    info = manifest.describe(
        tflite,
        quantization=_quantization(tflite, quantization),
        vocabulary_file=vocabulary_file,
        special_tokens=special_tokens,
    )
    path = manifest_path(tflite)
    manifest.write(path, info)
    manifest.check(manifest.read(path), tflite)
    return path


def _special(text):
    role, sep, token = text.partition("=")
    if not sep or not role or not token:
        raise argparse.ArgumentTypeError(f"expected ROLE=TOKEN, got {text!r}")
    return role, token


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tflite", help="the exported .tflite")
    parser.add_argument("--vocabulary", help="vocabulary file, one word a line")
    parser.add_argument("--quantization", choices=manifest.QUANTIZATIONS)
    parser.add_argument(
        "--special",
        type=_special,
        action="append",
        metavar="ROLE=TOKEN",
        help="special token (default with --vocabulary: "
        "end_of_sentence=<eos> unknown=<unk>, PTB's)",
    )
    args = parser.parse_args(argv)
    special = dict(args.special) if args.special else None
    try:
        path = write_manifest(args.tflite, args.vocabulary, args.quantization, special)
    except (manifest.ManifestError, OSError) as e:
        print(f"write_manifest: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
