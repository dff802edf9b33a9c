"""Exports and times the models of a PTB study and writes its results page.

Reads the run folders that `ptb_reproduce.py` wrote (`--runs`, which may be
given several times, e.g. for a second study with another recipe: each
folder's configurations get their own tables) and, per configuration:

- exports with `keras_l0.export.to_tflite` (float32, batch 1, fused LSTM
  ops) the dense model, every shrunk gated model (`slim.keras`) and every
  magnitude model; for the large configuration also the reference model at
  the ISS sizes (Wen et al. 2018: hidden 373 / 315, embedding 1500). The
  dense and ISS models are built with random weights: their latency and
  file size do not depend on the values, and their 264 MB trained weights
  stay on the training machine. Retrained gated models have the shapes of
  their slim model and share its timing;
- for each model four files: the whole model and the LSTM stack alone,
  each for a full `--seq-len` sequence and as a streaming step (one token
  per call, states as inputs and outputs);
- checks the slim models' files against Keras (`export.verify`);
- times all files of the configuration in one interleaved
  `export.benchmark` run (LiteRT, 1 thread, batch 1), so that every
  dense/slim ratio is measured side by side;
- puts beside them the FLOP ratio (`keras_l0.summary.flops_per_step`), the
  validation and test perplexities, the kept sizes, the budget reached and
  the command of every run (from its `state.json`).

A `--runs` folder may also be what `ptb_collect.py pack` wrote on a GPU
machine (results.json, logs.tar.gz, float16 weight parts): it is unpacked
into a temporary folder, the slim gated models rebuilt from their float16
weights (plain layers of the recorded sizes). Magnitude and direct-design
models (dense models of a pruned size trained from scratch, `*-direct-*`)
without a `model.keras` are timed as models of their sizes with random
weights; their perplexities come from their `results.json`.

It writes `--json` (all numbers), `--plot` (test perplexity against the
LSTM-stack speedup) and replaces the part of `--page` between the
`<!-- results:begin -->` and `<!-- results:end -->` lines with the tables.

Example (CPU machine with the `export` extra installed):

```
python benchmarks/ptb/ptb_report.py --runs runs/ptb \\
    --runs "from dense=runs/ptb-cpu"
```
"""

import argparse
import gzip
import json
import os
import platform
import re
import shlex
import sys
import tempfile
import time

import ptb_collect
from ptb_baseline_commands import COMMANDS
import ptb_page

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

keras = export = flops_per_step = ptb_lm = None


def import_libraries():
    """Loads Keras, TensorFlow and LiteRT, after the arguments are checked:
    loading TensorFlow prints log lines that a usage error should not."""
    global keras, export, flops_per_step, ptb_lm
    import keras
    import ptb_lm
    from keras_l0 import export
    from keras_l0.summary import flops_per_step

PROG = os.path.basename(__file__)
VOCABULARY = 10000
ISS_SIZES = (1500, 373, 315)
ZAREMBA_TEST = {"small": 114.5, "medium": 82.7, "large": 78.4}
DOCS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "docs",
    "results",
)


def build_parser():
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument(
        "--runs",
        action="append",
        type=_labelled,
        help="[LABEL=]FOLDER of a study's runs; repeat for more studies, "
        "whose tables are headed '<config>, LABEL' (default: runs/ptb)",
    )
    parser.add_argument("--configs", default="small,medium,large")
    parser.add_argument("--seq-len", type=int, default=35)
    parser.add_argument(
        "--runs-per-file",
        type=int,
        default=30,
        help="timed invocations of every full-sequence file (streaming "
        "files get 10 times as many)",
    )
    parser.add_argument(
        "--budget-runs",
        action="append",
        help="folder of further gated runs, reported for the budget they "
        "reached only; repeat for more folders (default: runs/ptb-budget)",
    )
    parser.add_argument("--json", default=os.path.join(DOCS, "ptb.json"))
    parser.add_argument("--plot", default=os.path.join(DOCS, "ptb_pareto.png"))
    parser.add_argument("--page", default=os.path.join(DOCS, "ptb.md"))
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the configurations of the existing --json that this run "
        "does not measure (their run folders may be gone), its budget-only "
        "runs and its deployment table",
    )
    parser.add_argument(
        "--deployment",
        help="deployment.json written by ptb_deploy.py: the page's "
        "deployment table (quantised files, their own perplexity, latency)",
    )
    return parser


def _labelled(text):
    label, _, folder = text.rpartition("=")
    return label, folder


def read_json(path):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def local_path(value):
    """A path of the training machine as the path of the same file here."""
    value = re.sub(r"^.*/\.devdata/slim/(.+)\.keras$", r"runs/ptb/\1/slim.keras", value)
    return re.sub(r"^/root/(runs/)?", "runs/", value)


def run_command(folder, shown=None, script="ptb_language_model.py"):
    """The command line that made a run of `script`, rebuilt from its
    `state.json` (`--out shown`, default `folder`)."""
    state = read_json(os.path.join(folder, "state.json"))
    if state is None:
        return None
    argv = ["python", f"benchmarks/ptb/{script}"]
    for name, value in state["args"].items():
        flag = "--" + name.replace("_", "-")
        if name == "from_model":
            flag = "--from"
        if name == "input_gates":
            if value is False:
                argv.append("--no-input-gates")
            continue
        if value is None or value is False or name == "resume":
            continue
        if (
            name == "initial_keep_probability"
            and value == 0.9
            and not state["args"].get("dense_model")
        ):
            continue
        if name in ("seed", "l0_warmup", "budget_start", "finetune_hold") and value == 0:
            continue
        if name == "finetune_epochs" and value == 0:
            continue
        if name in ("budget_metric", "penalty_form") and value in (
            "params",
            "weights",
        ):
            continue
        if name == "finetune_decay" and value == 1.0:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            argv += [flag, ",".join(str(v) for v in value)]
        else:
            argv += [flag, local_path(str(value))]
    argv.append(f"--out {shown or folder}")
    backend = "tensorflow" if script == "ptb_tfmot.py" else "jax"
    return f"KERAS_BACKEND={backend} " + " ".join(
        shlex.quote(a) if " " not in a else a for a in argv
    )


def lstm_stack(model, seq_len):
    """The LSTM layers of a chain model on float inputs, weights shared."""
    lstms = [l for l in ptb_lm.chain_layers(model) if ptb_lm.is_recurrent(l)]
    inputs = keras.Input((seq_len, int(lstms[0].cell.kernel.shape[0])))
    x = inputs
    for layer in lstms:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_lstms")


def sizes_of(model):
    layers = ptb_lm.chain_layers(model)
    embedding = next(l for l in layers if isinstance(l, keras.layers.Embedding))
    lstms = [l for l in layers if ptb_lm.is_recurrent(l)]
    return [int(embedding.output_dim)] + [int(l.cell.units) for l in lstms]


def random_model(sizes):
    embedding, *units = sizes
    return ptb_lm.build_model(VOCABULARY, embedding, list(units), seed=0)


def lstm_params(model):
    return sum(
        l.count_params()
        for l in ptb_lm.chain_layers(model)
        if ptb_lm.is_recurrent(l)
    )


def export_all(name, model, seq_len, check):
    """The four flatbuffers of a model, and their Keras-vs-LiteRT diffs."""
    files, diffs = {}, {}
    stack = lstm_stack(model, seq_len)
    variants = {
        "model": (model, False),
        "stack": (stack, False),
        "model_step": (model, True),
        "stack_step": (stack, True),
    }
    for variant, (keras_model, streaming) in variants.items():
        kwargs = dict(streaming=streaming)
        if not streaming:
            kwargs["sequence_length"] = seq_len
        flatbuffer = export.to_tflite(keras_model, **kwargs)
        ops = export.op_names(flatbuffer)
        if export.flex_ops(flatbuffer):
            raise RuntimeError(f"{name} {variant}: Flex ops {ops}")
        files[f"{name}/{variant}"] = flatbuffer
        if check:
            diffs[variant] = export.verify(
                flatbuffer,
                keras_model,
                num_samples=2,
                streaming=streaming,
                sequence_length=seq_len if streaming else None,
            )
    return files, diffs


def config_entries(runs, config):
    """The study's models of `config`: dense, then per budget."""
    dense = read_json(os.path.join(runs, f"{config}-dense", "results.json"))
    budgets = sorted(
        (
            float(folder.split("-")[-1])
            for folder in os.listdir(runs)
            if folder.startswith(f"{config}-gated-")
            and os.path.isdir(os.path.join(runs, folder))
        ),
        reverse=True,
    )
    return dense, budgets


def results_sizes(results):
    """Embedding and hidden sizes of a plain run from its results.json."""
    neurons = results["neurons"]
    return [neurons[0]["inputs"]] + [entry["units"] for entry in neurons]


def fixed_size_runs(runs, config):
    """(kind, folder name, sizes) of the runs at fixed sizes:
    `<config>-direct-E-H1-H2` and `<config>-magnitude-E-H1-H2`."""
    found = []
    for folder in sorted(os.listdir(runs)):
        match = re.fullmatch(rf"{config}-(direct|magnitude)-(\d+)-(\d+)-(\d+)", folder)
        if match:
            found.append(
                (match.group(1), folder, [int(g) for g in match.groups()[1:]])
            )
    return found


def report_config(args, runs, config, shown=None):
    dense_results, budgets = config_entries(runs, config)
    if dense_results is None:
        return None
    shown = shown or runs

    def command(folder, script="ptb_language_model.py"):
        return run_command(
            folder, os.path.join(shown, os.path.basename(folder)), script
        )

    def plain_or_random(path, results):
        if os.path.exists(path):
            return keras.models.load_model(path, compile=False), False
        return random_model(results_sizes(results)), True
    units = ptb_lm.CONFIGS[config].units
    models = {"dense": random_model([units, units, units])}
    if config == "large":
        models["iss"] = random_model(list(ISS_SIZES))
    rows = []
    random_weights = set()
    for budget in budgets:
        tag = f"{budget:g}"
        gated_dir = os.path.join(runs, f"{config}-gated-{tag}")
        slim_path = os.path.join(gated_dir, "slim.keras")
        if os.path.exists(slim_path):
            models[f"gated-{tag}"] = keras.models.load_model(
                slim_path, compile=False
            )
        for kind in ptb_page.BASELINES:
            folder = os.path.join(runs, f"{config}-{kind}-{tag}")
            results = read_json(os.path.join(folder, "results.json"))
            if results:
                models[f"{kind}-{tag}"], random = plain_or_random(
                    os.path.join(folder, "model.keras"), results
                )
                if random:
                    random_weights.add(f"{kind}-{tag}")
        rows.append((budget, tag, gated_dir))
    fixed = []
    for kind, folder, sizes in fixed_size_runs(runs, config):
        results = read_json(os.path.join(runs, folder, "results.json"))
        if results:
            name = f"{kind}-{'-'.join(map(str, sizes))}"
            models[name], _ = plain_or_random(
                os.path.join(runs, folder, "model.keras"), results
            )
            fixed.append((kind, name, folder, results))
    for kind, name, folder, results in fixed:
        if not os.path.exists(os.path.join(runs, folder, "model.keras")):
            random_weights.add(name)
    random_names = {"dense", "iss"} | random_weights
    files, diffs = {}, {}
    for name, model in models.items():
        started = time.perf_counter()
        model_files, diffs[name] = export_all(
            name, model, args.seq_len, check=name not in random_names
        )
        files.update(model_files)
        print(
            f"{config} {name}: exported in {time.perf_counter() - started:.1f} s"
            f", max |Keras - LiteRT| {max(diffs[name].values(), default=0):.2g}",
            flush=True,
        )
    sequence = {k: v for k, v in files.items() if not k.endswith("_step")}
    step = {k: v for k, v in files.items() if k.endswith("_step")}
    started = time.perf_counter()
    latency = export.benchmark(sequence, runs=args.runs_per_file, warmup=3)
    latency.update(
        export.benchmark(step, runs=10 * args.runs_per_file, warmup=20)
    )
    print(
        f"{config}: timed {len(files)} files in "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )

    def measures(name):
        model = models[name]
        stack = lstm_stack(model, args.seq_len)
        entry = dict(
            sizes=sizes_of(model),
            params=int(model.count_params()),
            lstm_params=int(lstm_params(model)),
            flops_per_step=int(flops_per_step(model)),
            lstm_flops_per_step=int(flops_per_step(stack)),
            tflite_bytes=len(files[f"{name}/model"]),
            tflite_gzip_bytes=len(gzip.compress(files[f"{name}/model"], 9)),
            max_diff_keras_tflite=diffs[name] or None,
            latency_ms={
                variant: latency[f"{name}/{variant}"]
                for variant in ("model", "stack", "model_step", "stack_step")
            },
        )
        return entry

    result = dict(
        config=config,
        runs=runs,
        dense=dict(
            measures("dense"),
            valid_perplexity=dense_results["valid_perplexity"],
            test_perplexity=dense_results["test_perplexity"],
            zaremba_test_perplexity=ZAREMBA_TEST.get(config),
            command=command(os.path.join(runs, f"{config}-dense")),
        ),
        budgets=[],
    )
    dense = result["dense"]
    if "iss" in models:
        result["iss"] = measures("iss")

    def ratios(entry):
        entry["speedup"] = {
            variant: dense["latency_ms"][variant] / entry["latency_ms"][variant]
            for variant in entry["latency_ms"]
        }
        entry["flop_ratio"] = dense["flops_per_step"] / entry["flops_per_step"]
        entry["lstm_flop_ratio"] = (
            dense["lstm_flops_per_step"] / entry["lstm_flops_per_step"]
        )
        return entry

    if "iss" in result:
        ratios(result["iss"])
    for budget, tag, gated_dir in rows:
        row = dict(budget=budget)
        gated_results = read_json(os.path.join(gated_dir, "results.json"))
        shrink_report = read_json(os.path.join(gated_dir, "shrink.json"))
        if f"gated-{tag}" in models and gated_results and shrink_report:
            gated = ratios(measures(f"gated-{tag}"))
            gated.update(
                valid_perplexity=shrink_report["slim"]["valid_perplexity"],
                test_perplexity=shrink_report["slim"]["test_perplexity"],
                gated_test_perplexity=shrink_report["gated"]["test_perplexity"],
                max_logit_difference_gated_slim=shrink_report[
                    "max_logit_difference"
                ],
                budget_reached=gated["lstm_params"]
                / (budget * dense["lstm_params"]),
                from_dense=bool(
                    read_json(os.path.join(gated_dir, "state.json"))["args"].get(
                        "dense_model"
                    )
                ),
                command=command(gated_dir),
            )
            row["gated"] = gated
            retrain_dir = os.path.join(runs, f"{config}-retrain-{tag}")
            retrain = read_json(os.path.join(retrain_dir, "results.json"))
            if retrain:
                row["gated_retrained"] = dict(
                    valid_perplexity=retrain["valid_perplexity"],
                    test_perplexity=retrain["test_perplexity"],
                    command=command(retrain_dir),
                )
        for kind in ptb_page.BASELINES:
            folder = os.path.join(runs, f"{config}-{kind}-{tag}")
            results = read_json(os.path.join(folder, "results.json"))
            if f"{kind}-{tag}" in models and results:
                entry = ratios(measures(f"{kind}-{tag}"))
                entry.update(
                    valid_perplexity=results["valid_perplexity"],
                    test_perplexity=results["test_perplexity"],
                    random_weights_timed=f"{kind}-{tag}" in random_weights,
                    command=command(
                        folder,
                        COMMANDS[kind][0] if kind in COMMANDS else "ptb_language_model.py",
                    ),
                )
                if "lstm_params" in results:
                    # Masked (unshrunk) models count their non-zero weights.
                    entry["lstm_params"] = int(results["lstm_params"])
                if results.get("choices"):
                    entry["choices"] = results["choices"]
                row[kind] = entry
        if len(row) > 1:  # a run still training has nothing to show
            result["budgets"].append(row)
    result["fixed_sizes"] = []
    for kind, name, folder, results in fixed:
        entry = ratios(measures(name))
        entry.update(
            kind=kind,
            valid_perplexity=results["valid_perplexity"],
            test_perplexity=results["test_perplexity"],
            random_weights_timed=name in random_weights,
            command=command(os.path.join(runs, folder)),
        )
        result["fixed_sizes"].append(entry)
    return result


def budget_runs(folders, study):
    """Budget reached by every gated run: the study's and `folders`'."""
    found = []
    for result in study["configs"].values():
        for row in result["budgets"]:
            if "gated" in row:
                found.append(
                    dict(
                        config=result["config"],
                        budget=row["budget"],
                        lstm_params=row["gated"]["lstm_params"],
                        reached=row["gated"]["budget_reached"],
                        from_dense=row["gated"]["from_dense"],
                        command=row["gated"]["command"],
                    )
                )
    runs = [
        os.path.join(folder, name)
        for folder in folders
        if os.path.isdir(folder)
        for name in sorted(os.listdir(folder))
    ]
    for run in runs:
        state = read_json(os.path.join(run, "state.json"))
        if state is None or not os.path.exists(os.path.join(run, "slim.keras")):
            continue
        config = state["args"]["config"]
        slim = keras.models.load_model(
            os.path.join(run, "slim.keras"), compile=False
        )
        units = ptb_lm.CONFIGS[config].units
        dense = lstm_params(random_model([units, units, units]))
        budget = state["args"]["budget"]
        shrink_report = read_json(os.path.join(run, "shrink.json"))
        found.append(
            dict(
                config=config,
                budget=budget,
                lstm_params=lstm_params(slim),
                reached=lstm_params(slim) / (budget * dense),
                from_dense=bool(state["args"].get("dense_model")),
                sizes=sizes_of(slim),
                test_perplexity=shrink_report["slim"]["test_perplexity"],
                valid_perplexity=shrink_report["slim"]["valid_perplexity"],
                command=run_command(run),
            )
        )
    return found


def main(argv=None):
    args = build_parser().parse_args(argv)
    studies = args.runs or [("", os.path.join("runs", "ptb"))]
    for _, folder in studies:
        if not os.path.isdir(folder):
            print(f"{PROG}: error: no run folder {folder!r}", file=sys.stderr)
            return 2
    import_libraries()
    unpacked, unpacked_status = {}, {}
    for _, folder in studies:
        if ptb_collect.is_collected(folder) and folder not in unpacked:
            target = tempfile.mkdtemp(prefix="ptb-collected-")
            results = ptb_collect.unpack(folder, target)
            unpacked[folder] = (target, results.get("runs"))
            unpacked_status[folder] = results.get("status")
            print(
                f"{folder}: packed study (status {results.get('status')}), "
                f"unpacked into {target}",
                flush=True,
            )
    study = dict(
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.platform()}",
        litert="ai_edge_litert, 1 thread, batch 1",
        seq_len=args.seq_len,
        configs={},
    )
    for index, (label, folder) in enumerate(studies):
        for config in args.configs.split(","):
            source, shown = unpacked.get(folder, (folder, None))
            result = report_config(args, source, config, shown)
            if result is not None and folder in unpacked:
                result["runs"] = folder
                result["device_runs"] = shown
                result["status"] = unpacked_status[folder]
            if result is not None:
                key = f"{config}, {label or folder}" if label or index else config
                study["configs"][key] = result
    study["budget_control"] = budget_runs(
        args.budget_runs or [os.path.join("runs", "ptb-budget")], study
    )
    if args.merge:
        merge_previous(study, read_json(args.json))
    study["baselines"] = baseline_rows(study)
    if args.deployment:
        study["deployment"] = read_json(args.deployment)
    ptb_lm.write_json(args.json, study)
    if study["configs"]:
        ptb_page.plot(study, args.plot)
    else:
        print(f"{PROG}: no finished dense run in the studies: no plot", flush=True)
    text = ptb_page.page_text(study)
    ptb_page.write_page(args.page, text)
    print(text)
    return 0


def merge_previous(study, previous):
    """Keeps what `previous` (the last `--json`) has and this run does not
    measure: its other configurations (before the new ones), its budget-only
    runs, its deployment table."""
    if not previous:
        return
    kept = {
        key: value
        for key, value in previous["configs"].items()
        if key not in study["configs"]
    }
    study["configs"] = {**kept, **study["configs"]}
    commands = {entry["command"] for entry in study["budget_control"]}
    study["budget_control"] = [
        entry
        for entry in previous.get("budget_control", [])
        if entry["command"] not in commands
        and (entry["config"], entry["budget"], entry["lstm_params"])
        not in {
            (e["config"], e["budget"], e["lstm_params"])
            for e in study["budget_control"]
        }
    ] + study["budget_control"]
    if "deployment" in previous:
        study["deployment"] = previous["deployment"]


def baseline_rows(study):
    """One row per baseline method and budget of every study table."""
    rows = []
    for key, result in study["configs"].items():
        for row in result["budgets"]:
            gated = row.get("gated", {})
            for method in ptb_page.REVIEWER_BASELINES:
                if method not in row:
                    continue
                entry = row[method]
                rows.append(
                    dict(
                        study=key,
                        config=result["config"],
                        method=method,
                        budget=row["budget"],
                        sizes=entry["sizes"],
                        lstm_params=entry["lstm_params"],
                        gated_lstm_params=gated.get("lstm_params"),
                        valid_perplexity=entry["valid_perplexity"],
                        test_perplexity=entry["test_perplexity"],
                        gated_test_perplexity=gated.get("test_perplexity"),
                        file_bytes=entry["tflite_bytes"],
                        file_gzip_bytes=entry["tflite_gzip_bytes"],
                        stack_speedup=entry["speedup"]["stack"],
                        command=entry["command"],
                    )
                )
    return rows


if __name__ == "__main__":
    sys.exit(main())
