"""The short PTB example a user reads (examples/ptb/ptb_example.py)."""

import os
import sys

import keras
import pytest

from ptb_helpers import requires_data

sys.path.insert(
    0,
    os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "examples",
        "ptb",
    ),
)
import ptb_example  # noqa: E402

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the example exports a .tflite file (TensorFlow backend)",
)


@requires_data
def test_the_whole_path_on_a_few_windows(tmp_path, capsys):
    out = tmp_path / "out"
    status = ptb_example.main([
        "--out", str(out), "--units", "12", "--epochs", "2",
        "--steps-per-epoch", "6", "--eval-windows", "2",
    ])
    printed = capsys.readouterr().out
    assert status == 0
    assert {p.name for p in out.iterdir()} == {
        "gated.keras", "slim.keras", "slim.tflite"
    }
    kept = printed.split("LSTM parameters kept: ")[1].split("\n")[0]
    share = float(kept.split("(")[1].split("%")[0]) / 100
    assert 0.2 <= share <= 0.4, kept
    test_line = printed.split("test perplexity")[1].split("\n")[0]
    gated, slim = (float(w.rstrip(",")) for w in test_line.split()
                   if w.rstrip(",").replace(".", "").isdigit())
    assert gated == pytest.approx(slim, rel=1e-4)
    last = printed.strip().splitlines()[-1]
    keras_ppl = float(last.split("(Keras) ")[1].split(",")[0])
    litert_ppl = float(last.split("(LiteRT) ")[1])
    assert litert_ppl == pytest.approx(keras_ppl, rel=1e-3)
    assert keras_ppl < 10_000  # it learned something in 12 steps


def test_no_data_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KERAS_L0_PTB_DIR", raising=False)
    assert ptb_example.main(["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "KERAS_L0_PTB_DIR" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", [["--budget", "1.5"], ["--epochs", "0"]])
def test_bad_flags_exit_2(tmp_path, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        ptb_example.main(["--out", str(tmp_path / "o"), *flag])
    assert exit_.value.code == 2
    assert "error" in capsys.readouterr().err
