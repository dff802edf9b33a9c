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

import lds_dynamics  # noqa: E402
import ptb_language_model  # noqa: E402
import ptb_lds  # noqa: E402
import ptb_lm  # noqa: E402
from ptb_helpers import requires_data  # noqa: E402

VOCABULARY = 30


def _system(rng, angles, radii, channels):
    """A block-diagonal A of damped rotations and a random C."""
    order = 2 * len(angles)
    a = np.zeros((order, order))
    for k, (angle, radius) in enumerate(zip(angles, radii)):
        c, s = np.cos(angle), np.sin(angle)
        a[2 * k : 2 * k + 2, 2 * k : 2 * k + 2] = radius * np.array(
            [[c, -s], [s, c]]
        )
    return a, rng.normal(size=(channels, order))


def _signal(a, c, x, steps):
    out = []
    for _ in range(steps):
        out.append(c @ x)
        x = a @ x
    return np.stack(out, axis=1)


@pytest.mark.parametrize("channels", [1, 4])
def test_lds_fit_reconstructs_a_known_system(channels):
    rng = np.random.default_rng(channels)
    a, c = _system(rng, [0.3, 1.1], [0.98, 0.95], channels)
    y = _signal(a, c, rng.normal(size=4), 150)
    system = lds_dynamics.fit_lds(y, 4)
    scale = np.abs(y).max()
    assert np.abs(system.simulate(150) - y).max() < 1e-8 * scale
    columns = system.states.shape[1]
    assert np.abs(system.reconstruct() - y[:, :columns]).max() < 1e-8 * scale
    np.testing.assert_allclose(
        np.sort(np.abs(np.linalg.eigvals(system.A))),
        [0.95, 0.95, 0.98, 0.98],
        atol=1e-6,
    )
    # With 1% noise the rank-4 fit still explains the signal.
    rms = np.sqrt(np.mean(y**2))
    noisy = y + 0.01 * rms * rng.normal(size=y.shape)
    fit = lds_dynamics.fit_lds(noisy, 4).reconstruct()
    error = np.linalg.norm(fit - y[:, :columns]) / np.linalg.norm(y)
    assert error < 0.02
    # A too-low order does not.
    low = lds_dynamics.fit_lds(y, 2).reconstruct()
    assert np.linalg.norm(low - y[:, : low.shape[1]]) > 0.1 * np.linalg.norm(y)


@pytest.mark.parametrize("channels", [1, 4])
def test_lds_distance_separates_systems(channels):
    rng = np.random.default_rng(10 + channels)
    a, c = _system(rng, [0.3, 1.1], [0.98, 0.95], channels)
    b, d = _system(rng, [0.7, 2.0], [0.9, 0.97], channels)
    same_1 = _signal(a, c, rng.normal(size=4), 120)
    same_2 = -3.0 * _signal(a, c, rng.normal(size=4), 120)
    other = _signal(b, d, rng.normal(size=4), 120)
    distances = lds_dynamics.lds_distances(
        np.stack([same_1, same_2, other]), 4
    )
    np.testing.assert_allclose(distances, distances.T)
    assert distances[0, 1] < 1e-6
    assert distances[0, 2] > 1.0 and distances[1, 2] > 1.0


def test_prune_similar_drops_the_smaller_of_the_closest_pair():
    distances = np.array(
        [[0, 5, 4, 6], [5, 0, 0.1, 7], [4, 0.1, 0, 3], [6, 7, 3, 0]], float
    )
    norms = np.array([1.0, 2.0, 1.5, 0.5])
    # (1, 2) is closest and 2 has the smaller norm; then (0, 1) at 5,
    # where 0 has the smaller norm.
    assert lds_dynamics.prune_similar(distances, norms, 3).tolist() == [0, 1, 3]
    assert lds_dynamics.prune_similar(distances, norms, 2).tolist() == [1, 3]
    kept = lds_dynamics.prune_similar(distances, norms, 4)
    assert kept.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="keep"):
        lds_dynamics.prune_similar(distances, norms, 0)


def _tiny_model(seed=1):
    return ptb_lm.build_model(
        VOCABULARY, 6, [5, 4], init_scale=0.5, seed=seed
    )


def _plant_duplicates(model):
    """Embedding dim 4 = -0.3 x dim 2; LSTM-1 unit 3 = 0.5 x unit 1 (all
    its weights, plus noise), so that 4 and 3 have the smaller norms."""
    rng = np.random.default_rng(0)
    embedding, lstm, lstm2 = [
        layer for layer in model.layers if layer.weights
    ][:3]
    (table,) = embedding.get_weights()
    table[:, 4] = -0.3 * table[:, 2]
    embedding.set_weights([table])
    kernel, recurrent, bias = lstm.get_weights()
    for g in range(4):
        for weights in (kernel, recurrent):
            weights[:, 5 * g + 3] = 0.5 * weights[:, 5 * g + 1]
            weights[:, 5 * g + 3] += 1e-4 * rng.normal(size=weights.shape[0])
        bias[5 * g + 3] = 0.5 * bias[5 * g + 1]
    recurrent[3] = 0.5 * recurrent[1]
    lstm.set_weights([kernel, recurrent, bias])
    kernel2, *rest = lstm2.get_weights()
    kernel2[3] = 0.5 * kernel2[1]
    lstm2.set_weights([kernel2, *rest])


def test_lds_prune_removes_one_of_a_planted_duplicate_pair():
    model = _tiny_model()
    _plant_duplicates(model)
    norms = ptb_lm.neuron_norms(model)
    assert norms[0][4] < norms[0][2] and norms[1][3] < norms[1][1]
    distances = lds_dynamics.lds_distances(ptb_lds.neuron_signals(model)[1], 4)
    np.fill_diagonal(distances, np.inf)
    assert np.unravel_index(np.argmin(distances), distances.shape) in (
        (1, 3),
        (3, 1),
    )
    distances = lds_dynamics.lds_distances(ptb_lds.neuron_signals(model)[0], 4)
    np.fill_diagonal(distances, np.inf)
    assert distances[2, 4] < 1e-6 < distances[np.arange(6) != 4][:, 2].min()
    slim, kept = ptb_lds.lds_prune(model, [5, 4, 4])
    assert kept[0].tolist() == [0, 1, 2, 3, 5]
    assert kept[1].tolist() == [0, 1, 2, 4]
    assert kept[2].tolist() == [0, 1, 2, 3]
    assert [len(n) for n in ptb_lm.neuron_norms(slim)] == [5, 4, 4]


def test_stage_cut_gives_exactly_the_stage_sizes():
    plan = ptb_lds.stage_sizes([200, 200, 200], [200, 120, 100], 3)
    assert plan[-1] == [200, 120, 100]
    assert plan == [[200, 169, 159], [200, 142, 126], [200, 120, 100]]
    assert ptb_lds.stage_sizes([6, 5, 4], [3, 2, 1], 1) == [[3, 2, 1]]
    model = _tiny_model()
    for sizes in ([4, 3, 2], [6, 1, 4], [1, 5, 1]):
        slim, kept = ptb_lds.lds_prune(model, sizes)
        assert [len(n) for n in ptb_lm.neuron_norms(slim)] == sizes
        assert [len(k) for k in kept] == sizes
    with pytest.raises(ValueError, match="Kept sizes"):
        ptb_lds.lds_prune(model, [7, 3, 2])
    assert ptb_lds.split_epochs(7, 3) == [2, 2, 3]
    assert ptb_lds.split_epochs(7, 2) == [3, 4]
    args = ptb_lds.build_parser().parse_args(
        ["--dense-model", "m", "--keep", "1,1,1"]
    )
    rates = [ptb_lds.learning_rate(args, e) for e in range(7)]
    assert rates == [0.25] * 5 + [0.125, 0.0625]


def test_distillation_loss_is_zero_only_for_the_teacher():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 7)).astype("float32")
    loss = lambda s, t: float(ptb_lds.distillation_loss(s, t))  # noqa: E731
    assert abs(loss(logits, logits)) < 1e-6
    assert loss(logits + 5.0, logits) == pytest.approx(0.0, abs=1e-6)
    assert loss(logits * 1.5, logits) > 1e-3

    teacher = _tiny_model()
    tokens = rng.integers(0, VOCABULARY, (2, 4)).astype("int32")
    same = ptb_lds.DistillModel(_tiny_model(), teacher, 2, distill=0.5)
    same(tokens, training=True)
    assert abs(float(sum(map(float, same.losses)))) < 1e-6
    other = ptb_lds.DistillModel(_tiny_model(seed=2), teacher, 2, distill=0.5)
    other(tokens, training=True)
    (kl,) = other.losses
    student = np.asarray(_tiny_model(seed=2)(tokens))
    expected = 0.5 * loss(student, np.asarray(teacher(tokens)))
    assert float(kl) == pytest.approx(expected, rel=1e-4) and expected > 0

    scales = ptb_lds.l2_scales(teacher, 1e-3)
    assert all(s.max() <= 1e-2 + 1e-12 for s in scales)
    penalised = ptb_lds.DistillModel(teacher, None, 2, l2_scales=scales)
    penalised(tokens, training=True)
    (l2,) = penalised.losses
    signals = ptb_lds.neuron_signals(teacher)
    expected = sum(
        float(np.sum(s * np.sum(y**2, axis=(1, 2))))
        for s, y in zip(scales, signals)
    )
    assert float(l2) == pytest.approx(expected, rel=1e-4)
    penalised(tokens, training=False)
    assert not penalised.losses


def test_docstring_and_results_list_the_choices():
    assert len(ptb_lds.CHOICES) >= 6
    for choice in ptb_lds.CHOICES:
        assert choice in ptb_lds.__doc__


def _run_tiny_distill_fit_on(backend):
    code = (
        "import sys; sys.modules['tensorflow'] = None; "
        f"sys.path.insert(0, {STUDY_DIR!r}); "
        "import numpy as np, keras, ptb_lm, ptb_lds; "
        "m = lambda s: ptb_lm.build_model(30, 6, [5, 4], seed=s); "
        "d = ptb_lds.DistillModel(m(1), m(2), 2, 0.5, "
        "ptb_lds.l2_scales(m(1), 1e-3)); "
        "ptb_lm.compile_model(d, lr=0.5, num_steps=4); "
        "ids = np.random.default_rng(0).integers(0, 30, 200); "
        "h = d.fit(ptb_lm.WindowDataset(ids, 2, 4, 5), epochs=2, "
        "shuffle=False, verbose=0, callbacks=[ptb_lm.ResetCarry()]); "
        "loss, nll = h.history['loss'], h.history['nll']; "
        "assert all(a > b for a, b in zip(loss, nll)), (loss, nll); "
        "assert loss[1] < loss[0], loss; "
        "assert not any(n.startswith('tensorflow') and sys.modules[n] "
        "for n in sys.modules)"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_distill_model_fit_trains_the_student_only():
    teacher = _tiny_model(seed=2)
    model = ptb_lds.DistillModel(
        _tiny_model(), teacher, 2, 0.5, ptb_lds.l2_scales(teacher, 1e-3)
    )
    before = [w.copy() for w in teacher.get_weights()]
    stack_weights = lambda m: [  # noqa: E731
        w for layer in m.stack for w in layer.get_weights()
    ]
    start = stack_weights(model.student)
    ptb_lm.compile_model(model, lr=0.5, num_steps=4)
    ids = np.random.default_rng(0).integers(0, VOCABULARY, 200)
    history = model.fit(
        ptb_lm.WindowDataset(ids, 2, 4, 5),
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[ptb_lm.ResetCarry()],
    ).history
    assert history["loss"][0] > history["nll"][0]
    (first, *_), *_ = filter(None, model.teacher.carry)
    teacher_carry = np.asarray(first.value)
    assert np.abs(teacher_carry).max() > 0
    for old, new in zip(before, stack_weights(model.teacher), strict=True):
        np.testing.assert_array_equal(old, new)
    assert any(
        np.abs(old - new).max() > 0
        for old, new in zip(start, stack_weights(model.student), strict=True)
    )
    assert len(model.trainable_weights) == len(teacher.trainable_weights)


def test_distill_model_fits_on_jax_without_tensorflow():
    result = _run_tiny_distill_fit_on("jax")
    assert result.returncode == 0, result.stderr[-2000:]


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ptb_lds.py: error: ")
    for fragment in fragments:
        assert fragment in err


def test_usage_errors(tmp_path, capsys):
    absent = str(tmp_path / "absent.keras")
    base = ["--config", "tiny", "--out", str(tmp_path / "o")]
    argv = base + ["--keep", "8,10,6", "--dense-model", absent]
    assert ptb_lds.main(argv) == 2
    _one_line_error(capsys, "no such file", absent)
    model = tmp_path / "m.keras"
    model.write_bytes(b"")
    model = str(model)
    for keep in ("8,10", "8,x,6", "0,1,1"):
        argv = base + ["--keep", keep, "--dense-model", model]
        assert ptb_lds.main(argv) == 2
        _one_line_error(capsys, "--keep")
    assert ptb_lds.main(base + ["--dense-model", model]) == 2
    _one_line_error(capsys, "--keep")
    argv = base + ["--keep", "8,10,6", "--dense-model", model]
    assert ptb_lds.main(argv + ["--epochs-per-stage", "2,2"]) == 2
    _one_line_error(capsys, "--epochs-per-stage")
    assert ptb_lds.main(argv + ["--distill", "-1"]) == 2
    _one_line_error(capsys, "--distill")
    assert ptb_lds.main(argv + ["--resume"]) == 2
    _one_line_error(capsys, "--resume")


class _Interrupted(Exception):
    pass


@requires_data
def test_cli_prunes_in_stages_and_resumes(tmp_path, capsys, monkeypatch):
    dense = str(tmp_path / "dense")
    tiny = ["--config", "tiny", "--max-steps", "4"]
    assert ptb_language_model.main(tiny + ["--out", dense]) == 0
    capsys.readouterr()
    dense_model = os.path.join(dense, "model.keras")
    out = str(tmp_path / "lds")
    argv = tiny + [
        "--dense-model", dense_model, "--keep", "8,10,6", "--out", out,
    ]  # fmt: skip

    assert ptb_lds.main(argv[:-4] + ["--keep", "8,17,6", "--out", out]) == 2
    _one_line_error(capsys, "exceeds the dense sizes")

    on_epoch_end = ptb_language_model.EpochEnd.on_epoch_end

    def interrupt_in_stage_2(self, epoch, logs=None):
        on_epoch_end(self, epoch, logs)
        if self.phase == "stage2":
            raise _Interrupted()

    with monkeypatch.context() as patch:
        patch.setattr(
            ptb_language_model.EpochEnd, "on_epoch_end", interrupt_in_stage_2
        )
        with pytest.raises(_Interrupted):
            ptb_lds.main(argv)
    printed = capsys.readouterr().out
    assert "stage 1: LDS pruning to 13,14,12" in printed
    assert "stage2 epoch 1/2  lr 0.25" in printed
    assert not os.path.exists(os.path.join(out, "results.json"))

    assert ptb_lds.main(argv) == 2
    _one_line_error(capsys, "--resume")
    assert ptb_lds.main(argv + ["--resume", "--distill", "0.2"]) == 2
    _one_line_error(capsys, "--distill (was 0.5)")

    assert ptb_lds.main(argv + ["--resume"]) == 0
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if " epoch " in line]
    assert [line.split("  ")[0] for line in lines] == [
        "stage2 epoch 2/2", "stage3 epoch 1/3", "stage3 epoch 2/3",
        "stage3 epoch 3/3",
    ]  # fmt: skip
    assert "stage 3: LDS pruning to 8,10,6" in printed

    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    for key in (
        "model", "config", "eval_batch_size", "num_steps", "max_windows",
        "neurons", "params", "valid_perplexity", "test_perplexity",
        "history", "method", "lstm_params", "keep", "stages", "choices",
    ):  # fmt: skip
        assert key in results, key
    assert results["method"] == results["model"] == "lds"
    assert results["eval_batch_size"] == 1 and results["max_windows"] == 4
    assert results["keep"] == [8, 10, 6]
    assert results["stages"] == [[13, 14, 12], [10, 12, 8], [8, 10, 6]]
    assert results["choices"] == ptb_lds.CHOICES
    history = results["history"]
    assert [(e["phase"], e["epoch"]) for e in history] == [
        ("stage1", 1), ("stage1", 2), ("stage2", 1), ("stage2", 2),
        ("stage3", 1), ("stage3", 2), ("stage3", 3),
    ]  # fmt: skip
    assert [e["lr"] for e in history] == [0.25] * 5 + [0.125, 0.0625]
    inputs = [entry["neurons"][0]["inputs"] for entry in history]
    assert inputs == [13, 13, 10, 10, 8, 8, 8]
    for split in ("valid", "test"):
        assert 1 < results[f"{split}_perplexity"] < 1e5
    model = keras.models.load_model(os.path.join(out, "model.keras"))
    assert [len(n) for n in ptb_lm.neuron_norms(model)] == [8, 10, 6]
    assert model.count_params() == results["params"]
    assert results["lstm_params"] == sum(
        layer.count_params() for layer in model.layers
        if ptb_lm.is_recurrent(layer)
    )  # fmt: skip
    assert results["lstm_params"] == 4 * (10 * (8 + 10 + 1) + 6 * (10 + 6 + 1))
    files = sorted(f for f in os.listdir(out) if f.endswith(".keras"))
    assert files == ["checkpoint-2-003.keras", "model.keras", "teacher-3.keras"]
