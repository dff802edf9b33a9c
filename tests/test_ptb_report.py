"""End to end: a tiny PTB study, then `ptb_report.py` exports, times and
writes its page, JSON and plot."""

import json
import os
import subprocess
import sys

import pytest
from ptb_helpers import DATA_DIR
from ptb_helpers import requires_data

pytest.importorskip("ai_edge_litert")

EXAMPLES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "ptb"
)
pytestmark = requires_data


def _run(args, tmp_path):
    env = dict(os.environ, KERAS_L0_PTB_DIR=DATA_DIR, KERAS_BACKEND="tensorflow")
    return subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_report_on_a_tiny_study(tmp_path):
    runs = tmp_path / "runs"
    study = _run(
        [
            os.path.join(EXAMPLES, "ptb_reproduce.py"),
            "--configs",
            "tiny",
            "--jobs",
            "2",
            "--out",
            str(runs),
            "--max-steps",
            "3",
            "--extra=--epochs 1",
        ],
        tmp_path,
    )
    assert study.returncode == 0, study.stdout[-2000:] + study.stderr[-2000:]
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- results:begin -->\nold\n<!-- results:end -->\ntail\n")
    report = _run(
        [
            os.path.join(EXAMPLES, "ptb_report.py"),
            "--runs",
            str(runs),
            "--runs",
            f"again={runs}",
            "--configs",
            "tiny",
            "--runs-per-file",
            "2",
            "--json",
            str(tmp_path / "ptb.json"),
            "--plot",
            str(tmp_path / "ptb.png"),
            "--page",
            str(page),
            "--budget-runs",
            str(tmp_path / "none"),
            "--budget-runs",
            str(runs),
        ],
        tmp_path,
    )
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-3000:]
    configs = json.loads((tmp_path / "ptb.json").read_text())["configs"]
    assert list(configs) == ["tiny", "tiny, again"]
    assert configs["tiny, again"]["config"] == "tiny"
    result = configs["tiny"]
    dense = result["dense"]
    assert dense["sizes"] == [16, 16, 16]
    assert set(dense["latency_ms"]) == {"model", "stack", "model_step", "stack_step"}
    assert all(ms > 0 for ms in dense["latency_ms"].values())
    (row,) = result["budgets"]
    gated, magnitude = row["gated"], row["magnitude"]
    assert gated["sizes"] == magnitude["sizes"]
    assert gated["lstm_params"] <= dense["lstm_params"]
    assert max(gated["max_diff_keras_tflite"].values()) < 1e-4
    assert "--model retrain" in row["gated_retrained"]["command"]
    assert "--model magnitude" in magnitude["command"]
    assert gated["from_dense"] is False
    assert "--model gated" in gated["command"]
    assert "input-gates" not in gated["command"]
    text = page.read_text()
    assert text.startswith("intro\n<!-- results:begin -->\n### tiny")
    assert text.endswith("<!-- results:end -->\ntail\n")
    assert "old" not in text
    assert "\n### tiny, again (16/16/16)\n" in text
    assert f"Runs: `{runs}`." in text
    assert (tmp_path / "ptb.png").stat().st_size > 10000
    budget_control = json.loads((tmp_path / "ptb.json").read_text())["budget_control"]
    # Twice from the two study tables, once more as a budget-only run.
    assert [entry["budget"] for entry in budget_control] == [row["budget"]] * 3
    assert [("sizes" in entry) for entry in budget_control] == [False, False, True]
    assert budget_control[2]["sizes"] == gated["sizes"]
    assert budget_control[2]["reached"] == pytest.approx(gated["budget_reached"])
    assert "| tiny | from scratch | " in text
    assert "# budget control only\n" in text


def test_report_without_runs_is_a_usage_error(tmp_path):
    result = _run(
        [os.path.join(EXAMPLES, "ptb_report.py"), "--runs", str(tmp_path / "x")],
        tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"ptb_report.py: error: no run folder {str(tmp_path / 'x')!r}"
    ]
