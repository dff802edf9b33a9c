import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_l0.datasets import ptb
from keras_l0.structure import block_columns

STUDY_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "benchmarks",
    "ptb",
)
sys.path.insert(0, STUDY_DIR)

import ptb_language_model  # noqa: E402
import ptb_lm  # noqa: E402
import ptb_shrink  # noqa: E402
from ptb_helpers import requires_data  # noqa: E402

VOCABULARY = 30
TINY = ["--config", "tiny", "--max-steps", "6"]


def _tiny_model(gated=False, dropout=0.0, units=(5, 4), seed=1):
    return ptb_lm.build_model(
        VOCABULARY,
        6,
        list(units),
        dropout=dropout,
        init_scale=0.5,
        gated=gated,
        seed=seed,
    )


def _set_gates(model, seed=0):
    """Closes, opens and half-opens gates: log_alpha in {-9, 0.5, 9}."""
    rng = np.random.default_rng(seed)
    for layer in filter(ptb_lm.is_gated, model.layers):
        cell = layer.cell
        for log_alpha in (cell.input_log_alpha, cell.hidden_log_alpha):
            if log_alpha is not None:
                values = rng.choice([-9.0, 0.5, 9.0], log_alpha.shape)
                values[0] = 0.5
                log_alpha.assign(values.astype("float32"))


@pytest.mark.parametrize("gated", [False, True])
def test_carried_state_continues_the_sequence(gated):
    model = _tiny_model(gated=gated, dropout=0.3)
    if gated:
        _set_gates(model)
    tokens = np.random.default_rng(0).integers(0, VOCABULARY, (3, 12))
    full = np.asarray(model(tokens, training=False))
    carried = ptb_lm.CarriedStateModel(model, batch_size=3)
    pieces = [
        np.asarray(carried(tokens[:, i : i + 4], training=False))
        for i in (0, 4, 8)
    ]
    np.testing.assert_allclose(np.concatenate(pieces, 1), full, atol=1e-5)
    carried.reset_carry()
    np.testing.assert_allclose(
        np.asarray(carried(tokens[:, 4:8], training=False)),
        np.asarray(model(tokens[:, 4:8], training=False)),
        atol=1e-5,
    )


def _log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_perplexity_is_exp_mean_token_nll():
    model = _tiny_model(dropout=0.5)
    ids = np.random.default_rng(1).integers(0, VOCABULARY, 130)
    # 2 streams of 65 tokens: (65 - 1) // 8 = 8 windows, 64 targets each.
    rows = ptb.streams(ids, 2)
    log_p = _log_softmax(np.asarray(model(rows[:, :64], training=False)))
    targets = rows[:, 1:65]
    nll = -np.take_along_axis(log_p, targets[..., None], -1).mean()
    assert ptb_lm.perplexities(model, {"a": ids}, 2, 8)["a"] == pytest.approx(
        math.exp(nll), rel=1e-5
    )
    first = -np.take_along_axis(
        log_p[:, :16], targets[:, :16, None], -1
    ).mean()
    both = ptb_lm.perplexities(model, {"a": ids, "b": ids}, 2, 8, max_windows=2)
    assert both["a"] == both["b"] == pytest.approx(math.exp(first), rel=1e-5)


def test_fit_carries_state_across_batches_and_resets():
    model = _tiny_model()
    ids = np.random.default_rng(2).integers(0, VOCABULARY, 2 * 17)
    carried = ptb_lm.CarriedStateModel(model, batch_size=2)
    ptb_lm.compile_model(carried, lr=0.0, num_steps=4)
    dataset = ptb_lm.WindowDataset(ids, 2, 4, max_windows=3)
    carried.fit(
        dataset,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[ptb_lm.ResetCarry()],
    )
    # After the second epoch's 3 windows the state is that of 12 tokens
    # read from zero, so window 3 continues the full sequence.
    rows = ptb.streams(ids, 2)
    full = np.asarray(model(rows[:, :16], training=False))
    np.testing.assert_allclose(
        np.asarray(carried(rows[:, 12:16], training=False)),
        full[:, 12:16],
        atol=1e-5,
    )
    carried(rows[:, :4], training=False)
    logs = carried.evaluate(
        dataset, verbose=0, return_dict=True, callbacks=[ptb_lm.ResetCarry()]
    )
    expected = ptb_lm.perplexities(model, {"a": ids}, 2, 4, max_windows=3)["a"]
    assert math.exp(logs["nll"]) == pytest.approx(expected, rel=1e-5)


def _gated_model_and_output():
    """A tiny gated model with closed, open and half-open gates, tokens and
    its inference output on them."""
    model = _tiny_model(gated=True)
    _set_gates(model)
    tokens = np.random.default_rng(3).integers(0, VOCABULARY, (2, 7))
    return model, tokens, np.asarray(model(tokens, training=False))


def test_freeze_gates_keeps_the_inference_output():
    model, tokens, before = _gated_model_and_output()
    layers = ptb_lm.chain_layers(model)
    ptb_lm.freeze_gates(layers)
    np.testing.assert_allclose(
        np.asarray(model(tokens, training=False)), before, atol=1e-5
    )
    for _ in range(3):
        np.testing.assert_allclose(
            np.asarray(model(tokens, training=True)), before, atol=1e-5
        )
    trainable = {v.path for v in model.trainable_variables}
    assert not any("log_alpha" in path for path in trainable)
    assert any("kernel" in path for path in trainable)
    weights = [np.array(w) for w in model.get_weights()]
    ptb_lm.freeze_gates(layers)
    for old, new in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_freeze_gates_with_noise_keeps_open_gates_sampled():
    model, tokens, before = _gated_model_and_output()
    layers = ptb_lm.chain_layers(model)
    cells = [layer.cell for layer in layers if ptb_lm.is_gated(layer)]
    open_before = [
        np.array(cell.gates(training=False)[1]) > 0 for cell in cells
    ]
    ptb_lm.freeze_gates(layers, noise=True)
    np.testing.assert_allclose(
        np.asarray(model(tokens, training=False)), before, atol=1e-6
    )
    samples = [np.asarray(model(tokens, training=True)) for _ in range(3)]
    assert not np.allclose(samples[0], samples[1])
    for cell, was_open in zip(cells, open_before):
        hidden = np.array(cell.hidden_log_alpha.value)
        np.testing.assert_array_equal(hidden[~was_open], -20.0)
        assert np.all(hidden[was_open] <= 9.0)
        assert np.any(hidden[was_open] == 0.5)
        for _ in range(3):
            z = np.array(cell.gates(training=True)[1])
            assert np.all(z[~was_open] == 0)
    trainable = {v.path for v in model.trainable_variables}
    assert not any("log_alpha" in path for path in trainable)


def test_neuron_norms_count_every_removed_weight_once():
    model = _tiny_model()
    layers = [layer for layer in ptb_lm.chain_layers(model) if layer.weights]
    norms = ptb_lm.neuron_norms(model)
    assert [len(n) for n in norms] == [6, 5, 4]
    total = sum(float(np.sum(np.square(w))) for w in model.get_weights())
    lstm, consumer = layers[1], layers[2]
    for unit in range(5):
        weights = {w.path: np.array(w) for w in model.weights}
        kernel, recurrent, bias = (
            lstm.cell.kernel.path,
            lstm.cell.recurrent_kernel.path,
            lstm.cell.bias.path,
        )
        columns = block_columns(5, 4, [unit])
        weights[kernel][:, columns] = 0
        weights[recurrent][:, columns] = 0
        weights[recurrent][unit, :] = 0
        weights[bias][columns] = 0
        weights[consumer.cell.kernel.path][unit, :] = 0
        left = sum(float(np.sum(np.square(w))) for w in weights.values())
        assert norms[1][unit] ** 2 == pytest.approx(total - left, rel=1e-4)


def test_magnitude_prune_keeps_the_largest_neurons():
    model = _tiny_model(dropout=0.2)
    lstm = [layer for layer in model.layers if ptb_lm.is_recurrent(layer)][0]
    cell = lstm.cell
    big = [1, 3]
    kernel = np.array(cell.kernel)
    kernel[:, block_columns(5, 4, big)] *= 20
    cell.kernel.assign(kernel)
    slim, kept = ptb_lm.magnitude_prune(model, [4, 2, 3])
    assert kept[1].tolist() == big
    assert [len(k) for k in kept] == [4, 2, 3]
    slim_lstms = list(filter(ptb_lm.is_recurrent, ptb_lm.chain_layers(slim)))
    assert [layer.cell.units for layer in slim_lstms] == [2, 3]
    assert all(type(layer) is keras.layers.LSTM for layer in slim_lstms)

    # The original with the dropped neurons cut off computes the same.
    cut = keras.models.clone_model(model)
    cut.set_weights(model.get_weights())
    layers = [layer for layer in ptb_lm.chain_layers(cut) if layer.weights]
    for group, (producer, consumer) in enumerate(zip(layers, layers[1:])):
        dropped = np.setdiff1d(np.arange([6, 5, 4][group]), kept[group])
        reader = consumer.cell if ptb_lm.is_recurrent(consumer) else consumer
        reader_kernel = np.array(reader.kernel)
        reader_kernel[dropped] = 0
        reader.kernel.assign(reader_kernel)
        if ptb_lm.is_recurrent(producer):
            recurrent = np.array(producer.cell.recurrent_kernel)
            recurrent[dropped] = 0
            producer.cell.recurrent_kernel.assign(recurrent)
    tokens = np.random.default_rng(4).integers(0, VOCABULARY, (2, 9))
    np.testing.assert_allclose(
        np.asarray(slim(tokens, training=False)),
        np.asarray(cut(tokens, training=False)),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="Kept sizes"):
        ptb_lm.magnitude_prune(model, [4, 6, 3])
    with pytest.raises(ValueError, match="needs 3 sizes"):
        ptb_lm.magnitude_prune(model, [4, 2])


def test_gate_dense_model_gates_like_build_model():
    model = _tiny_model(dropout=0.2)
    gated = ptb_lm.gate_dense_model(model, l0_penalty=1e-4)
    built = _tiny_model(gated=True, dropout=0.2)
    assert [type(layer) for layer in gated.layers] == [
        type(layer) for layer in built.layers
    ]
    for new, reference in zip(gated.layers, built.layers):
        if ptb_lm.is_gated(new):
            assert new.cell.input_gates == reference.cell.input_gates
            assert new.cell.hidden_gates == reference.cell.hidden_gates
            assert new.get_config()["l0_penalty"] == 1e-4
    with pytest.raises(ValueError, match="plain Embedding -> LSTM"):
        ptb_lm.gate_dense_model(built)

    hidden_only = ptb_lm.gate_dense_model(model, input_gates=False)
    built = ptb_lm.build_model(
        VOCABULARY, 6, [5, 4], gated=True, input_gates=False
    )
    for gated in (hidden_only, built):
        cells = [layer.cell for layer in gated.layers if ptb_lm.is_gated(layer)]
        assert len(cells) == 2
        assert all(c.hidden_gates and not c.input_gates for c in cells)


def test_missing_data_is_one_error_line(tmp_path, capsys):
    status = ptb_language_model.main(
        ["--data-dir", str(tmp_path / "absent"), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "does not exist" in err
    assert not os.path.exists(tmp_path / "o")


def test_no_data_folder_names_the_flag_and_variable(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("KERAS_L0_PTB_DIR", raising=False)
    status = ptb_language_model.main(["--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert "--data-dir" in err and "KERAS_L0_PTB_DIR" in err
    assert not os.path.exists(tmp_path / "o")


def test_usage_errors(tmp_path, capsys):
    for argv, message in (
        (["--model", "gated"], "needs --l0-penalty >= 0"),
        (["--model", "dense", "--l0-penalty", "1e-5"], "need --model gated"),
        (["--model", "magnitude"], "needs --dense-model and --keep"),
        (["--keep", "1,x"], "comma-separated"),
    ):
        assert ptb_language_model.main(argv + ["--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def _results(folder):
    with open(os.path.join(folder, "results.json")) as f:
        return json.load(f)


def _epoch_lines(text):
    return [line for line in text.splitlines() if " epoch " in line]


class _Interrupted(Exception):
    pass


@requires_data
def test_dense_run_resumes_then_magnitude_prunes_it(
    tmp_path, capsys, monkeypatch
):
    dense = str(tmp_path / "dense")
    argv = TINY + ["--out", dense]
    on_epoch_end = ptb_language_model.EpochEnd.on_epoch_end

    def interrupt_after_first(self, epoch, logs=None):
        on_epoch_end(self, epoch, logs)
        raise _Interrupted()

    with monkeypatch.context() as patch:
        patch.setattr(
            ptb_language_model.EpochEnd, "on_epoch_end", interrupt_after_first
        )
        with pytest.raises(_Interrupted):
            ptb_language_model.main(argv)
    lines = _epoch_lines(capsys.readouterr().out)
    assert len(lines) == 1 and lines[0].startswith("train epoch 1/2  lr 1  ")
    assert "val ppl" in lines[0] and "units 16/16, 16/16" in lines[0]
    assert not os.path.exists(os.path.join(dense, "results.json"))

    assert ptb_language_model.main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert ptb_language_model.main(argv + ["--resume", "--seed", "3"]) == 2
    assert "--seed (was 0)" in capsys.readouterr().err

    assert ptb_language_model.main(argv + ["--resume"]) == 0
    lines = _epoch_lines(capsys.readouterr().out)
    assert len(lines) == 1 and lines[0].startswith("train epoch 2/2  lr 0.5  ")
    results = _results(dense)
    assert results["max_windows"] == 6
    assert [entry["epoch"] for entry in results["history"]] == [1, 2]
    assert [entry["lr"] for entry in results["history"]] == [1.0, 0.5]
    for split in ("valid", "test"):
        assert 1 < results[f"{split}_perplexity"] < 1e5
    checkpoints = [f for f in os.listdir(dense) if f.startswith("checkpoint")]
    assert checkpoints == ["checkpoint-0-002.keras"]
    model = keras.models.load_model(os.path.join(dense, "model.keras"))
    assert model.count_params() == results["params"]

    magnitude = str(tmp_path / "magnitude")
    argv = TINY + [
        "--model", "magnitude", "--dense-model",
        os.path.join(dense, "model.keras"), "--keep", "8,10,6",
        "--finetune-epochs", "1", "--out", magnitude,
    ]  # fmt: skip
    assert ptb_language_model.main(argv) == 0
    lines = _epoch_lines(capsys.readouterr().out)
    assert len(lines) == 1 and "finetune epoch 1/1" in lines[0]
    assert "units 10/10, 6/6" in lines[0]
    assert _results(magnitude)["neurons"][0]["inputs"] == 8

    # Gates on the trained dense model: all open, nothing trained, it is
    # the dense model.
    gated = str(tmp_path / "gated")
    argv = TINY + [
        "--model", "gated", "--dense-model",
        os.path.join(dense, "model.keras"), "--l0-penalty", "1e-5",
        "--initial-keep-probability", "0.999", "--epochs", "0",
        "--out", gated,
    ]  # fmt: skip
    assert ptb_language_model.main(argv) == 0
    capsys.readouterr()
    for split in ("valid", "test"):
        assert _results(gated)[f"{split}_perplexity"] == pytest.approx(
            results[f"{split}_perplexity"], rel=1e-5
        )
    model = keras.models.load_model(os.path.join(gated, "model.keras"))
    lstms = [layer for layer in model.layers if ptb_lm.is_recurrent(layer)]
    assert all(map(ptb_lm.is_gated, lstms))
    assert lstms[0].cell.input_gates and not lstms[1].cell.input_gates


@requires_data
def test_gated_run_on_jax_without_tensorflow_then_shrink(tmp_path, capsys):
    out = str(tmp_path / "gated")
    code = (
        "import sys; sys.modules['tensorflow'] = None; "
        f"sys.path.insert(0, {STUDY_DIR!r}); "
        "import ptb_language_model as m; "
        "status = m.main(sys.argv[1:]); "
        "assert not any(n.startswith('tensorflow') and sys.modules[n] "
        "for n in sys.modules), 'tensorflow was imported'; "
        "sys.exit(status)"
    )
    argv = TINY[:2] + [
        "--max-steps", "3", "--epochs", "1", "--model", "gated",
        "--l0-penalty", "1e-5", "--initial-keep-probability", "0.6",
        "--finetune-epochs", "1", "--out", out,
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", code, *argv],
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = _epoch_lines(result.stdout)
    assert len(lines) == 2 and lines[1].startswith("finetune epoch 1/1")
    assert "λ 1e-05, 1e-05" in lines[0]
    results = _results(out)

    # The separate shrink step, here on this process's backend.
    status = ptb_shrink.main(
        [os.path.join(out, "model.keras"), "--config", "tiny",
         "--max-steps", "3"]
    )  # fmt: skip
    assert status == 0
    with open(os.path.join(out, "shrink.json")) as f:
        report = json.load(f)
    assert report["max_logit_difference"] < 1e-4
    for split in ("valid", "test"):
        for name in ("gated", "slim"):
            assert report[name][f"{split}_perplexity"] == pytest.approx(
                results[f"{split}_perplexity"], rel=1e-4
            )
    slim = keras.models.load_model(os.path.join(out, "slim.keras"))
    assert not any(ptb_lm.is_gated(layer) for layer in slim.layers)


def test_small_is_unrolled_for_35_steps():
    for name in ("small", "medium", "large"):
        assert ptb_lm.CONFIGS[name].num_steps == 35
        assert ptb_lm.CONFIGS[name].batch_size == 20


def test_new_usage_errors(tmp_path, capsys):
    model_file = tmp_path / "slim.keras"
    model_file.write_bytes(b"")
    existing, absent = str(model_file), str(tmp_path / "absent.keras")
    gated = ["--model", "gated", "--l0-penalty", "0"]
    for argv, message in (
        (["--budget-epochs", "3"], "need --budget"),
        (["--budget-start", "2"], "need --budget"),
        (gated + ["--budget-epochs", "3"], "need --budget"),
        (gated + ["--budget-start", "1"], "need --budget"),
        (gated + ["--budget-horizon", "0"], "need --budget"),
        (gated + ["--budget-rise-gain", "0.2"], "need --budget"),
        (gated + ["--budget-control", "lambda"], "need --budget"),
        (gated + ["--budget", "0.3", "--budget-rise-gain", "0"], "must be > 0"),
        (gated + ["--budget", "0.5", "--budget-epochs", "0"], "must be >= 1"),
        (gated + ["--budget", "0.5", "--budget-start", "-1"], "must be >= 0"),
        (["--finetune-decay", "0"], "(0, 1]"),
        (["--finetune-decay", "-0.5"], "(0, 1]"),
        (["--finetune-decay", "1.01"], "(0, 1]"),
        (["--finetune-decay", "nan"], "(0, 1]"),
        (["--finetune-decay", "x"], "invalid float"),
        (["--model", "retrain"], "needs --from and --finetune-epochs"),
        (
            ["--model", "retrain", "--from", existing],
            "needs --from and --finetune-epochs",
        ),
        (
            ["--model", "retrain", "--finetune-epochs", "1"],
            "needs --from and --finetune-epochs",
        ),
        (
            ["--model", "retrain", "--from", absent, "--finetune-epochs", "1"],
            f"no such file: --from {absent}",
        ),
        (["--from", existing], "--from needs --model retrain"),
        (["--dense-model", existing], "--dense-model needs --model magnitude"),
        (
            ["--model", "retrain", "--from", existing, "--finetune-epochs",
             "1", "--dense-model", existing],
            "--dense-model needs --model magnitude or gated",
        ),
        (gated + ["--dense-model", absent], "no such file: --dense-model"),
        (gated + ["--keep", "2,2,2"], "--keep needs --model magnitude"),
        (["--no-input-gates"], "--no-input-gates needs --model gated"),
        (
            gated + ["--budget-open-log-alpha", "2.2"],
            "--budget-open-log-alpha needs --budget",
        ),
        (
            gated + ["--budget", "0.3", "--budget-control", "lambda",
                     "--budget-open-log-alpha", "2.2"],
            "--budget-open-log-alpha needs --budget, shift control",
        ),
        (
            gated + ["--budget", "0.3", "--budget-open-log-alpha", "0"],
            "--budget-open-log-alpha must be > 0",
        ),
        (
            gated + ["--finetune-gate-noise"],
            "--finetune-gate-noise needs --model gated, --finetune-epochs",
        ),
        (
            ["--finetune-gate-noise"],
            "--finetune-gate-noise needs --model gated, --finetune-epochs",
        ),
        (gated + ["--from", existing], "--from needs --model retrain"),
        (gated + ["--lr", "0"], "--lr must be > 0"),
        (["--lr", "-1"], "--lr must be > 0"),
        (
            ["--model", "magnitude", "--dense-model", existing, "--keep",
             "2,2,2", "--lr", "0.5"],
            "magnitude and retrain take --finetune-lr",
        ),
        (
            ["--model", "magnitude", "--dense-model", existing, "--keep",
             "2,2,2", "--from", existing],
            "--from needs --model retrain",
        ),
    ):  # fmt: skip
        # A data folder that does not exist: should the check be missing,
        # the run stops there at once, with another message.
        out = tmp_path / "out"
        argv = argv + ["--out", str(out), "--data-dir", absent]
        assert ptb_language_model.main(argv) == 2, argv
        captured = capsys.readouterr()
        assert message in captured.err, (argv, captured.err)
        assert captured.err.count("\n") == 1, captured.err
        assert captured.err.startswith("ptb_language_model.py: error: ")
        assert not os.path.exists(out)


def _args(argv):
    args = ptb_language_model.build_parser().parse_args(argv)
    ptb_language_model.check_args(args)
    return args


def _learning_rates(plan):
    return [
        (name, [learning_rate(epoch) for epoch in range(epochs)])
        for name, epochs, learning_rate in plan
    ]


def test_phases_decay_the_finetune_learning_rate():
    config = ptb_lm.CONFIGS["small"]
    gated = ["--model", "gated", "--l0-penalty", "0", "--epochs", "5"]
    plan = ptb_language_model.phases(
        _args(gated + ["--finetune-epochs", "4", "--finetune-lr", "0.8",
                       "--finetune-decay", "0.5"]),
        config,
    )  # fmt: skip
    assert _learning_rates(plan) == [
        ("train", [1.0, 1.0, 1.0, 1.0, 0.5]),
        ("finetune", [0.8, 0.4, 0.2, 0.1]),
    ]
    # Default: the config's last learning rate, constant.
    last = config.learning_rate(config.epochs - 1)
    assert last == 0.5**9
    plan = ptb_language_model.phases(
        _args(gated + ["--finetune-epochs", "3"]), config
    )
    assert _learning_rates(plan)[1] == ("finetune", [last] * 3)
    plan = ptb_language_model.phases(
        _args(gated + ["--finetune-epochs", "3", "--finetune-decay", "0.1"]),
        config,
    )
    assert _learning_rates(plan)[1][1] == pytest.approx(
        [last, last / 10, last / 100]
    )
    plan = ptb_language_model.phases(
        _args(gated + ["--finetune-epochs", "5", "--finetune-lr", "1",
                       "--finetune-decay", "0.5", "--finetune-hold", "2"]),
        config,
    )  # fmt: skip
    assert _learning_rates(plan)[1] == ("finetune", [1, 1, 1, 0.5, 0.25])

    # --lr: a constant rate for the training epochs.
    plan = ptb_language_model.phases(
        _args(gated + ["--lr", "0.25", "--finetune-epochs", "2",
                       "--finetune-lr", "0.25", "--finetune-decay", "0.5"]),
        config,
    )  # fmt: skip
    assert _learning_rates(plan) == [
        ("train", [0.25] * 5),
        ("finetune", [0.25, 0.125]),
    ]

    # Retrain and magnitude only fine-tune.
    args = ptb_language_model.build_parser().parse_args(
        ["--model", "retrain", "--from", "slim.keras", "--finetune-epochs",
         "3", "--finetune-lr", "1", "--finetune-decay", "0.25", "--epochs",
         "7"]
    )  # fmt: skip
    assert _learning_rates(ptb_language_model.phases(args, config)) == [
        ("finetune", [1.0, 0.25, 0.0625])
    ]
    args.model = "magnitude"
    assert _learning_rates(ptb_language_model.phases(args, config)) == [
        ("finetune", [1.0, 0.25, 0.0625])
    ]
    # A dense run has no fine-tuning phase.
    plan = ptb_language_model.phases(_args(["--finetune-decay", "0.5"]), config)
    assert [(name, epochs) for name, epochs, _ in plan] == [("train", 13)]


def test_budget_schedule_flags_reach_the_controller():
    from keras_l0.callbacks import BudgetController

    gated = ["--model", "gated", "--l0-penalty", "1e-7", "--budget", "0.3"]
    (controller,) = ptb_language_model.l0_callbacks(
        _args(gated + ["--budget-epochs", "5", "--budget-start", "2",
                       "--budget-metric", "neurons"]),
        None,
    )  # fmt: skip
    assert isinstance(controller, BudgetController)
    assert controller.target == 0.3 and controller.metric == "neurons"
    assert (controller.warmup_epochs, controller.start_epoch) == (5, 2)
    (controller,) = ptb_language_model.l0_callbacks(_args(gated), None)
    assert (controller.warmup_epochs, controller.start_epoch) == (None, 0)
    assert controller.horizon == BudgetController(0.3).horizon
    (controller,) = ptb_language_model.l0_callbacks(
        _args(gated + ["--budget-horizon", "0"]), None
    )
    assert controller.horizon == 0
    assert controller.rise_gain == BudgetController.rise_gain
    (controller,) = ptb_language_model.l0_callbacks(
        _args(gated + ["--budget-rise-gain", "0.25"]), None
    )
    assert controller.rise_gain == 0.25
    assert controller.control == "shift"
    (controller,) = ptb_language_model.l0_callbacks(
        _args(gated + ["--budget-control", "lambda"]), None
    )
    assert controller.control == "lambda"


@requires_data
def test_retrain_fine_tunes_the_shrunk_model(tmp_path, capsys):
    gated = str(tmp_path / "gated")
    argv = TINY[:2] + [
        "--max-steps", "3", "--epochs", "1", "--model", "gated",
        "--l0-penalty", "0", "--out", gated,
    ]  # fmt: skip
    assert ptb_language_model.main(argv) == 0
    # Close some gates (and half-open others) so that shrinking removes
    # neurons.
    path = os.path.join(gated, "model.keras")
    model = keras.models.load_model(path, compile=False)
    _set_gates(model, seed=5)
    model.save(path)
    counts = ptb_lm.gate_counts(ptb_lm.chain_layers(model))
    # The slim sizes: the second LSTM reads only the first one's kept units.
    units = [c["units_active"] for c in counts]
    sizes = list(zip([counts[0]["inputs_active"]] + units[:-1], units))
    assert all(0 < size < 16 for pair in sizes for size in pair), sizes
    assert ptb_shrink.main([path, "--config", "tiny", "--max-steps", "3"]) == 0
    with open(os.path.join(gated, "shrink.json")) as f:
        report = json.load(f)
    slim_path = os.path.join(gated, "slim.keras")
    slim = keras.models.load_model(slim_path, compile=False)
    capsys.readouterr()

    retrain = str(tmp_path / "retrain")
    argv = TINY[:2] + [
        "--max-steps", "3", "--model", "retrain", "--from", slim_path,
        "--finetune-epochs", "2", "--finetune-lr", "0.5",
        "--finetune-decay", "0.5", "--dropout", "0.05", "--out", retrain,
    ]  # fmt: skip
    assert ptb_language_model.main(argv) == 0
    lines = _epoch_lines(capsys.readouterr().out)
    assert len(lines) == 2, lines
    assert lines[0].startswith("finetune epoch 1/2  lr 0.5  ")
    assert lines[1].startswith("finetune epoch 2/2  lr 0.25  ")
    results = _results(retrain)
    assert results["model"] == "retrain"
    assert [e["lr"] for e in results["history"]] == [0.5, 0.25]
    assert {e["phase"] for e in results["history"]} == {"finetune"}
    assert results["neurons"] == report["slim"]["neurons"]
    assert [(e["inputs"], e["units"]) for e in results["neurons"]] == sizes
    assert all(
        (e["inputs_active"], e["units_active"]) == (e["inputs"], e["units"])
        for e in results["neurons"]
    )
    assert results["params"] == report["slim"]["params"]
    retrained = keras.models.load_model(
        os.path.join(retrain, "model.keras"), compile=False
    )
    assert not any(ptb_lm.is_gated(layer) for layer in retrained.layers)
    rates = [
        layer.rate
        for layer in retrained.layers
        if isinstance(layer, keras.layers.Dropout)
    ]
    assert rates == [0.05] * 3
    assert {
        layer.rate
        for layer in slim.layers
        if isinstance(layer, keras.layers.Dropout)
    } == {ptb_lm.CONFIGS["tiny"].dropout}
    assert retrained.count_params() == slim.count_params()
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(retrained.get_weights(), slim.get_weights())
    )
    # The --from model is not modified.
    reloaded = keras.models.load_model(slim_path, compile=False)
    for a, b in zip(reloaded.get_weights(), slim.get_weights()):
        np.testing.assert_array_equal(a, b)


@requires_data
def test_retrain_rejects_a_model_that_is_not_a_chain(tmp_path, capsys):
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(10000, 4)(tokens)
    x = keras.layers.Add()([x, keras.layers.Dense(4)(x)])
    path = str(tmp_path / "branchy.keras")
    keras.Model(tokens, keras.layers.Dense(10000)(x)).save(path)
    argv = TINY + [
        "--model", "retrain", "--from", path, "--finetune-epochs", "1",
        "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    assert ptb_language_model.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--from {path}: " in err
    assert "not a chain" in err


def test_set_dropout_changes_every_dropout_layer():
    model = _tiny_model(dropout=0.3)
    assert ptb_lm.set_dropout(model, 0.1) == 3
    dropouts = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.Dropout)
    ]
    assert [layer.rate for layer in dropouts] == [0.1] * 3
    assert [layer.get_config()["rate"] for layer in dropouts] == [0.1] * 3
    assert ptb_lm.set_dropout(_tiny_model(), 0.1) == 0


@requires_data
def test_dropout_usage_errors(tmp_path, capsys):
    path = str(tmp_path / "plain.keras")
    _tiny_model().save(path)
    for extra, message in (
        (["--model", "dense", "--dropout", "1"], "--dropout must lie in [0, 1)"),
        (
            ["--model", "retrain", "--from", path, "--finetune-epochs", "1",
             "--dropout", "0.2"],
            "--dropout: the loaded model has no Dropout layer to change",
        ),
    ):  # fmt: skip
        out = str(tmp_path / "out")
        assert ptb_language_model.main(TINY + extra + ["--out", out]) == 2
        err = capsys.readouterr().err
        assert err == f"ptb_language_model.py: error: {message}\n"
        assert not os.path.exists(out)


def test_sizes_and_a_shorter_schedule(tmp_path, capsys):
    args = _args(["--config", "large", "--sizes", "1500,373,315", "--epochs",
                  "40", "--decay-after", "12", "--lr-decay", "0.82"])  # fmt: skip
    config = ptb_language_model.run_config(args)
    assert (config.decay_after, config.lr_decay) == (12, 0.82)
    ((name, rates),) = _learning_rates(ptb_language_model.phases(args, config))
    assert name == "train" and len(rates) == 40
    assert rates[:12] == [1.0] * 12
    assert rates[12] == pytest.approx(0.82) and rates[-1] == pytest.approx(0.82**28)
    # The config's schedule unless changed.
    assert ptb_language_model.run_config(_args([])) == ptb_lm.CONFIGS["small"]
    model = ptb_language_model.initial_model(
        _args(["--config", "tiny", "--sizes", "7,5,3"]),
        ptb_lm.CONFIGS["tiny"],
        type("Data", (), {"vocabulary": list(range(VOCABULARY))})(),
    )
    lstms = [l for l in ptb_lm.chain_layers(model) if ptb_lm.is_recurrent(l)]
    assert [l.cell.kernel.shape[0] for l in lstms] == [7, 5]
    assert [l.cell.units for l in lstms] == [5, 3]
    absent = str(tmp_path / "absent")
    existing = tmp_path / "dense.keras"
    existing.write_bytes(b"")
    for argv, message in (
        (["--sizes", "7,5"], "three sizes"),
        (["--sizes", "7,0,3"], "three sizes"),
        (["--model", "magnitude", "--dense-model", str(existing), "--keep",
          "2,2,2", "--sizes", "2,2,2"], "--sizes needs --model dense or gated"),
        (["--model", "gated", "--l0-penalty", "0", "--dense-model",
          str(existing), "--sizes", "2,2,2"], "--sizes needs"),
        (["--lr-decay", "0"], "--lr-decay must lie in (0, 1]"),
        (["--lr", "0.5", "--decay-after", "3"], "without --lr"),
    ):  # fmt: skip
        argv = argv + ["--out", str(tmp_path / "out"), "--data-dir", absent]
        assert ptb_language_model.main(argv) == 2, argv
        captured = capsys.readouterr()
        assert message in captured.err, (argv, captured.err)
