"""`step_scale` and `BudgetController(width_pace=...)`."""

import keras
import numpy as np
import pytest

import keras_l0
from keras_l0.callbacks import BudgetController
from keras_l0.callbacks.width_pace import WidthPace
from keras_l0.callbacks.width_pace import kept_units


def single(units=16, features=6, classes=4, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5, features))
    h = keras_l0.GatedLSTM(units, seed=seed)(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes)(h))


def data(n=32, features=6, classes=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5, features)).astype("float32")
    return x, np.arange(n) % classes


def trained(cell):
    return {k: np.asarray(v) for k, v in cell.trained_weights().items()}


def test_set_step_scale_keeps_the_weights_and_the_outputs():
    model = single()
    x, _ = data()
    cell = model.layers[1].cell
    before, weights = model.predict(x, verbose=0), trained(cell)
    cell.set_step_scale(2.5)
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-6)
    for name, value in trained(cell).items():
        np.testing.assert_allclose(value, weights[name], rtol=1e-6, atol=1e-7)
    assert float(keras.ops.convert_to_numpy(cell.step_scale)) == 2.5


@pytest.mark.parametrize(
    "optimizer",
    [lambda: keras.optimizers.SGD(0.1, momentum=0.9),
     lambda: keras.optimizers.Adam(1e-2),
     lambda: keras.optimizers.RMSprop(1e-2)],
)
def test_a_step_moves_the_weights_by_step_scale_times_the_plain_step(
    optimizer,
):
    x, y = data()
    moves = []
    for scale in (1.0, 3.0):
        model = single()
        cell = model.layers[1].cell
        cell.set_step_scale(scale)
        model.compile(optimizer(), keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
        start = trained(cell)
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
        moves.append({k: trained(cell)[k] - start[k] for k in start})
    for name in moves[0]:
        np.testing.assert_allclose(
            moves[1][name], 3.0 * moves[0][name], rtol=1e-3, atol=1e-5
        )
        assert np.abs(moves[0][name]).max() > 1e-4


def test_shrink_uses_the_weights_at_their_step_scale():
    model = single()
    x, _ = data()
    cell = model.layers[1].cell
    log_alpha = np.full(16, 3.0, "float32")
    log_alpha[::3] = -6.0
    cell.hidden_log_alpha.assign(log_alpha)
    cell.set_step_scale(0.4)
    slim = keras_l0.shrink(model)
    np.testing.assert_allclose(
        slim.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )


class ScaleSeen(keras.callbacks.Callback):
    """The step scale and the kept units at the last batch of `fit`."""

    def on_train_batch_begin(self, batch, logs=None):
        cell = self.model.layers[1].cell
        self.scale = float(keras.ops.convert_to_numpy(cell.step_scale))
        self.kept = kept_units(cell)


def fit(model, controller, epochs=6):
    x, y = data(96)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    seen = ScaleSeen()
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0,
              callbacks=[controller, seen])
    return seen


def test_controller_scales_steps_by_dense_over_kept_units_then_folds():
    model = single()
    controller = BudgetController(0.25)
    seen = fit(model, controller)
    assert seen.kept < 16
    assert seen.scale == pytest.approx(16 / seen.kept, rel=1e-6)
    cell = model.layers[1].cell
    assert float(keras.ops.convert_to_numpy(cell.step_scale)) == 1.0
    assert controller.width_pace == "auto"


def test_width_pace_is_off_when_asked_and_for_trained_models():
    seen = fit(single(), BudgetController(0.25, width_pace=False))
    assert seen.kept < 16 and seen.scale == 1.0
    plain_in = keras.Input((5, 6))
    plain = keras.Model(
        plain_in,
        keras.layers.Dense(4)(keras.layers.LSTM(16, name="lstm")(plain_in)),
    )
    gated = keras_l0.gate_model(plain, ["lstm"])
    seen = fit(gated, BudgetController(0.25, rise_gain=0.25, horizon=0))
    assert seen.kept < 16 and seen.scale == 1.0


def test_factor_is_capped():
    controller = BudgetController(0.25)
    controller.max_step_factor = 1.5
    seen = fit(single(), controller)
    assert 16 / seen.kept > 1.5
    assert seen.scale == 1.5


def test_a_step_that_moves_the_weights_far_is_not_scaled():
    # The factor is capped by max_step_motion / (the median share of the
    # kernels' norm that one step moved them by, at the first updates).
    controller = BudgetController(0.25)
    seen = fit(single(), controller)
    motions = controller._width_pace.motions["gated_lstm"]
    assert len(motions) == controller._width_pace.motion_samples
    assert all(0 < m < controller.max_step_motion for m in motions)
    assert seen.scale == pytest.approx(16 / seen.kept, rel=1e-6)

    controller = BudgetController(0.25)
    controller.max_step_motion = 0.5 * min(motions)
    seen = fit(single(), controller)
    assert seen.kept < 16 and seen.scale == 1.0

    controller = BudgetController(0.25)
    controller.max_step_motion = 1.5 * float(np.median(motions))
    seen = fit(single(), controller)
    assert 16 / seen.kept > 1.8
    assert seen.scale == pytest.approx(1.5, rel=0.05)


def test_one_step_motion_is_measured_as_the_kernels_move():
    model = single()
    cell = model.layers[1].cell
    x, y = data(96)
    model.compile(keras.optimizers.SGD(0.5),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pace = WidthPace(model, {"gated_lstm": model.layers[1]})
    cell.set_step_scale(2.0)
    before = np.concatenate([np.ravel(trained(cell)[k])
                             for k in ("kernel", "recurrent_kernel")])
    pace.update(step=3)
    model.train_on_batch(x[:8], y[:8])
    pace.measure(4)
    after = np.concatenate([np.ravel(trained(cell)[k])
                            for k in ("kernel", "recurrent_kernel")])
    expected = np.linalg.norm(after - before) / np.linalg.norm(before) / 2.0
    assert pace.motion("gated_lstm") == pytest.approx(expected, rel=1e-4)


def test_width_pace_rejects_other_values():
    with pytest.raises(ValueError, match="width_pace"):
        BudgetController(0.5, width_pace="yes")


def test_files_without_step_scale_load(tmp_path):
    model = single()
    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    import h5py

    with h5py.File(path, "r+") as f:
        found = []
        f.visititems(lambda name, obj: found.append(name)
                     if name.endswith("vars") else None)
        cell_vars = [n for n in found if "cell" in n]
        assert cell_vars
        group = f[cell_vars[0]]
        last = str(len(group.keys()) - 1)
        del group[last]
    fresh = single(seed=1)
    fresh.layers[1].cell.set_step_scale(2.0)
    fresh.load_weights(path)
    x, _ = data()
    np.testing.assert_allclose(
        fresh.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    cell = fresh.layers[1].cell
    assert float(keras.ops.convert_to_numpy(cell.step_scale)) == 1.0
