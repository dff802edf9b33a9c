"""The ISS and DARB baselines of the PTB study (benchmarks/ptb)."""

import json
import os
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

import ptb_baseline  # noqa: E402
import ptb_darb  # noqa: E402
import ptb_iss  # noqa: E402
import ptb_language_model  # noqa: E402
import ptb_lm  # noqa: E402
from ptb_helpers import requires_data  # noqa: E402

VOCABULARY = 30


def _tiny_model(seed=1, units=(5, 4), embedding=6):
    return ptb_lm.build_model(
        VOCABULARY, embedding, list(units), init_scale=0.5, seed=seed
    )


def _tokens(shape, seed=0):
    return np.random.default_rng(seed).integers(0, VOCABULARY, shape)


def _one_step(carried, ids):
    ptb_lm.compile_model(carried, lr=1.0, clip=1e9, num_steps=1)
    carried.fit(
        ptb_lm.WindowDataset(ids, 2, 4, max_windows=1),
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    return {v.path: np.array(v) for v in carried.trainable_variables}


def test_group_lasso_is_the_sum_of_neuron_norms_and_has_its_gradient():
    model = _tiny_model()
    layers = ptb_lm.chain_layers(model)
    expected = sum(float(np.sum(n)) for n in ptb_lm.neuron_norms(model))
    penalty = float(ptb_iss.group_lasso(layers))
    assert penalty == pytest.approx(expected, rel=1e-6)
    squares = ptb_iss.group_square_norms(layers)
    for got, norms in zip(squares, ptb_lm.neuron_norms(model)):
        np.testing.assert_allclose(np.sqrt(np.array(got)), norms, rtol=1e-5)

    # One SGD step (lr 1) with and without the penalty: the difference is
    # λ times the penalty's gradient; check it by central differences.
    ids = _tokens(2 * 5 + 2)
    lam = 0.5
    plain = _one_step(ptb_lm.CarriedStateModel(model, 2), ids)
    lasso = _one_step(ptb_iss.GroupLassoModel(model, 2, lam), ids)
    start = {v.path: np.array(v) for v in model.weights}
    # The carried model's paths differ from the plain model's by their
    # prefix; match the variables by position.
    variables = [v for v in model.weights if v.trainable]
    rng = np.random.default_rng(0)
    checked = 0
    for variable, (path, after) in zip(variables, plain.items()):
        gradient = (after - lasso[path]) / lam
        if variable is layers[-1].bias:
            np.testing.assert_allclose(gradient, 0.0, atol=1e-6)
            continue
        assert np.abs(gradient).max() > 1e-3, variable.path
        values = start[variable.path]
        for index in zip(*(rng.integers(0, s, 3) for s in values.shape)):
            h = 1e-2
            around = []
            for sign in (1, -1):
                shifted = values.copy()
                shifted[index] += sign * h
                variable.assign(shifted)
                around.append(float(ptb_iss.group_lasso(layers)))
            variable.assign(values)
            numeric = (around[0] - around[1]) / (2 * h)
            assert gradient[index] == pytest.approx(numeric, abs=2e-3)
            checked += 1
    assert checked >= 15


def test_iss_cut_keeps_the_largest_groups_and_the_function():
    model = _tiny_model(seed=2)
    keep = [4, 3, 2]
    norms = ptb_lm.neuron_norms(model)
    slim, kept = ptb_iss.cut(model, keep)
    for size, group, indices in zip(keep, norms, kept):
        assert len(indices) == size
        assert group[indices].min() >= np.delete(group, indices).max()
    lstms = list(filter(ptb_lm.is_recurrent, ptb_lm.chain_layers(slim)))
    assert [int(lstms[0].cell.kernel.shape[0])] + [
        layer.cell.units for layer in lstms
    ] == keep
    assert ptb_iss.lstm_params(slim) == ptb_darb.gated_lstm_params(keep)

    # The dense model with the dropped neurons zeroed: nothing reads them.
    zeroed = keras.models.clone_model(model)
    zeroed.set_weights(model.get_weights())
    layers = [layer for layer in ptb_lm.chain_layers(zeroed) if layer.weights]
    for group, (producer, reader) in enumerate(zip(layers, layers[1:])):
        dropped = np.setdiff1d(np.arange(len(norms[group])), kept[group])
        reader = reader.cell if ptb_lm.is_recurrent(reader) else reader
        for variable in [reader.kernel] + (
            [producer.cell.recurrent_kernel]
            if ptb_lm.is_recurrent(producer)
            else []
        ):
            values = np.array(variable)
            values[dropped] = 0
            variable.assign(values)
    tokens = _tokens((2, 9), seed=4)
    np.testing.assert_allclose(
        np.asarray(slim(tokens, training=False)),
        np.asarray(zeroed(tokens, training=False)),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="Kept sizes"):
        ptb_iss.cut(model, [4, 6, 2])


def _check_block_max(matrix, mask, counts):
    n = matrix.shape[0]
    for column, k in enumerate(counts):
        kept = np.nonzero(mask[:, column])[0]
        assert len(kept) == k
        if not k:
            continue
        ids = ptb_darb.block_ids(n, k)
        assert np.all(np.diff(ids) >= 0) and set(ids) == set(range(k))
        sizes = np.bincount(ids)
        assert sizes.max() - sizes.min() <= 1
        assert sorted(ids[kept]) == list(range(k))
        for position in kept:
            block = np.abs(matrix[ids == ids[position], column])
            assert abs(matrix[position, column]) == block.max()


@pytest.mark.parametrize("threshold", ["global", "matrix"])
def test_darb_masks_keep_the_block_max_at_the_row_densities(threshold):
    rng = np.random.default_rng(3)
    # Different scales, so that a global threshold spreads the budget
    # unevenly; row lengths that blocks do not divide.
    matrices = [
        rng.normal(size=(13, 20)),
        3 * rng.normal(size=(7, 20)),
        0.5 * rng.normal(size=(7, 12)),
    ]
    count = 137
    masks = ptb_darb.darb_masks(matrices, count, threshold)
    assert sum(int(mask.sum()) for mask in masks) == count
    # The unstructured counts, from a threshold (no ties in random data).
    if threshold == "global":
        every = np.concatenate([np.abs(m).ravel() for m in matrices])
        cutoffs = [np.sort(every)[-count]] * len(matrices)
    else:
        size = sum(m.size for m in matrices)
        shares = [m.size * count / size for m in matrices]
        kept = [int(mask.sum()) for mask in masks]
        assert kept == pytest.approx(shares, abs=1)
        cutoffs = [
            np.sort(np.abs(m).ravel())[-int(mask.sum())]
            for m, mask in zip(matrices, masks)
        ]
    for matrix, mask, cutoff in zip(matrices, masks, cutoffs):
        counts = (np.abs(matrix) >= cutoff).sum(axis=0)
        assert mask.sum(axis=0).tolist() == counts.tolist()
        _check_block_max(matrix, mask, counts)
    if threshold == "global":
        assert len({round(mask.mean(), 3) for mask in masks}) > 1
    # Edge cases: nothing, everything.
    assert not any(m.any() for m in ptb_darb.darb_masks(matrices, 0))
    full = sum(m.size for m in matrices)
    assert all(m.all() for m in ptb_darb.darb_masks(matrices, full))


def test_darb_sizes_schedule_and_masks_that_hold_in_training():
    keep = [4, 3, 2]
    model = _tiny_model()
    lstms = [l for l in ptb_lm.chain_layers(model) if ptb_lm.is_recurrent(l)]
    assert ptb_darb.gated_lstm_params([6, 5, 4]) == sum(
        layer.count_params() for layer in lstms
    )
    method = ptb_darb.DARB(keep)
    state = {}
    method.check(model, state)
    target = ptb_darb.gated_lstm_params(keep) - 4 * (5 + 4)
    assert state == dict(target=target, matrix_weights=4 * (5 * 11 + 4 * 9))
    densities = [method.schedule("prune", e, 4, state) for e in range(4)]
    assert densities[-1] == (target / state["matrix_weights"], target)
    assert all(a[1] > b[1] for a, b in zip(densities, densities[1:]))
    assert method.schedule("finetune", 0, 3, state) == densities[-1]
    with pytest.raises(ValueError, match="--keep needs 3 sizes"):
        ptb_darb.DARB([4, 6, 2]).check(model, {})
    with pytest.raises(ValueError, match="kernels hold"):
        ptb_darb.DARB(lstm_params=10).check(model, {})

    carried = method.training_model(model, 2, "finetune", 0, 3, state)
    variables = ptb_darb.lstm_variables(carried.stack)
    masks = [np.array(v) != 0 for v in variables]
    assert sum(int(m.sum()) for m in masks) == target
    before = [np.array(v) for v in variables]
    ptb_lm.compile_model(carried, lr=2.0, num_steps=4)
    carried.fit(
        ptb_lm.WindowDataset(_tokens(2 * 17 + 1), 2, 4, max_windows=4),
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    for variable, mask, old in zip(variables, masks, before):
        values = np.array(variable)
        assert np.all(values[~mask] == 0)
        assert np.all(values[mask] != old[mask])
    plain = carried.to_model(keras.models.clone_model(model))
    assert ptb_darb.lstm_nonzeros(ptb_lm.chain_layers(plain)) == (
        ptb_darb.gated_lstm_params(keep)
    )


TINY = ["--config", "tiny", "--max-steps", "4"]


def _results(folder):
    with open(os.path.join(folder, "results.json")) as f:
        return json.load(f)


class _Interrupted(Exception):
    pass


@requires_data
def test_cli_end_to_end(tmp_path, capsys, monkeypatch):
    dense = str(tmp_path / "dense")
    argv = TINY + ["--epochs", "1", "--out", dense]
    assert ptb_language_model.main(argv) == 0
    dense_model = os.path.join(dense, "model.keras")
    keep = [8, 10, 6]
    base = TINY + [
        "--dense-model", dense_model, "--keep", "8,10,6", "--epochs", "2",
        "--finetune-epochs", "1",
    ]  # fmt: skip
    keys = {
        "model", "config", "eval_batch_size", "num_steps", "max_windows",
        "neurons", "params", "valid_perplexity", "test_perplexity",
        "history", "method", "lstm_params", "keep", "choices",
    }  # fmt: skip
    capsys.readouterr()

    iss = str(tmp_path / "iss")
    iss_argv = base + ["--method", "iss", "--epochs", "1", "--out", iss]
    assert ptb_baseline.main(iss_argv) == 0
    out = capsys.readouterr().out
    assert "iss: group_norm_sum" in out
    results = _results(iss)
    assert keys <= set(results)
    assert results["method"] == results["model"] == "iss"
    assert results["keep"] == keep and results["eval_batch_size"] == 1
    assert [(e["inputs"], e["units"]) for e in results["neurons"]] == [
        (8, 10),
        (10, 6),
    ]
    assert results["lstm_params"] == ptb_darb.gated_lstm_params(keep)
    assert [(e["phase"], e["lr"]) for e in results["history"]] == [
        ("prune", 0.25), ("finetune", 0.25),
    ]  # fmt: skip
    assert results["history"][0]["group_norm_sum"] > 0
    assert all(isinstance(c, str) and c for c in results["choices"])
    slim = keras.models.load_model(os.path.join(iss, "model.keras"))
    assert slim.count_params() == results["params"]
    assert not any(ptb_lm.is_gated(layer) for layer in slim.layers)

    # DARB, interrupted after its first epoch, then resumed.
    darb = str(tmp_path / "darb")
    argv = base + ["--method", "darb", "--out", darb]
    on_epoch_end = ptb_baseline.EpochEnd.on_epoch_end

    def interrupt(self, epoch, logs=None):
        on_epoch_end(self, epoch, logs)
        raise _Interrupted()

    with monkeypatch.context() as patch:
        patch.setattr(ptb_baseline.EpochEnd, "on_epoch_end", interrupt)
        with pytest.raises(_Interrupted):
            ptb_baseline.main(argv)
    assert not os.path.exists(os.path.join(darb, "results.json"))
    assert ptb_baseline.main(argv + ["--resume", "--seed", "1"]) == 2
    assert "--seed (was 0)" in capsys.readouterr().err
    assert ptb_baseline.main(argv + ["--resume"]) == 0
    results = _results(darb)
    assert keys <= set(results) and results["method"] == "darb"
    history = results["history"]
    assert [e["phase"] for e in history] == ["prune", "prune", "finetune"]
    assert [e["kept"] for e in history][1:] == [history[-1]["kept"]] * 2
    assert history[0]["kept"] > history[1]["kept"]
    assert results["lstm_params"] == ptb_darb.gated_lstm_params(keep)
    assert results["target_lstm_params"] == ptb_darb.gated_lstm_params(keep)
    model = keras.models.load_model(os.path.join(darb, "model.keras"))
    dense_params = keras.models.load_model(dense_model).count_params()
    assert model.count_params() == results["params"] == dense_params
    layers = ptb_lm.chain_layers(model)
    assert not any(ptb_lm.is_gated(layer) for layer in layers)
    assert ptb_darb.lstm_nonzeros(layers) == results["lstm_params"]
    capsys.readouterr()

    # Resuming a finished run evaluates again, the same.
    assert ptb_baseline.main(argv + ["--resume"]) == 0
    again = _results(darb)
    assert again["valid_perplexity"] == pytest.approx(
        results["valid_perplexity"], rel=1e-6
    )
    assert again["history"] == results["history"]
    capsys.readouterr()

    # User mistakes: one line, exit 2.
    absent = str(tmp_path / "absent.keras")
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(10000, 4)(tokens)
    x = keras.layers.Add()([x, keras.layers.Dense(4)(x)])
    branchy = str(tmp_path / "branchy.keras")
    keras.Model(tokens, keras.layers.Dense(10000)(x)).save(branchy)
    for argv, message in (
        (base + ["--method", "iss", "--keep", "8,10"], "--keep needs 3 sizes"),
        (base + ["--method", "iss", "--keep", "8,99,6"], "--keep needs 3"),
        (base + ["--method", "iss", "--keep", "8,x"], "comma-separated"),
        (
            TINY + ["--method", "iss", "--dense-model", absent,
                    "--keep", "2,2,2"],
            f"no such file: --dense-model {absent}",
        ),
        (
            TINY + ["--method", "darb", "--dense-model", dense_model],
            "needs --keep or --lstm-params",
        ),
        (base + ["--method", "darb", "--group-lasso", "1"],
         "needs --method iss"),
        (
            TINY + ["--method", "darb", "--dense-model", branchy,
                    "--keep", "4,4,4"],
            f"--dense-model {branchy}: Model",
        ),
    ):  # fmt: skip
        out = str(tmp_path / "mistake")
        assert ptb_baseline.main(argv + ["--out", out]) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert err.count("\n") == 1
        assert err.startswith("ptb_baseline.py: error: ")
        assert not os.path.exists(out)
    assert ptb_baseline.main(iss_argv) == 2
    assert "already holds a run" in capsys.readouterr().err
