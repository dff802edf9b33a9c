"""The printed report of `keras-l0-shrink`."""

from keras_l0.cli._common import REPORT_NAME


def _arrow(stream):
    try:
        "\u2192".encode(stream.encoding or "ascii")
        return "\u2192"
    except (UnicodeEncodeError, LookupError):
        return "->"


def _bytes(n):
    if n < 1024:
        return f"{n} B"
    if n < 1024**2:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024**2:.1f} MiB"


def format_report(report, arrow="->"):
    """The text that `keras-l0-shrink` prints, from its `report.json`."""

    def change(before, after):
        return f"{before} {arrow} {after}"

    def count(before, after):
        return change(f"{before:,}", f"{after:,}")

    params, flops = report["params"], report["flops_per_step"]
    table = [("layer", "type", "units", "inputs", "params", "FLOPs/step")]
    table += [
        (
            r["name"],
            r["type"],
            count(r["units"], r["units_kept"]),
            count(r["inputs"], r["inputs_kept"]),
            count(r["params"], r["params_kept"]),
            count(r["flops_per_step"], r["flops_per_step_kept"]),
        )
        for r in report["layers"]
    ]
    table.append(
        (
            "model",
            "",
            "",
            "",
            count(params["gated"], params["slim"]),
            count(flops["dense"], flops["slim"]),
        )
    )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]

    def line(row):
        return "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [line(table[0]), rule, *map(line, table[1:-1]), rule]
    lines += [line(table[-1]), ""]

    sizes = report["file_bytes"]
    diffs = report["max_abs_diff"]
    quantization = report["options"]["quantization"]
    facts = [
        (
            f"params dense {arrow} slim",
            count(params["dense"], params["slim"])
            + f"  ({params['slim'] / params['dense']:.1%})",
        ),
        (
            f".keras gated {arrow} slim",
            change(_bytes(sizes["gated_keras"]), _bytes(sizes["slim_keras"])),
        ),
        (
            f".tflite dense {arrow} slim"
            if sizes["dense_tflite"] is not None
            else ".tflite slim",
            (
                change(
                    _bytes(sizes["dense_tflite"]), _bytes(sizes["slim_tflite"])
                )
                if sizes["dense_tflite"] is not None
                else _bytes(sizes["slim_tflite"])
            )
            + f"  (quantization: {quantization})",
        ),
    ]
    if "streaming_tflite" in sizes:
        facts.append(
            (".tflite streaming", _bytes(sizes["streaming_tflite"]))
        )
    facts += [
        ("max |diff| gated vs slim", f"{diffs['gated_vs_slim_keras']:.2e}"),
        ("max |diff| Keras vs TFLite", f"{diffs['keras_vs_tflite']:.2e}"),
    ]
    if "keras_vs_streaming_tflite" in diffs:
        facts.append(
            (
                "max |diff| Keras vs streaming",
                f"{diffs['keras_vs_streaming_tflite']:.2e}",
            )
        )
    for name, inputs in report.get("padding", {}).items():
        fed = ", ".join(
            f"{key} without padding {value!r}" for key, value in inputs.items()
        )
        facts.append((f"{name} takes", f"unpadded sequences: {fed}"))
    latency = report["latency_ms"]
    if latency is not None:
        facts.append(
            (
                f"latency dense {arrow} slim",
                change(f"{latency['dense']:.3f}", f"{latency['slim']:.3f} ms")
                + f"  (speedup {latency['speedup']:.2f}x; median of "
                f"{latency['runs']} runs, {latency['num_threads']} thread, "
                f"batch {report['options']['batch_size']}, "
                f"{report['options']['check_sequence_length']} steps)",
            )
        )
    width = max(len(label) for label, _ in facts)
    lines += [f"{label.ljust(width)}  {value}" for label, value in facts]
    written = [*report["outputs"].values(), REPORT_NAME]
    lines += ["", f"wrote into {report['output_dir']}: {', '.join(written)}"]
    return "\n".join(lines)
