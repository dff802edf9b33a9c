"""Per-token latency of the demo page, dense vs slim, in headless Chromium.

Serves this folder (`serve.py`, with `--model-dir`, default `./model`),
opens the page once per model and round, alternating dense and slim so that
both see the same machine conditions, times `--steps` calls of the `step`
signature in LiteRT.js (wasm, 1 thread; from zero states, tokens cycled
through the vocabulary; each call timed with `performance.now()` around
building the inputs, `run` and reading the outputs), and prints the median
per model over all rounds and the ratio. With `--screenshot FILE` it types
`--text` into the slim page's keyboard and saves a screenshot.

Example (after `make_model.sh`):

```
python examples/web/measure.py --screenshot docs/web_demo.png
```
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading

import serve

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = {
    "dense": "dense/dense_slim_streaming.manifest.json",
    "slim": "slim/gated_slim_streaming.manifest.json",
}


def drive(url, *args):
    result = subprocess.run(
        ["node", os.path.join(HERE, "drive.mjs"), url, *args],
        capture_output=True, text=True, timeout=600, cwd=HERE,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if result.returncode or report["errors"]:
        raise SystemExit(f"drive.mjs failed: {report['errors']}\n{result.stderr[-2000:]}")
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=os.path.join(HERE, "model"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--screenshot")
    parser.add_argument("--text", default="the company said it expects to report a loss for the third qu")
    args = parser.parse_args(argv)
    if shutil.which("node") is None:
        raise SystemExit("measure.py: node missing (bash scripts/setup_browser.sh)")
    server = serve.make_server(0, args.model_dir)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/index.html?manifest=model/"
    times = {name: [] for name in MODELS}
    sizes = {}
    try:
        for _ in range(args.rounds):
            for name, manifest in MODELS.items():
                report = drive(base + manifest, "--bench", str(args.steps), "--timeout", "120000")
                times[name] += report["bench"]["ms"][5:]  # first calls: warm-up
                sizes[name] = report["manifest"]["model"]["bytes"]
                assert report["crossOriginIsolated"], "page not cross-origin isolated: coarse timer"
        if args.screenshot:
            screenshot = os.path.abspath(args.screenshot)
            report = drive(base + MODELS["slim"], "--type", args.text, "--screenshot", screenshot)
            print(f"typed {args.text!r}: suggestions {report['suggestions']}; {report['latency']}")
    finally:
        server.shutdown()
        server.server_close()
    medians = {name: statistics.median(ms) for name, ms in times.items()}
    for name in MODELS:
        print(f"{name:5s} {sizes[name] / 1024:8.0f} KiB  median {medians[name]:.3f} ms/token "
              f"over {len(times[name])} calls ({args.rounds} rounds x {args.steps})")
    print(f"speedup dense/slim {medians['dense'] / medians['slim']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
