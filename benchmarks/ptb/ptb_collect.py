"""Packs a PTB run folder for the way back from a GPU machine, and unpacks it.

`pack RUNS OUT` writes into OUT (a folder that must hold nothing else):

- `results.json`: the study's status (`RUNS/progress.json` of
  `ptb_reproduce.py`: complete or incomplete, and the command that resumes
  it), every run's `results.json`, `shrink.json` and `state.json`, and the
  manifest of the weights below;
- `logs.tar.gz`: every `*.log` and `*.out` file of RUNS and every run's
  JSON files (no checkpoints, no models);
- `weights.f16.partNN`: the slim (shrunk) gated models' weights in
  float16, every model a compressed `.npz` of its arrays (each stored as
  its two byte planes, which compresses better than the raw halves), the
  models concatenated and cut into parts of at most `--part-bytes`. Models
  that do not fit into `--max-files` files and `--max-bytes` together are
  left out, smallest models first in, and listed in `results.json`.

Magnitude and direct-design models come back as sizes and perplexities
only: their latency is timed on models of the same sizes with random
weights (`ptb_report.py`).

`unpack OUT RUNS` rebuilds a run folder from OUT: the JSON files and logs,
and every slim gated model as `slim.keras` (a plain `ptb_lm.build_model`
chain of the recorded sizes holding the float16 weights), so that
`ptb_report.py --runs RUNS` reads it as a study folder. `ptb_report.py`
also takes OUT itself and unpacks it into a temporary folder.

The output folder keeps to the GPU machine's limits on what comes back:
at most 8 files, 16 MiB each and 64 MiB together, names of letters,
digits and `._-` only, no subfolders.

Examples:

```
python benchmarks/ptb/ptb_collect.py pack /tmp/ptb-runs "$OUT"
python benchmarks/ptb/ptb_collect.py unpack fetched/out runs/ptb-gpu-medium
```
"""

import argparse
import hashlib
import io
import json
import os
import platform
import re
import sys
import tarfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PROG = os.path.basename(__file__)
FORMAT = "keras-l0 ptb collect 1"
RESULTS_NAME = "results.json"
LOGS_NAME = "logs.tar.gz"
PART_PREFIX = "weights.f16.part"
MIB = 1 << 20
RUN_FILES = ("results.json", "shrink.json", "state.json")
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def build_parser():
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack = commands.add_parser("pack", help="RUNS -> OUT")
    pack.add_argument("runs")
    pack.add_argument("out")
    pack.add_argument("--max-files", type=int, default=8)
    pack.add_argument("--max-bytes", type=int, default=62 * MIB)
    pack.add_argument("--part-bytes", type=int, default=15 * MIB)
    unpack = commands.add_parser("unpack", help="OUT -> RUNS")
    unpack.add_argument("collected")
    unpack.add_argument("runs")
    return parser


def read_json(path):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run_names(runs):
    return sorted(
        name
        for name in os.listdir(runs)
        if os.path.isdir(os.path.join(runs, name))
        and os.path.exists(os.path.join(runs, name, "state.json"))
    )


def planes(array):
    """A float16 array as its two byte planes, shape (2, size)."""
    half = array.astype("<f2").reshape(-1)
    return half.view("u1").reshape(-1, 2).T.copy()


def from_planes(stored, shape):
    import numpy as np

    return np.ascontiguousarray(stored.T).view("<f2").reshape(shape)


def model_blob(model):
    """The weights of a Keras model as a compressed float16 `.npz`."""
    import numpy as np

    arrays = [np.asarray(w) for w in model.get_weights()]
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, **{f"w{i:02d}": planes(a) for i, a in enumerate(arrays)}
    )
    shapes = [list(a.shape) for a in arrays]
    return buffer.getvalue(), shapes


def slim_models(runs):
    """(run name, slim.keras path) of every shrunk gated run."""
    for name in run_names(runs):
        folder = os.path.join(runs, name)
        if "-gated-" in name and os.path.exists(
            os.path.join(folder, "shrink.json")
        ) and os.path.exists(os.path.join(folder, "slim.keras")):
            yield name, os.path.join(folder, "slim.keras")


def logs_tarball(runs):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in sorted(os.listdir(runs)):
            path = os.path.join(runs, name)
            if os.path.isfile(path) and name.endswith((".log", ".out", ".json")):
                tar.add(path, arcname=name)
            elif os.path.isdir(path):
                for file in RUN_FILES:
                    if os.path.exists(os.path.join(path, file)):
                        tar.add(os.path.join(path, file), arcname=f"{name}/{file}")
    return buffer.getvalue()


def pack(runs, out, max_files=8, max_bytes=62 * MIB, part_bytes=15 * MIB):
    """Writes the collected files into `out`; returns the results dict."""
    if not os.path.isdir(runs):
        raise SystemExit(f"{PROG}: error: no run folder {runs!r}")
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        if name == RESULTS_NAME or name == LOGS_NAME or name.startswith(PART_PREFIX):
            os.remove(os.path.join(out, name))
        else:
            raise SystemExit(f"{PROG}: error: {out!r} holds {name!r}")
    progress = read_json(os.path.join(runs, "progress.json")) or dict(
        status="not started"
    )
    study = {}
    for name in run_names(runs):
        entry = {}
        for file in RUN_FILES:
            data = read_json(os.path.join(runs, name, file))
            if data is not None:
                entry[file] = data
        study[name] = entry
    logs = logs_tarball(runs)
    with open(os.path.join(out, LOGS_NAME), "wb") as f:
        f.write(logs)

    blobs = []
    models = list(slim_models(runs))
    if models:
        import keras

        import keras_l0  # noqa: F401  (registers the package's layers)

        for name, path in models:
            model = keras.models.load_model(path, compile=False)
            blob, shapes = model_blob(model)
            blobs.append((name, blob, shapes, _sizes(study[name])))
    # Room for the weights: the file count and the byte total, less the
    # logs and a generous allowance for results.json.
    room = max_bytes - len(logs) - MIB
    parts_allowed = max_files - 2
    blobs.sort(key=lambda item: len(item[1]))
    kept, left_out, total = [], [], 0
    for item in blobs:
        size = len(item[1])
        if total + size <= room and -(-(total + size) // part_bytes) <= parts_allowed:
            kept.append(item)
            total += size
        else:
            left_out.append(dict(run=item[0], bytes=size))
    bundle = b"".join(blob for _, blob, _, _ in kept)
    weights, offset = {}, 0
    for name, blob, shapes, sizes in kept:
        weights[name] = dict(
            offset=offset,
            bytes=len(blob),
            sha256=hashlib.sha256(blob).hexdigest(),
            shapes=shapes,
            sizes=sizes,
            config=study[name]["state.json"]["args"]["config"],
        )
        offset += len(blob)
    parts = []
    for index, start in enumerate(range(0, len(bundle), part_bytes)):
        part = f"{PART_PREFIX}{index:02d}"
        with open(os.path.join(out, part), "wb") as f:
            f.write(bundle[start : start + part_bytes])
        parts.append(part)
    results = dict(
        format=FORMAT,
        status=progress.get("status"),
        progress=progress,
        runs=os.path.abspath(runs),
        collected_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        weights=dict(
            dtype="float16 (byte planes, npz)",
            parts=parts,
            total_bytes=len(bundle),
            models=weights,
            left_out=left_out,
        ),
        study=study,
    )
    with open(os.path.join(out, RESULTS_NAME), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    check_limits(out, max_files)
    return results


def check_limits(out, max_files=8, max_file_bytes=16 * MIB, max_total=64 * MIB):
    names = sorted(os.listdir(out))
    sizes = [os.path.getsize(os.path.join(out, name)) for name in names]
    problems = []
    if len(names) > max_files:
        problems.append(f"{len(names)} files (at most {max_files})")
    for name, size in zip(names, sizes):
        if size > max_file_bytes:
            problems.append(f"{name}: {size} bytes (at most {max_file_bytes})")
        if not SAFE_NAME.match(name) or not os.path.isfile(os.path.join(out, name)):
            problems.append(f"{name}: not a plain file with a safe name")
    if sum(sizes) > max_total:
        problems.append(f"{sum(sizes)} bytes in all (at most {max_total})")
    if problems:
        raise SystemExit(f"{PROG}: error: {out}: " + "; ".join(problems))


def _sizes(entry):
    neurons = entry.get("results.json", {}).get("neurons")
    shrink_report = entry.get("shrink.json")
    if shrink_report:
        neurons = shrink_report["slim"]["neurons"]
    if not neurons:
        return None
    return [neurons[0]["inputs"]] + [layer["units"] for layer in neurons]


def is_collected(folder):
    data = read_json(os.path.join(folder, RESULTS_NAME))
    return isinstance(data, dict) and data.get("format") == FORMAT


def unpack(collected, runs):
    """Rebuilds a run folder from a packed one; returns the results dict."""
    results = read_json(os.path.join(collected, RESULTS_NAME))
    if not results or results.get("format") != FORMAT:
        raise SystemExit(f"{PROG}: error: {collected!r} is not a packed study")
    os.makedirs(runs, exist_ok=True)
    with tarfile.open(os.path.join(collected, LOGS_NAME), "r:gz") as tar:
        tar.extractall(runs, filter="data")
    weights = results["weights"]
    bundle = b""
    for part in weights["parts"]:
        with open(os.path.join(collected, part), "rb") as f:
            bundle += f.read()
    if len(bundle) != weights["total_bytes"]:
        raise SystemExit(
            f"{PROG}: error: the weight parts hold {len(bundle)} bytes, "
            f"expected {weights['total_bytes']}"
        )
    if weights["models"]:
        import numpy as np

        import ptb_lm

        for name, entry in weights["models"].items():
            blob = bundle[entry["offset"] : entry["offset"] + entry["bytes"]]
            if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
                raise SystemExit(f"{PROG}: error: {name}: weights damaged")
            stored = np.load(io.BytesIO(blob))
            arrays = [
                from_planes(stored[f"w{i:02d}"], shape).astype("float32")
                for i, shape in enumerate(entry["shapes"])
            ]
            model = rebuild(entry["config"], entry["sizes"], arrays)
            path = os.path.join(runs, name, "slim.keras")
            ptb_lm.write_atomically(path, model.save)
    source = dict(
        collected=os.path.abspath(collected),
        device_runs=results.get("runs"),
        status=results.get("status"),
    )
    with open(os.path.join(runs, "source.json"), "w", encoding="utf-8") as f:
        json.dump(source, f, indent=1)
    return results


def rebuild(config, sizes, arrays):
    """A plain chain model of `sizes` (embedding, hidden...) holding
    `arrays` (in `get_weights` order), with the configuration's dropout."""
    import ptb_lm

    embedding, *units = sizes
    vocabulary = int(arrays[0].shape[0])
    model = ptb_lm.build_model(
        vocabulary,
        embedding,
        units,
        dropout=ptb_lm.CONFIGS[config].dropout,
        init_scale=ptb_lm.CONFIGS[config].init_scale,
    )
    model.set_weights(arrays)
    return model


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "pack":
        results = pack(
            args.runs, args.out, args.max_files, args.max_bytes, args.part_bytes
        )
        weights = results["weights"]
        print(
            f"{PROG}: {args.out}: status {results['status']}, "
            f"{len(results['study'])} runs, {len(weights['models'])} slim models "
            f"in {len(weights['parts'])} parts ({weights['total_bytes'] / MIB:.1f} MiB)"
            + (f", left out: {weights['left_out']}" if weights["left_out"] else ""),
            flush=True,
        )
    else:
        results = unpack(args.collected, args.runs)
        print(
            f"{PROG}: {args.runs}: {len(results['study'])} runs, "
            f"{len(results['weights']['models'])} slim models rebuilt",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
