"""The prepared GPU study (benchmarks/ptb/gpu_run.sh) end to end on the CPU.

One module fixture runs the script twice on the tiny configuration, as the
GPU machine would: first with a deadline that stops the study part way
(partial results in the output folder, an "incomplete" line), then the same
call again, which resumes it from the checkpoints and completes. The tests
then check the output folder against the device's limits on what comes
back, rebuild the slim model from its float16 weights, and run
`ptb_report.py` on the packed folder. `ptb_collect.py` is also tested on
its own (splitting into parts, leaving models out), without the data.
"""

import json
import os
import re
import subprocess
import sys
import tarfile
import types

import numpy as np
import pytest

STUDY_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "ptb"
)
sys.path.insert(0, STUDY_DIR)

import ptb_collect  # noqa: E402
import ptb_lm  # noqa: E402
from ptb_helpers import DATA_DIR  # noqa: E402
from ptb_helpers import requires_data  # noqa: E402

SCRIPT = os.path.join(STUDY_DIR, "gpu_run.sh")
MIB = 1 << 20


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _gpu_run(tmp, out, **env):
    env = {
        **os.environ,
        "OUT": str(out),
        "PTB_RUNS": str(tmp / "runs"),
        "PYTHON": sys.executable,
        "KERAS_L0_PTB_DIR": str(DATA_DIR),
        **env,
    }
    return subprocess.run(
        ["bash", SCRIPT, "tiny"], env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    if DATA_DIR is None:
        pytest.skip("Penn Treebank folder not found")
    tmp = tmp_path_factory.mktemp("gpu_run")
    first = _gpu_run(tmp, tmp / "out1", STUDY_LIMIT="10")
    second = _gpu_run(tmp, tmp / "out2")
    return types.SimpleNamespace(
        first=first, second=second, out1=tmp / "out1", out2=tmp / "out2",
        runs=tmp / "runs",
    )  # fmt: skip


def _check_limits(out):
    names = sorted(os.listdir(out))
    sizes = [os.path.getsize(os.path.join(out, name)) for name in names]
    assert len(names) <= 8
    assert all(size <= 16 * MIB for size in sizes)
    assert sum(sizes) <= 64 * MIB
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in names)
    assert all(os.path.isfile(os.path.join(out, name)) for name in names)
    return names


RUNS = [
    "tiny-dense", "tiny-direct-0.5", "tiny-gated-0.5", "tiny-magnitude-0.5",
    "tiny-magnitude-8-8-8",
]  # fmt: skip


@requires_data
def test_deadline_stops_the_study_and_the_same_call_resumes(study):
    first, second = study.first, study.second
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    assert "stopped at the time limit" in first.stdout
    assert re.search(r"^incomplete: .* resume with: ", first.stdout, re.M)
    assert "gpu_run" in first.stdout and "incomplete (status incomplete)" in first.stdout
    partial = _load(study.out1 / "results.json")
    assert partial["status"] == "incomplete"
    progress = partial["progress"]
    assert progress["stopped"] and progress["time_limit_s"] == 10
    assert set(progress["stopped"] + progress["not_started"]) <= {
        *RUNS, "tiny-gated-0.5-shrink",
    }  # fmt: skip
    assert {"results.json", "logs.tar.gz"} <= set(_check_limits(study.out1))

    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
    assert "gpu_run" in second.stdout and "]: complete" in second.stdout
    # The stopped jobs were started again (resumed or restarted) and finished.
    for name in progress["stopped"]:
        assert f"] {name} started" in second.stdout
        assert f"] {name} done" in second.stdout
    assert "failed: none" in second.stdout
    assert _load(study.runs / "progress.json")["status"] == "complete"


@requires_data
def test_output_folder_holds_results_logs_and_float16_weights(study):
    assert study.second.returncode == 0, study.second.stdout[-3000:]
    names = _check_limits(study.out2)
    assert names == ["logs.tar.gz", "results.json", "weights.f16.part00"]
    results = _load(study.out2 / "results.json")
    assert results["status"] == "complete"
    study_runs = results["study"]
    assert sorted(study_runs) == RUNS
    for name in RUNS:
        assert study_runs[name]["results.json"]["test_perplexity"] > 0
    assert sorted(study_runs["tiny-gated-0.5"]) == [
        "results.json", "shrink.json", "state.json",
    ]  # fmt: skip
    # Direct design: dense of the budget's uniform width, trained from scratch.
    direct = study_runs["tiny-direct-0.5"]["state.json"]["args"]
    assert direct["model"] == "dense" and direct["sizes"] == [11, 11, 11]
    assert (direct["epochs"], direct["decay_after"], direct["lr_decay"]) == (2, 1, 0.5)
    magnitude = study_runs["tiny-magnitude-8-8-8"]["state.json"]["args"]
    assert magnitude["keep"] == [8, 8, 8]
    weights = results["weights"]
    assert list(weights["models"]) == ["tiny-gated-0.5"] and not weights["left_out"]
    assert weights["parts"] == ["weights.f16.part00"]
    with tarfile.open(study.out2 / "logs.tar.gz") as tar:
        members = set(tar.getnames())
    for name in RUNS + ["tiny-gated-0.5-shrink"]:
        assert f"{name}.log" in members
    assert {"study.out", "progress.json", "tiny-gated-0.5/shrink.json"} <= members


@requires_data
def test_unpack_rebuilds_the_slim_model_from_float16(study, tmp_path):
    import keras

    assert study.second.returncode == 0, study.second.stdout[-3000:]
    ptb_collect.unpack(str(study.out2), str(tmp_path))
    original = keras.models.load_model(
        study.runs / "tiny-gated-0.5" / "slim.keras", compile=False
    )
    rebuilt = keras.models.load_model(
        tmp_path / "tiny-gated-0.5" / "slim.keras", compile=False
    )
    for a, b in zip(original.get_weights(), rebuilt.get_weights()):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    tokens = np.arange(10, dtype="int32").reshape(1, 10)
    # float16 weights: about 2^-11 relative error on logits of a few units.
    np.testing.assert_allclose(
        np.asarray(original(tokens)), np.asarray(rebuilt(tokens)), atol=5e-3
    )
    assert os.path.exists(tmp_path / "tiny-gated-0.5" / "state.json")
    assert _load(tmp_path / "source.json")["device_runs"] == str(study.runs)


@requires_data
def test_report_on_the_packed_gpu_study(study, tmp_path):
    pytest.importorskip("ai_edge_litert")
    assert study.second.returncode == 0, study.second.stdout[-3000:]
    page = tmp_path / "page.md"
    page.write_text("<!-- results:begin -->\n<!-- results:end -->\n")
    report = subprocess.run(
        [sys.executable, os.path.join(STUDY_DIR, "ptb_report.py"),
         "--runs", f"GPU={study.out2}", "--configs", "tiny",
         "--runs-per-file", "2", "--json", str(tmp_path / "ptb.json"),
         "--plot", str(tmp_path / "ptb.png"), "--page", str(page),
         "--budget-runs", str(tmp_path / "none")],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
        env=dict(os.environ, KERAS_L0_PTB_DIR=DATA_DIR, KERAS_BACKEND="tensorflow"),
    )  # fmt: skip
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-3000:]
    result = _load(tmp_path / "ptb.json")["configs"]["tiny, GPU"]
    assert result["runs"] == str(study.out2)
    (row,) = result["budgets"]
    gated, magnitude, direct = row["gated"], row["magnitude"], row["direct"]
    assert gated["from_dense"] is True
    assert max(gated["max_diff_keras_tflite"].values()) < 1e-4
    assert magnitude["sizes"] == gated["sizes"]
    assert magnitude["random_weights_timed"] and direct["random_weights_timed"]
    assert direct["sizes"] == [11, 11, 11]
    assert direct["max_diff_keras_tflite"] is None
    (fixed,) = result["fixed_sizes"]
    assert (fixed["kind"], fixed["sizes"]) == ("magnitude", [8, 8, 8])
    assert all(ms > 0 for ms in direct["latency_ms"].values())
    text = page.read_text()
    assert "direct design (dense from scratch), budget 0.5" in text
    assert "| magnitude, sizes 8/8/8 |" in text
    assert "random weights" in text
    assert (
        f"Runs: `{study.out2}` (packed on the GPU machine from `{study.runs}`, "
        "study complete)." in text
    )
    assert f"--out {study.runs}/tiny-gated-0.5" in text
    assert (tmp_path / "ptb.png").stat().st_size > 10000


def _fake_run(runs, name, sizes, seed):
    """A finished gated run whose slim model has `sizes` (tiny config)."""
    folder = runs / name
    folder.mkdir(parents=True)
    model = ptb_lm.build_model(50, sizes[0], list(sizes[1:]), seed=seed)
    model.save(folder / "slim.keras")
    neurons = [
        dict(name="a", inputs=sizes[0], inputs_active=sizes[0],
             units=sizes[1], units_active=sizes[1]),
        dict(name="b", inputs=sizes[1], inputs_active=sizes[1],
             units=sizes[2], units_active=sizes[2]),
    ]  # fmt: skip
    for file, data in (
        ("state.json", dict(args=dict(config="tiny", model="gated"))),
        ("shrink.json", dict(slim=dict(neurons=neurons))),
        ("results.json", dict(neurons=neurons, test_perplexity=1.0)),
    ):
        (folder / file).write_text(json.dumps(data))
    (runs / f"{name}.log").write_text("epoch 1\n")
    return model


def test_pack_splits_into_parts_and_leaves_out_what_does_not_fit(tmp_path):
    runs = tmp_path / "runs"
    small = _fake_run(runs, "tiny-gated-0.2", (4, 3, 5), seed=1)
    big = _fake_run(runs, "tiny-gated-0.9", (30, 40, 30), seed=2)
    small_bytes = len(ptb_collect.model_blob(small)[0])
    big_bytes = len(ptb_collect.model_blob(big)[0])
    assert small_bytes < big_bytes
    out = tmp_path / "out"
    # Three files at most: results, logs and one part that holds one model.
    results = ptb_collect.pack(
        str(runs), str(out), max_files=3, part_bytes=small_bytes + 10
    )
    assert results["status"] == "not started"
    weights = results["weights"]
    assert list(weights["models"]) == ["tiny-gated-0.2"]
    assert [entry["run"] for entry in weights["left_out"]] == ["tiny-gated-0.9"]
    assert sorted(os.listdir(out)) == [
        "logs.tar.gz", "results.json", "weights.f16.part00",
    ]  # fmt: skip
    # With room for both, the bundle is cut into parts of part_bytes.
    part_bytes = (small_bytes + big_bytes) // 3 + 1
    results = ptb_collect.pack(str(runs), str(out), part_bytes=part_bytes)
    weights = results["weights"]
    assert sorted(weights["models"]) == ["tiny-gated-0.2", "tiny-gated-0.9"]
    assert len(weights["parts"]) == 3
    assert all(os.path.getsize(out / part) <= part_bytes for part in weights["parts"])
    unpacked = tmp_path / "unpacked"
    ptb_collect.unpack(str(out), str(unpacked))
    import keras

    rebuilt = keras.models.load_model(
        unpacked / "tiny-gated-0.2" / "slim.keras", compile=False
    )
    for a, b in zip(small.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(a.astype("float16"), b.astype("float16"))
    # Anything else in the output folder is refused.
    (out / "other.txt").write_text("x")
    with pytest.raises(SystemExit, match="other.txt"):
        ptb_collect.pack(str(runs), str(out))


def test_float16_byte_planes_round_trip():
    array = np.random.default_rng(0).normal(size=(7, 5)).astype("float32")
    stored = ptb_collect.planes(array)
    assert stored.shape == (2, 35) and stored.dtype == np.uint8
    np.testing.assert_array_equal(
        ptb_collect.from_planes(stored, (7, 5)), array.astype("float16")
    )


@requires_data
@pytest.mark.parametrize("mps", ["0", "1"])
def test_no_gpu_means_no_study(tmp_path, mps):
    # On this CPU machine JAX sees no GPU: the medium study must not start
    # (it would train on the CPU until its deadline). With MPS=1 a stand-in
    # for the MPS control program records that the daemon was started and,
    # since JAX still sees no GPU, stopped again.
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "mps.log"
    control = fake / "nvidia-cuda-mps-control"
    control.write_text(f'#!/bin/sh\necho "$* $(cat)" >> "{log}"\n')
    control.chmod(0o755)
    env = {
        **os.environ,
        "OUT": str(tmp_path / "out"),
        "PTB_RUNS": str(tmp_path / "runs"),
        "PYTHON": sys.executable,
        "KERAS_L0_PTB_DIR": str(DATA_DIR),
        "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
        "MPS": mps,
        "JAX_PLATFORMS": "cpu",
    }
    result = subprocess.run(
        ["bash", SCRIPT, "medium"], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "JAX sees no GPU: not starting the study" in result.stdout
    assert not (tmp_path / "runs" / "study.out").exists()
    if mps == "1":
        assert log.read_text().split() == ["-d", "quit"]
        assert "MPS stopped" in result.stdout
    else:
        assert not log.exists()
