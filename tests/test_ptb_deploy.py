import json
import math
import os
import sys

import numpy as np
import pytest

STUDY_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "benchmarks",
    "ptb",
)
sys.path.insert(0, STUDY_DIR)

import ptb_deploy  # noqa: E402
import ptb_lm  # noqa: E402
from ptb_helpers import requires_data  # noqa: E402

pytest.importorskip("ai_edge_litert")

VOCABULARY = 10_000
ROW_KEYS = {
    "model",
    "quantization",
    "bytes",
    "test_perplexity",
    "ms_per_token",
    "tokens",
    "keras_test_perplexity",
    "perplexity_change",
    "check",
}


def _tiny_model(path):
    model = ptb_lm.build_model(VOCABULARY, 6, [5, 4], init_scale=0.5, seed=3)
    model.save(path)
    return model


@requires_data
def test_four_files_rows_and_float32_perplexity(tmp_path, capsys):
    model_path = str(tmp_path / "tiny.keras")
    _tiny_model(model_path)
    out = tmp_path / "deploy"
    argv = [
        "--model", f"tiny={model_path}", "--out", str(out),
        "--max-tokens", "30", "--calibration-windows", "2",
        "--num-steps", "7", "--timing-runs", "5", "--timing-warmup", "1",
    ]  # fmt: skip
    assert ptb_deploy.main(argv) == 0
    rows = json.loads((out / "deployment.json").read_text())
    assert [row["quantization"] for row in rows] == [
        "float32", "dynamic", "float16", "int8",
    ]  # fmt: skip
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["model"] == "tiny" and row["tokens"] == 30
        assert os.path.getsize(row["path"]) == row["bytes"] > 0
        assert row["ms_per_token"] > 0 and math.isfinite(row["test_perplexity"])
    float32 = rows[0]
    assert float32["test_perplexity"] == pytest.approx(
        float32["keras_test_perplexity"], rel=1e-3
    )
    assert float32["check"].startswith("passed")
    assert all(isinstance(row["check"], dict) for row in rows[1:])
    # int8 and float16 weights make smaller files. (Not asserted for the
    # full int8 file: at these tiny sizes its per-op constant copies and
    # quantization parameters outweigh the saving.)
    assert rows[1]["bytes"] < rows[0]["bytes"] and rows[2]["bytes"] < rows[0]["bytes"]
    table = capsys.readouterr().out
    assert "| tiny | int8 |" in table


@requires_data
def test_keras_reference_is_the_carried_state_perplexity(tmp_path):
    """The Keras reference equals ptb_lm.perplexities at batch 1 where the
    text is a whole number of windows."""
    from keras_l0.datasets import ptb

    model = _tiny_model(str(tmp_path / "m.keras"))
    ids = np.asarray(ptb.load().test[: 4 * 7 + 1])
    total, tokens = ptb_deploy.keras_stream_nll(model, ids, 7)
    expected = ptb_lm.perplexities(model, {"t": ids}, 1, 7)["t"]
    assert tokens == 28
    assert math.exp(total / tokens) == pytest.approx(expected, rel=1e-5)


def test_bad_input_is_one_error_line(tmp_path, capsys):
    bad_file = tmp_path / "bad.keras"
    bad_file.write_text("not a model")
    cases = [
        [],
        ["--model", "nopath"],
        ["--model", f"x={tmp_path / 'absent.keras'}"],
        ["--model", f"x={bad_file}", "--model", f"x={bad_file}"],
        ["--model", f"x={bad_file}", "--quantizations", "float32,int4"],
        ["--model", f"x={bad_file}", "--max-tokens", "0"],
        ["--model", f"x={bad_file}"],
    ]
    for argv in cases:
        assert ptb_deploy.main(argv + ["--out", str(tmp_path / "o")]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err, (argv, err)
    assert not os.path.exists(tmp_path / "o")
