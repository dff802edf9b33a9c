"""The PTB results page: its tables, command list and Pareto plot.

`ptb_report.py` measures a study (exports, timings, perplexities) into one
dict, the content of `docs/results/ptb.json`; this module renders that dict:
`tables` (markdown, one table per configuration), `commands` (every run's
command line), `plot` (test perplexity against the LSTM-stack speedup, one
panel per configuration, one series per method) and `write_page` (replaces
the part of the page between the `<!-- results:begin -->` and
`<!-- results:end -->` lines).
"""

import os

PROG = "ptb_report.py"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


class Method:
    """How one kind of model of the study is named and drawn: `label` in
    the plot's legend, `row` in the tables, `short` in running text;
    `masked`: unshrunk weights with zeros (sizes stay dense)."""

    def __init__(self, label, row, short, marker, color, masked=False):
        self.label, self.row, self.short = label, row, short
        self.marker, self.color, self.masked = marker, color, masked


METHODS = {
    "gated": Method("L0 gated, shrunk", "gated", "gated", "o", "tab:blue"),
    "gated_retrained": Method(
        "L0 gated, shrunk + retrained", "gated + retrain", "gated + retrain",
        "s", "tab:cyan",
    ),
    "magnitude": Method(
        "magnitude pruning + fine-tuning", "magnitude", "magnitude", "^",
        "tab:red",
    ),
    "direct": Method(
        "direct design (dense from scratch)",
        "direct design (dense from scratch)", "direct design", "v",
        "tab:green",
    ),
    "iss": Method(
        "ISS (group lasso) + fine-tuning", "ISS (group lasso)", "ISS", "<",
        "tab:purple",
    ),
    "darb": Method(
        "DARB (block masks, run dense)", "DARB (masked, run dense)", "DARB",
        ">", "tab:brown", masked=True,
    ),
    "lds": Method(
        "LDS pruning + distillation", "LDS pruning", "LDS", "p", "tab:olive"
    ),
    "tfmot": Method(
        "TFMOT prune_low_magnitude (unstructured)",
        "TFMOT prune_low_magnitude (masked, run dense)", "TFMOT", "*",
        "tab:gray", masked=True,
    ),
}  # fmt: skip
# Models of a budget row besides the gated one, each in its own run folder
# `<config>-<kind>-<budget>` with its own timing.
BASELINES = ("magnitude", "direct", "iss", "darb", "lds", "tfmot")
# The rows of ptb.json's `baselines` section.
REVIEWER_BASELINES = ("direct", "iss", "tfmot", "darb", "lds")
QUANTIZATIONS = {
    "float32": "float32",
    "dynamic": "dynamic-range int8",
    "float16": "float16",
    "int8": "full int8",
}

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
            for kind in BASELINES:
                if kind in row:
                    lines.append(
                        line(f"{METHODS[kind].row}, budget {budget:g}", row[kind])
                    )
        for entry in result.get("fixed_sizes", []):
            label = METHODS[entry["kind"]].row
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
            for kind in BASELINES:
                if kind in row:
                    entry = row[kind]
                    text = f"{METHODS[kind].short} {entry['test_perplexity']:.2f}"
                    if kind == "direct":
                        text += f" ({'/'.join(str(s) for s in entry['sizes'])})"
                    elif METHODS[kind].masked:
                        text += f" ({entry['lstm_params']:,} non-zero LSTM weights)"
                    parts.append(text)
            lines.append(" ".join(parts[:1]) + " " + "; ".join(parts[1:]))
        for entry in result.get("fixed_sizes", []):
            sizes = "/".join(str(s) for s in entry["sizes"])
            label = METHODS[entry["kind"]].short
            lines.append(
                f"- sizes {sizes}: {label} {entry['test_perplexity']:.2f} "
                f"({entry['lstm_params']:,} LSTM params)"
            )
        if any(
            row.get(kind, {}).get("random_weights_timed")
            for row in result["budgets"]
            for kind in BASELINES
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
            for key in ("gated", "gated_retrained", *BASELINES):
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
    import matplotlib.transforms

    # One panel per configuration; a second study of a configuration
    # ("small, LABEL") joins its panel with dashed lines and open markers.
    panels = {}
    for key in study["configs"]:
        panels.setdefault(key.split(", ", 1)[0], []).append(key)
    figure, axes = plt.subplots(
        1, len(panels), figsize=(5.5 * len(panels), 6), squeeze=False
    )
    entries = 0
    legends = []
    for axis, (config, keys) in zip(axes[0], panels.items()):
        axis.set_title(f"PTB {config}")
        fastest = 1.0
        dense_seen = set()
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
            if dense["test_perplexity"] not in dense_seen:
                # Studies that share one dense model show it once.
                dense_seen.add(dense["test_perplexity"])
                axis.plot(
                    [1.0],
                    [dense["test_perplexity"]],
                    "kD",
                    fillstyle=style["fillstyle"],
                    label=f"dense (1x){suffix}",
                )
            for method in ("gated", "gated_retrained", *BASELINES):
                marker, color = METHODS[method].marker, METHODS[method].color
                label = METHODS[method].label
                timed = "gated" if method == "gated_retrained" else method
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
                    color=METHODS[kind].color,
                    ls="none",
                    fillstyle=style["fillstyle"],
                    label=f"{METHODS[kind].short}, {sizes}{suffix}",
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
        # Under its axes; the first panel's from the figure's left edge, so
        # that a legend wider than its panel runs right, not off the figure.
        first = not legends
        legend = axis.legend(
            fontsize=7,
            loc="upper left" if first else "upper center",
            bbox_to_anchor=(0.005 if first else 0.5, -0.2),
            bbox_transform=matplotlib.transforms.blended_transform_factory(
                figure.transFigure if first else axis.transAxes, axis.transAxes
            ),
        )
        legends.append(legend)
        entries = max(entries, len(legend.get_texts()))
    # Room under the axes for the longest legend, the axes keeping 4 inches.
    figure.set_size_inches(5.5 * len(panels), 5 + 0.15 * entries)
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


def budget_table(study):
    lines = [
        "Budget control (`BudgetController`, LSTM-stack parameters after "
        "shrinking, against the target):",
        "",
        "| config | gates trained | target (fraction) | LSTM params kept "
        "| reached / target | run |",
        "|---|---|---|---|---|---|",
    ]
    for entry in study["budget_control"]:
        lines.append(
            f"| {entry['config']} | "
            f"{'on the dense model' if entry['from_dense'] else 'from scratch'} | "
            f"{entry['budget']:g} | "
            f"{entry['lstm_params']:,} | {100 * entry['reached']:.1f}% | "
            f"`{entry['command'].split('--out ')[-1]}` |"
        )
    return "\n".join(lines)


def baselines_table(study):
    """The reviewer's baselines beside the gated model of the same budget."""
    rows = study.get("baselines") or []
    if not rows:
        return ""
    lines = [
        "Baselines at the gated models' sizes (test perplexity; LSTM "
        "parameters: non-zero weights for the masked methods, which LiteRT "
        "runs as dense):",
        "",
        "| study | budget | method | emb / h1 / h2 | LSTM params | test ppl "
        "| gated test ppl | file MB | gzip MB | stack speedup |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        gated = row["gated_test_perplexity"]
        lines.append(
            f"| {row['study']} | {row['budget']:g} | "
            f"{METHODS[row['method']].short} | "
            f"{' / '.join(str(s) for s in row['sizes'])} | "
            f"{row['lstm_params']:,} | {row['test_perplexity']:.2f} | "
            f"{'—' if gated is None else f'{gated:.2f}'} | "
            f"{row['file_bytes'] / 1e6:.2f} | {row['file_gzip_bytes'] / 1e6:.2f} | "
            f"{row['stack_speedup']:.1f}x |"
        )
    return "\n".join(lines)


def deployment_table(study):
    """The shipped files: size, their own test perplexity, ms per token."""
    rows = study.get("deployment") or []
    if not rows:
        return ""
    lines = [
        "Deployment (streaming file, batch 1, LiteRT 1 thread; test "
        "perplexity of the file itself over the whole test set, one token "
        "per call):",
        "",
        "| model | quantization | file MB | test ppl (file) | test ppl (Keras) "
        "| ms / token |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {QUANTIZATIONS.get(row['quantization'], row['quantization'])} | "
            f"{row['bytes'] / 1e6:.2f} | {row['test_perplexity']:.2f} | "
            f"{row['keras_test_perplexity']:.2f} | {row['ms_per_token']:.3f} |"
        )
    return "\n".join(lines)


def page_text(study):
    """The results part of the page."""
    parts = [
        tables(study),
        budget_table(study),
        baselines_table(study),
        deployment_table(study),
        "Commands of the runs:\n\n" + commands(study),
    ]
    return "\n\n".join(part.strip("\n") for part in parts if part)
