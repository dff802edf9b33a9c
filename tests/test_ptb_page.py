"""The PTB results page (`ptb_page.py`) and the report's merge and baseline
sections (`ptb_report.py`), on hand-made study dicts: no data, no export."""

import copy
import json
import os
import sys

import pytest

STUDY_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "benchmarks",
    "ptb",
)
sys.path.insert(0, STUDY_DIR)

import ptb_page  # noqa: E402
import ptb_report  # noqa: E402

VARIANTS = ("model", "stack", "model_step", "stack_step")


def _entry(sizes, lstm_params, test, stack_ms, command, **extra):
    return dict(
        sizes=sizes,
        params=lstm_params + 1000,
        lstm_params=lstm_params,
        flops_per_step=2 * lstm_params,
        lstm_flops_per_step=lstm_params,
        tflite_bytes=4 * lstm_params,
        tflite_gzip_bytes=3 * lstm_params,
        latency_ms={v: stack_ms for v in VARIANTS},
        speedup={v: 4.0 / stack_ms for v in VARIANTS},
        flop_ratio=1.5,
        lstm_flop_ratio=2.0,
        valid_perplexity=test + 4,
        test_perplexity=test,
        command=command,
        **extra,
    )


def _study():
    dense = _entry([200, 200, 200], 641600, 112.0, 4.0, "dense-cmd")
    dense.pop("speedup")
    dense["zaremba_test_perplexity"] = 114.5
    gated = _entry([96, 84, 137], 182472, 111.0, 1.0, "gated-cmd")
    gated.update(
        gated_test_perplexity=111.0,
        max_logit_difference_gated_slim=1e-6,
        budget_reached=0.95,
        from_dense=True,
    )
    row = dict(
        budget=0.3,
        gated=gated,
        direct=_entry([96, 84, 137], 182472, 118.0, 1.0, "direct-cmd"),
        darb=_entry([200, 200, 200], 182472, 117.0, 4.0, "darb-cmd"),
        iss=_entry([96, 84, 137], 182472, 115.0, 1.0, "iss-cmd"),
    )
    return dict(
        configs={
            "small": dict(
                config="small", runs="runs/x", dense=dense, budgets=[row]
            )
        },
        budget_control=[
            dict(
                config="small",
                budget=0.3,
                lstm_params=182472,
                reached=0.95,
                from_dense=True,
                command="gated-cmd --out runs/x/small-gated-0.3",
            )
        ],
    )


def test_baseline_rows_are_one_per_method_in_the_fixed_order():
    rows = ptb_report.baseline_rows(_study())
    assert [row["method"] for row in rows] == ["direct", "iss", "darb"]
    darb = rows[2]
    assert darb["sizes"] == [200, 200, 200]
    assert darb["lstm_params"] == darb["gated_lstm_params"] == 182472
    assert darb["stack_speedup"] == pytest.approx(1.0)
    assert darb["test_perplexity"] == 117.0
    assert darb["gated_test_perplexity"] == 111.0
    assert darb["file_gzip_bytes"] == 3 * 182472
    assert set(rows[0]) >= {
        "method", "budget", "sizes", "lstm_params", "test_perplexity",
        "file_bytes", "stack_speedup", "command",
    }  # fmt: skip


def test_page_shows_every_baseline_and_the_deployment_table():
    study = _study()
    study["baselines"] = ptb_report.baseline_rows(study)
    study["deployment"] = [
        dict(
            model="dense",
            quantization=q,
            bytes=1_000_000,
            test_perplexity=112.5,
            keras_test_perplexity=112.0,
            ms_per_token=0.2,
            tokens=82430,
        )
        for q in ("float32", "dynamic", "float16", "int8")
    ]
    text = ptb_page.page_text(study)
    assert "| DARB (masked, run dense), budget 0.3 | 200 / 200 / 200 | 182,472 |" in text
    assert "| ISS (group lasso), budget 0.3 | 96 / 84 / 137 |" in text
    assert "darb-cmd" in text and "iss-cmd" in text
    assert "DARB 117.00 (182,472 non-zero LSTM weights)" in text
    assert "direct design 118.00 (96/84/137)" in text
    assert "| small | 0.3 | DARB | 200 / 200 / 200 | 182,472 | 117.00 | 111.00 |" in text
    for label in ("float32", "dynamic-range int8", "float16", "full int8"):
        assert f"| dense | {label} | 1.00 | 112.50 | 112.00 | 0.200 |" in text
    assert "\n\n\n" not in text


def test_page_without_baselines_or_deployment_has_no_empty_sections():
    text = ptb_page.page_text(_study())
    assert "Baselines at the gated" not in text
    assert "Deployment" not in text


def test_plot_draws_the_baseline_series(tmp_path):
    pytest.importorskip("matplotlib")
    path = str(tmp_path / "plot.png")
    ptb_page.plot(_study(), path)
    assert os.path.getsize(path) > 10000


def test_merge_keeps_the_previous_configurations_and_budget_runs():
    previous = _study()
    previous["configs"]["large"] = copy.deepcopy(previous["configs"]["small"])
    previous["budget_control"].append(
        dict(
            config="large",
            budget=0.04,
            lstm_params=1,
            reached=1.0,
            from_dense=False,
            command="large-cmd",
            sizes=[1, 1, 1],
        )
    )
    previous["deployment"] = [dict(model="dense")]
    study = _study()
    study["configs"]["small"]["dense"]["test_perplexity"] = 99.0
    ptb_report.merge_previous(study, json.loads(json.dumps(previous)))
    assert list(study["configs"]) == ["large", "small"]
    assert study["configs"]["small"]["dense"]["test_perplexity"] == 99.0
    # The same gated run is not listed twice; the budget-only one is kept.
    assert [e["command"] for e in study["budget_control"]] == [
        "large-cmd",
        "gated-cmd --out runs/x/small-gated-0.3",
    ]
    assert study["deployment"] == [dict(model="dense")]
    ptb_report.merge_previous(study, None)
    assert list(study["configs"]) == ["large", "small"]


def test_every_baseline_has_a_method_entry():
    assert set(ptb_page.REVIEWER_BASELINES) <= set(ptb_page.BASELINES)
    assert set(ptb_page.BASELINES) <= set(ptb_page.METHODS)
    markers = [m.marker for m in ptb_page.METHODS.values()]
    assert len(set(markers)) == len(markers)
