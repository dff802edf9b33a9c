"""The browser twin of the on-device demo (examples/web), end to end.

A small gated language model (tiny vocabulary, a few units closed) is saved
as `.keras`, shrunk and exported by the package's CLI with `--streaming`,
with its manifest and vocabulary (`--vocabulary`). The page is
served on 127.0.0.1 (`examples/web/serve.py`, in a thread) and driven in
headless Chromium by `examples/web/drive.mjs` (playwright-core): it loads the
file with LiteRT.js (wasm, from node_modules), runs 35 tokens from zero
states carrying the states from call to call, and its logits must match the
slim Keras model's full-sequence logits at every step to 1e-4. It then types
into the keyboard, checks the three suggestions and writes a screenshot
(`$KERAS_L0_ARTIFACTS_DIR/web_demo.png`, default `runs/artifacts/`).

Needs node, `npm ci` in examples/web and a Chromium:
`bash scripts/setup_browser.sh` installs them; the test is skipped, with
the reason, where they are missing.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading

import keras
import numpy as np
import pytest

import keras_l0
from keras_l0 import manifest
from keras_l0.shrink import gated_layers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEB = os.path.join(REPO, "examples", "web")
NUM_TOKENS = 35
VOCABULARY = ["<eos>", "<unk>"] + [f"w{i}" for i in range(22)]
CLOSED = -10.0  # a log_alpha whose inference gate is exactly 0
TOLERANCE = 1e-4


def _load_web_module(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(WEB, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _chromium():
    if os.environ.get("CHROMIUM_PATH"):
        return os.environ["CHROMIUM_PATH"]
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name) or (
            f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None
        )
        if path:
            return path
    return None


def _browser_or_skip():
    """`(node, chromium)`, or a skip naming what is missing."""
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node")
    for package in ("@litertjs/core", "playwright-core"):
        if not os.path.isfile(os.path.join(WEB, "node_modules", package, "package.json")):
            missing.append(f"examples/web/node_modules/{package}")
    chromium = _chromium()
    if chromium is None:
        missing.append("chromium")
    if missing:
        pytest.skip(
            "web demo test needs " + ", ".join(missing)
            + " (run `bash scripts/setup_browser.sh`)"
        )
    return node, chromium


def _gated_language_model():
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    # Weights large enough for logits of order 1 and states that matter.
    big = keras.initializers.RandomNormal(stddev=1.0, seed=1)
    x = keras.layers.Embedding(
        len(VOCABULARY), 8, embeddings_initializer=big, name="embedding"
    )(tokens)
    x = keras_l0.GatedLSTM(
        12, return_sequences=True, recurrent_initializer=big, name="lstm1"
    )(x)
    x = keras_l0.GatedLSTM(
        10, return_sequences=True, recurrent_initializer=big, name="lstm2"
    )(x)
    logits = keras.layers.Dense(
        len(VOCABULARY), kernel_initializer=big, name="logits"
    )(x)
    model = keras.Model(tokens, logits)
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(VOCABULARY), (16, 11))
    model.fit(ids[:, :-1], ids[:, 1:], batch_size=8, epochs=1, verbose=0)
    for layer, closed in zip(gated_layers(model), ([1, 4, 7], [2, 5])):
        values = keras.ops.convert_to_numpy(layer.cell.hidden_log_alpha).copy()
        values[closed] = CLOSED
        layer.cell.hidden_log_alpha.assign(values)
    return model


def _shrink_cli(*args):
    """Runs `keras-l0-shrink` with this interpreter."""
    code = "import sys, keras_l0_shrink; sys.exit(keras_l0_shrink.main())"
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The CLI's output folder for a small gated LM, with the manifest and
    vocabulary beside the streaming file."""
    keras.backend.clear_session()
    folder = tmp_path_factory.mktemp("web_demo")
    gated = _gated_language_model()
    gated.save(folder / "gated.keras")
    (folder / "vocabulary.txt").write_text("\n".join(VOCABULARY) + "\n")
    out = folder / "out"
    result = _shrink_cli(
        str(folder / "gated.keras"),
        "-o",
        str(out),
        "--streaming",
        "--no-benchmark",
        "--vocabulary",
        str(folder / "vocabulary.txt"),
        "--special-token",
        "end_of_sentence=<eos>",
        "--special-token",
        "unknown=<unk>",
    )
    assert result.returncode == 0, result.stderr
    tflite = out / "gated_slim_streaming.tflite"
    assert tflite.is_file(), sorted(os.listdir(out))
    return out, str(out / "gated_slim_streaming.manifest.json")


def test_the_manifest_beside_the_streaming_file(exported):
    out, path = exported
    assert os.path.basename(path) == "gated_slim_streaming.manifest.json"
    info = manifest.read(path)
    manifest.check(info, str(out / "gated_slim_streaming.tflite"))
    assert info["signature"] == "step"
    assert info["sequence_mode"] == "streaming"
    assert [(s["input"], s["shape"]) for s in info["states"]] == [
        ("lstm1_c", [1, 9]),
        ("lstm1_h", [1, 9]),
        ("lstm2_c", [1, 8]),
        ("lstm2_h", [1, 8]),
    ]
    assert info["language_model"]["vocabulary_size"] == len(VOCABULARY)
    assert info["language_model"]["special_tokens"]["end_of_sentence"]["id"] == 0


def _serve(model_dir):
    server = _load_web_module("serve").make_server(0, model_dir)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def _drive(node, chromium, url, *args):
    env = dict(os.environ, CHROMIUM_PATH=chromium)
    result = subprocess.run(
        [node, os.path.join(WEB, "drive.mjs"), url, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=WEB,
        env=env,
    )
    lines = result.stdout.strip().splitlines()
    assert lines, f"drive.mjs printed nothing; stderr: {result.stderr[-3000:]}"
    report = json.loads(lines[-1])
    assert result.returncode == 0 and not report["errors"], (
        report["errors"], report["console"], result.stderr[-3000:]
    )
    return report


def _artifacts_dir():
    folder = os.environ.get("KERAS_L0_ARTIFACTS_DIR") or os.path.join(
        REPO, "runs", "artifacts"
    )
    os.makedirs(folder, exist_ok=True)
    return folder


def test_page_matches_keras_with_states_carried(exported):
    node, chromium = _browser_or_skip()
    out, path = exported
    slim = keras.models.load_model(out / "gated_slim.keras", compile=False)
    ids = np.random.default_rng(3).integers(0, len(VOCABULARY), NUM_TOKENS)
    expected = keras.ops.convert_to_numpy(
        slim(ids[None].astype("int32"), training=False)
    )[0]
    # Each step's logits from zero states differ from the carried ones, so a
    # page that dropped the states would not match.
    alone = keras.ops.convert_to_numpy(
        slim(ids[:, None].astype("int32"), training=False)
    )[:, 0]
    assert np.max(np.abs(alone[1:] - expected[1:])) > 0.1

    screenshot = os.path.join(_artifacts_dir(), "web_demo.png")
    server, thread = _serve(str(out))
    try:
        url = (
            f"http://127.0.0.1:{server.server_address[1]}/index.html"
            f"?manifest=model/{os.path.basename(path)}"
        )
        report = _drive(
            node,
            chromium,
            url,
            "--ids", ",".join(map(str, ids)),
            "--type", "w3 w7 w11 w",
            "--screenshot", screenshot,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)

    assert report["manifest"] == manifest.read(path)
    got = np.array(report["run"]["logits"], dtype=np.float64)
    assert got.shape == (NUM_TOKENS, len(VOCABULARY))
    worst = float(np.max(np.abs(got - expected)))
    print(f"\nLiteRT.js vs Keras, {NUM_TOKENS} steps: max |diff| {worst:.2e}; "
          f"median step {np.median(report['run']['ms']):.3f} ms; "
          f"screenshot {screenshot}")
    assert worst <= TOLERANCE
    assert len(report["run"]["ms"]) == NUM_TOKENS

    # The keyboard: three suggestions for the word being typed ("w"), no
    # special token among them, and a latency line.
    suggestions = report["suggestions"]
    assert len(suggestions) == 3 and len(set(suggestions)) == 3
    assert all(s.startswith("w") and s in VOCABULARY for s in suggestions)
    assert "ms" in report["latency"]
    assert report["context"].startswith("context: <eos> w3 w7 w11")
    assert os.path.getsize(screenshot) > 1000
