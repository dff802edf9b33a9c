import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

STUDY_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "benchmarks",
    "ptb",
)
sys.path.insert(0, STUDY_DIR)

import ptb_language_model  # noqa: E402
import ptb_lm  # noqa: E402
import ptb_tfmot  # noqa: E402
from ptb_helpers import requires_data  # noqa: E402

pytest.importorskip("tensorflow_model_optimization")

TINY = ["--config", "tiny", "--max-steps", "4"]
RESULT_KEYS = {
    "model", "config", "eval_batch_size", "num_steps", "max_windows",
    "neurons", "params", "valid_perplexity", "test_perplexity", "history",
    "method", "lstm_params", "sparsity", "tflite_bytes", "tflite_gzip_bytes",
    "choices",
}  # fmt: skip


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dense") / "dense")
    argv = TINY + ["--epochs", "1", "--out", out]
    assert ptb_language_model.main(argv) == 0
    return os.path.join(out, "model.keras")


@requires_data
def test_prunes_to_the_target_and_copies_into_keras3(
    dense_model, tmp_path, monkeypatch
):
    out = tmp_path / "tfmot"
    keep = [10, 9, 8]
    argv = TINY + [
        "--dense-model", dense_model, "--keep", ",".join(map(str, keep)),
        "--epochs", "3", "--ramp-epochs", "2", "--out", str(out),
    ]  # fmt: skip

    # The first run stops after its first checkpoint, half-way up the ramp;
    # --resume continues from the saved weights, masks and pruning steps.
    class Stop(Exception):
        pass

    save = ptb_tfmot.Run.save_checkpoint

    def save_then_stop(self, model, state, epoch):
        save(self, model, state, epoch)
        raise Stop

    with monkeypatch.context() as patch:
        patch.setattr(ptb_tfmot.Run, "save_checkpoint", save_then_stop)
        with pytest.raises(Stop):
            ptb_tfmot.main(argv)
    assert not (out / "results.json").exists()
    assert ptb_tfmot.main(argv) == 2  # a run is there: --resume needed
    assert ptb_tfmot.main(argv + ["--resume"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert RESULT_KEYS <= set(results)
    assert results["method"] == "tfmot" and len(results["choices"]) >= 5
    dense_weights = ptb_tfmot.lstm_weight_count([16, 16, 16])
    target = 1 - ptb_tfmot.lstm_weight_count(keep) / dense_weights
    assert results["target_sparsity"] == pytest.approx(target)
    assert abs(results["sparsity"] - target) < 0.01
    history = results["history"]
    assert [e["phase"] for e in history] == ["prune", "prune", "finetune"]
    assert [e["epoch"] for e in history] == [1, 2, 3]
    assert [e["lr"] for e in history] == [0.25, 0.25, 0.25]
    # Half-way up the ramp after epoch 1, at the target from epoch 2 on
    # (the resumed run continued the pruning step).
    assert history[0]["sparsity"] < target - 0.02
    for entry in history[1:]:
        assert entry["sparsity"] == pytest.approx(results["sparsity"], abs=1e-6)
    assert results["max_abs_diff_keras3_tf_keras"] <= 1e-5
    assert results["tflite_bytes"] >= results["dense_tflite_bytes"] * 0.99
    assert results["tflite_gzip_bytes"] < results["dense_tflite_gzip_bytes"]
    # The saved Keras 3 model holds the pruned kernels.
    model = keras.models.load_model(out / "model.keras", compile=False)
    nonzero, sparsity, _ = ptb_tfmot.lstm_counts(model)
    assert nonzero == results["lstm_params"]
    assert sparsity == pytest.approx(results["sparsity"])
    # The biases are not pruned.
    for layer in filter(ptb_lm.is_recurrent, model.layers):
        assert np.all(keras.ops.convert_to_numpy(layer.cell.bias) != 0)
    assert ptb_tfmot.main(argv + ["--resume", "--epochs", "4"]) == 2


def test_bad_input_is_one_error_line(tmp_path, capsys):
    model = tmp_path / "m.keras"
    model.write_text("x")
    base = ["--config", "tiny", "--out", str(tmp_path / "o")]
    cases = [
        [],
        ["--dense-model", str(model)],
        ["--dense-model", str(model), "--keep", "1,2", "--sparsity", "0.5"],
        ["--dense-model", str(model), "--keep", "1,2"],
        ["--dense-model", str(model), "--sparsity", "1.5"],
        ["--dense-model", str(tmp_path / "absent"), "--sparsity", "0.5"],
        ["--dense-model", str(model), "--sparsity", "0.5", "--ramp-epochs", "9"],
        ["--dense-model", str(model), "--sparsity", "0.5", "--resume"],
    ]
    for argv in cases:
        assert ptb_tfmot.main(base + argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err, (argv, err)
    assert not os.path.exists(tmp_path / "o")


@requires_data
def test_unreadable_model_is_one_error_line(tmp_path, capsys):
    model = tmp_path / "m.keras"
    model.write_text("x")
    argv = ["--config", "tiny", "--dense-model", str(model), "--sparsity",
            "0.5", "--out", str(tmp_path / "o")]  # fmt: skip
    assert ptb_tfmot.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot load" in err


def test_other_backend_is_one_error_line(tmp_path):
    script = os.path.join(STUDY_DIR, "ptb_tfmot.py")
    model = tmp_path / "m.keras"
    model.write_text("x")
    result = subprocess.run(
        [sys.executable, script, "--config", "tiny", "--dense-model",
         str(model), "--sparsity", "0.5", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "error: needs KERAS_BACKEND=tensorflow" in result.stderr
    assert "Traceback" not in result.stderr
