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
import json
import os
import platform
import re
import shlex
import sys
import tempfile
import time

import ptb_collect

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
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
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


def run_command(folder, shown=None):
    """The command line that made a run, rebuilt from its `state.json`
    (`--out shown`, default `folder`)."""
    state = read_json(os.path.join(folder, "state.json"))
    if state is None:
        return None
    argv = ["python", "benchmarks/ptb/ptb_language_model.py"]
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
        if name == "initial_keep_probability" and value == 0.9:
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
    return "KERAS_BACKEND=jax " + " ".join(
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

    def command(folder):
        return run_command(
            folder, os.path.join(shown, os.path.basename(folder))
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
        magnitude_dir = os.path.join(runs, f"{config}-magnitude-{tag}")
        slim_path = os.path.join(gated_dir, "slim.keras")
        magnitude_path = os.path.join(magnitude_dir, "model.keras")
        if os.path.exists(slim_path):
            models[f"gated-{tag}"] = keras.models.load_model(
                slim_path, compile=False
            )
        magnitude_results = read_json(os.path.join(magnitude_dir, "results.json"))
        if magnitude_results:
            models[f"magnitude-{tag}"], random = plain_or_random(
                magnitude_path, magnitude_results
            )
            if random:
                random_weights.add(f"magnitude-{tag}")
        direct_dir = os.path.join(runs, f"{config}-direct-{tag}")
        direct_results = read_json(os.path.join(direct_dir, "results.json"))
        if direct_results:
            models[f"direct-{tag}"], random = plain_or_random(
                os.path.join(direct_dir, "model.keras"), direct_results
            )
            if random:
                random_weights.add(f"direct-{tag}")
        rows.append((budget, tag, gated_dir, magnitude_dir))
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
    for budget, tag, gated_dir, magnitude_dir in rows:
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
        for kind, folder in (
            ("magnitude", magnitude_dir),
            ("direct", os.path.join(runs, f"{config}-direct-{tag}")),
        ):
            results = read_json(os.path.join(folder, "results.json"))
            if f"{kind}-{tag}" in models and results:
                entry = ratios(measures(f"{kind}-{tag}"))
                entry.update(
                    valid_perplexity=results["valid_perplexity"],
                    test_perplexity=results["test_perplexity"],
                    random_weights_timed=f"{kind}-{tag}" in random_weights,
                    command=command(folder),
                )
                row[kind] = entry
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


def _ms(value):
    return f"{value:.3g}" if value < 10 else f"{value:.0f}"


def tables(study):
    lines = []
    for key, result in study["configs"].items():
        dense = result["dense"]
        lines += [
            f"### {key} ({'/'.join(str(s) for s in dense['sizes'])})",
            "",
            f"Runs: `{result['runs']}`"
            + (
                f" (packed on the GPU machine from `{result['device_runs']}`, "
                f"study {result['status']})."
                if "device_runs" in result
                else "."
            ),
            "",
            "| model | emb / h1 / h2 | LSTM params | all params | valid ppl | "
            "test ppl | TFLite MB | stack ms (35) | speedup | FLOP ratio | "
            "model ms (35) | speedup | stack step ms | speedup | model step "
            "ms | speedup |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]

        def line(label, entry, ppl=True):
            lat = entry["latency_ms"]
            speed = entry.get("speedup", {})
            cells = [
                label,
                " / ".join(str(s) for s in entry["sizes"]),
                f"{entry['lstm_params']:,}",
                f"{entry['params']:,}",
                f"{entry['valid_perplexity']:.2f}" if ppl else "—",
                f"{entry['test_perplexity']:.2f}" if ppl else "—",
                f"{entry['tflite_bytes'] / 1e6:.1f}",
            ]
            for variant in ("stack", "model", "stack_step", "model_step"):
                cells.append(_ms(lat[variant]))
                cells.append(
                    f"{speed[variant]:.1f}x" if variant in speed else "1x"
                )
                if variant == "stack":
                    cells.append(
                        f"{entry['lstm_flop_ratio']:.1f}x"
                        if "lstm_flop_ratio" in entry
                        else "1x"
                    )
            return "| " + " | ".join(cells) + " |"

        lines.append(line("dense", dense))
        if "iss" in result:
            lines.append(line("ISS sizes (reference, random weights)", result["iss"], ppl=False))
        for row in result["budgets"]:
            budget = row["budget"]
            if "gated" in row:
                start = " from the dense model" if row["gated"]["from_dense"] else ""
                lines.append(line(f"gated{start}, budget {budget:g}", row["gated"]))
            if "magnitude" in row:
                lines.append(line(f"magnitude, budget {budget:g}", row["magnitude"]))
            if "direct" in row:
                lines.append(
                    line(f"direct design (dense from scratch), budget {budget:g}", row["direct"])
                )
        for entry in result.get("fixed_sizes", []):
            label = {"direct": "direct design (dense from scratch)", "magnitude": "magnitude"}[entry["kind"]]
            sizes = "/".join(str(s) for s in entry["sizes"])
            lines.append(line(f"{label}, sizes {sizes}", entry))
        lines += ["", "Perplexities (test) and budgets:", ""]
        zaremba = dense["zaremba_test_perplexity"]
        line_text = f"- dense: {dense['test_perplexity']:.2f}"
        if zaremba:
            change = 100 * (dense["test_perplexity"] / zaremba - 1)
            line_text += f" (Zaremba et al.: {zaremba}, {change:+.1f}%)"
        lines.append(line_text)
        for row in result["budgets"]:
            parts = [f"- budget {row['budget']:g}:"]
            if "gated" in row:
                gated = row["gated"]
                parts.append(
                    f"gated {gated['test_perplexity']:.2f} "
                    f"({100 * (gated['test_perplexity'] / dense['test_perplexity'] - 1):+.1f}% vs dense; "
                    f"LSTM params reached {100 * gated['budget_reached']:.1f}% of the budget; "
                    f"max |logit gated - slim| {gated['max_logit_difference_gated_slim']:.2g})"
                )
            if "gated_retrained" in row:
                parts.append(
                    f"gated + retrain {row['gated_retrained']['test_perplexity']:.2f}"
                )
            if "magnitude" in row:
                parts.append(f"magnitude {row['magnitude']['test_perplexity']:.2f}")
            if "direct" in row:
                sizes = "/".join(str(s) for s in row["direct"]["sizes"])
                parts.append(
                    f"direct design {row['direct']['test_perplexity']:.2f} ({sizes})"
                )
            lines.append(" ".join(parts[:1]) + " " + "; ".join(parts[1:]))
        for entry in result.get("fixed_sizes", []):
            sizes = "/".join(str(s) for s in entry["sizes"])
            label = "direct design" if entry["kind"] == "direct" else "magnitude"
            lines.append(
                f"- sizes {sizes}: {label} {entry['test_perplexity']:.2f} "
                f"({entry['lstm_params']:,} LSTM params)"
            )
        if any(
            row.get(kind, {}).get("random_weights_timed")
            for row in result["budgets"]
            for kind in ("magnitude", "direct")
        ) or any(e["random_weights_timed"] for e in result.get("fixed_sizes", [])):
            lines.append(
                "- magnitude and direct-design models came back from the GPU as "
                "sizes and perplexities only: their latencies are those of "
                "models of the same sizes with random weights"
            )
        lines.append("")
    return "\n".join(lines)


def commands(study):
    lines = ["```sh"]
    for key, result in study["configs"].items():
        lines.append(f"# {key}")
        lines.append(result["dense"]["command"])
        for row in result["budgets"]:
            for key in ("gated", "gated_retrained", "magnitude", "direct"):
                if key in row and row[key].get("command"):
                    lines.append(row[key]["command"])
        for entry in result.get("fixed_sizes", []):
            if entry.get("command"):
                lines.append(entry["command"])
    extra = [
        entry["command"]
        for entry in study.get("budget_control", [])
        if "sizes" in entry
    ]
    if extra:
        lines.append("# budget control only")
        lines += extra
    lines.append("```")
    return "\n".join(lines)


def plot(study, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    # One panel per configuration; a second study of a configuration
    # ("small, LABEL") joins its panel with dashed lines and open markers.
    panels = {}
    for key in study["configs"]:
        panels.setdefault(key.split(", ", 1)[0], []).append(key)
    figure, axes = plt.subplots(
        1, len(panels), figsize=(5.5 * len(panels), 6), squeeze=False
    )
    for axis, (config, keys) in zip(axes[0], panels.items()):
        axis.set_title(f"PTB {config}")
        fastest = 1.0
        for index, key in enumerate(keys):
            result = study["configs"][key]
            suffix = "" if key == config else f", {key.split(', ', 1)[1]}"
            style = dict(
                ls=("-", "--", ":", "-.")[index % 4],
                fillstyle="full" if index == 0 else "none",
            )
            dense = result["dense"]
            if index == 0:
                axis.axhline(dense["test_perplexity"], color="gray", ls="--")
            axis.plot(
                [1.0],
                [dense["test_perplexity"]],
                "kD",
                fillstyle=style["fillstyle"],
                label=f"dense (1x){suffix}",
            )
            for method, marker, color, label in (
                ("gated", "o", "tab:blue", "L0 gated, shrunk"),
                (
                    "gated_retrained",
                    "s",
                    "tab:cyan",
                    "L0 gated, shrunk + retrained",
                ),
                (
                    "magnitude",
                    "^",
                    "tab:red",
                    "magnitude pruning + fine-tuning",
                ),
                (
                    "direct",
                    "v",
                    "tab:green",
                    "direct design (dense from scratch)",
                ),
            ):
                timed = method if method in ("magnitude", "direct") else "gated"
                points = sorted(
                    (
                        row[timed]["speedup"]["stack"],
                        row[method]["test_perplexity"],
                    )
                    for row in result["budgets"]
                    if method in row and timed in row
                )
                if points:
                    xs, ys = zip(*points)
                    fastest = max(fastest, *xs)
                    axis.plot(
                        xs,
                        ys,
                        marker=marker,
                        color=color,
                        label=label + suffix,
                        **style,
                    )
            for entry in result.get("fixed_sizes", []):
                sizes = "/".join(str(s) for s in entry["sizes"])
                kind = entry["kind"]
                axis.plot(
                    [entry["speedup"]["stack"]],
                    [entry["test_perplexity"]],
                    marker="P" if kind == "direct" else "X",
                    color="tab:green" if kind == "direct" else "tab:red",
                    ls="none",
                    fillstyle=style["fillstyle"],
                    label=f"{'direct design' if kind == 'direct' else 'magnitude'}, {sizes}{suffix}",
                )
                fastest = max(fastest, entry["speedup"]["stack"])
        iss = [
            study["configs"][key]["iss"]
            for key in keys
            if "iss" in study["configs"][key]
        ]
        if iss:
            axis.axvline(
                iss[0]["speedup"]["stack"],
                color="k",
                ls=":",
                label="ISS sizes (speed only)",
            )
        axis.set_xscale("log")
        axis.set_xlim(0.8, fastest * 1.5)
        axis.set_xticks([t for t in (1, 2, 5, 10, 20, 50, 100) if t < fastest * 1.5])
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel("LSTM-stack speedup, LiteRT 1 thread (x)")
        axis.set_ylabel("test perplexity")
        axis.legend(
            fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15)
        )
    figure.tight_layout()
    figure.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)


def write_page(page, text):
    with open(page, encoding="utf-8") as f:
        content = f.read()
    if BEGIN not in content or END not in content:
        raise SystemExit(f"{PROG}: error: {page} has no {BEGIN} ... {END} lines")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(page + ".tmp", "w", encoding="utf-8") as f:
        f.write(head + BEGIN + "\n" + text + "\n" + END + tail)
    os.replace(page + ".tmp", page)


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
    with open(args.json + ".tmp", "w", encoding="utf-8") as f:
        json.dump(study, f, indent=1)
    os.replace(args.json + ".tmp", args.json)
    if study["configs"]:
        plot(study, args.plot)
    else:
        print(f"{PROG}: no finished dense run in the studies: no plot", flush=True)
    budget_lines = [
        "Budget control (`BudgetController`, LSTM-stack parameters after "
        "shrinking, against the target):",
        "",
        "| config | gates trained | target (fraction) | LSTM params kept "
        "| reached / target | run |",
        "|---|---|---|---|---|---|",
    ]
    for entry in study["budget_control"]:
        budget_lines.append(
            f"| {entry['config']} | "
            f"{'on the dense model' if entry['from_dense'] else 'from scratch'} | "
            f"{entry['budget']:g} | "
            f"{entry['lstm_params']:,} | {100 * entry['reached']:.1f}% | "
            f"`{entry['command'].split('--out ')[-1]}` |"
        )
    text = (
        tables(study)
        + "\n"
        + "\n".join(budget_lines)
        + "\n\nCommands of the runs:\n\n"
        + commands(study)
    )
    write_page(args.page, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
