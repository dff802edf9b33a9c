"""LiteRT latency of files exported by an earlier revision and by this one.

Builds the kinds of file that the PTB study and the web demo ship (a
2-layer LSTM language model, dense and slim, as a 35-step file and as a
streaming file), exports each with `keras_l0.export.to_tflite` of revision
`--before` (a temporary `git worktree`, run in a subprocess) and of the
working tree, checks both against Keras, and times all files in one
`export.benchmark` run, interleaved round-robin, one thread. Prints per
model the median ms per call before and after, their ratio, and the fused
LSTM op count of each file.

    KERAS_BACKEND=tensorflow python benchmarks/export_before_after.py
    KERAS_BACKEND=tensorflow python benchmarks/export_before_after.py \\
        --before b6d7471   # the last revision with the tf_keras-twin export
"""

import argparse
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from keras_l0 import export  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUSED = "UNIDIRECTIONAL_SEQUENCE_LSTM"
# (name, vocabulary, embedding, units of the two LSTMs): PTB small dense,
# its gated model from the dense one at budget 0.3 (results page), and the
# web demo's dense and slim models (examples/web/make_model.sh).
MODELS = (
    ("ptb-small-dense", 10000, 200, (200, 200)),
    ("ptb-small-0.3", 10000, 96, (84, 137)),
    ("demo-dense", 10000, 256, (256, 256)),
    ("demo-slim", 10000, 256, (256, 1)),
)
OLD_EXPORT = """
import sys, keras
from keras_l0 import export
for path in sys.argv[1:]:
    model = keras.saving.load_model(path)
    for streaming in (False, True):
        data = export.to_tflite(model, streaming=streaming)
        out = path[:-len(".keras")] + ("-step" if streaming else "") + ".tflite"
        with open(out, "wb") as f:
            f.write(data)
"""


def language_model(vocabulary, embedding, units, seq_len):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((seq_len,), dtype="int32"),
              keras.layers.Embedding(vocabulary, embedding)]  # fmt: skip
    layers += [keras.layers.LSTM(n, return_sequences=True) for n in units]
    layers.append(keras.layers.Dense(vocabulary))
    return keras.Sequential(layers)


def export_before(revision, paths, folder):
    tree = os.path.join(folder, "before")
    subprocess.run(
        ["git", "-C", ROOT, "worktree", "add", "-q", "--detach", tree,
         revision], check=True,
    )  # fmt: skip
    try:
        env = dict(os.environ, PYTHONPATH=tree, KERAS_BACKEND="tensorflow")
        subprocess.run(
            [sys.executable, "-c", OLD_EXPORT, *paths],
            check=True, env=env, cwd=folder,
        )  # fmt: skip
    finally:
        subprocess.run(
            ["git", "-C", ROOT, "worktree", "remove", "--force", tree],
            check=True,
        )  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="b6d7471")
    parser.add_argument("--seq-len", type=int, default=35)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    files, models = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for name, vocabulary, embedding, units in MODELS:
            model = language_model(vocabulary, embedding, units, args.seq_len)
            models[name] = model
            paths.append(os.path.join(folder, name + ".keras"))
            model.save(paths[-1])
        export_before(args.before, paths, folder)
        for name, model in models.items():
            for suffix, streaming in (("", False), ("-step", True)):
                with open(os.path.join(folder, name + suffix + ".tflite"),
                          "rb") as f:  # fmt: skip
                    files["before", name + suffix] = f.read()
                files["after", name + suffix] = export.to_tflite(
                    model, streaming=streaming
                )
    for (when, name), flatbuffer in files.items():
        model = models[name.removesuffix("-step")]
        diff = export.verify(flatbuffer, model, num_samples=1,
                             streaming=name.endswith("-step"))
        if diff > 1e-4:
            sys.exit(f"{when} {name}: LiteRT differs from Keras by {diff:.2e}")
    print(f"timing {len(files)} files interleaved: {args.runs} runs, "
          f"{args.warmup} warm-up, 1 thread ...", flush=True)
    ms = export.benchmark(
        {f"{when}/{name}": data for (when, name), data in files.items()},
        runs=args.runs, warmup=args.warmup,
    )  # fmt: skip
    print(f"\nbefore: {args.before}, after: working tree; batch 1, "
          f"{args.seq_len} steps (streaming: one step)")
    header = (f"{'model':22} {'before ms':>9} {'after ms':>9} "
              f"{'after/before':>12} {'fused before|after':>18}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for name in sorted({name for _, name in files}):
        before, after = ms[f"before/{name}"], ms[f"after/{name}"]
        fused = [export.op_names(files[when, name]).count(FUSED)
                 for when in ("before", "after")]  # fmt: skip
        print(f"{name:22} {before:9.3f} {after:9.3f} {after / before:12.3f} "
              f"{fused[0]:>9}|{fused[1]}")


if __name__ == "__main__":
    main()
