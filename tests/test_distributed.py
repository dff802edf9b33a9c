"""Gated layers and BudgetController under data-parallel training.

Each case runs in a fresh interpreter, so that the devices are configured
before the backend starts, whatever backend this session uses.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

COMMON = """
import json, math, numpy as np
import keras, keras_l0
from keras_l0.callbacks import BudgetController

def build():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 5))
    h = keras_l0.GatedLSTM(8, seed=0, l0_penalty=1e-3)(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(h))

class Seen(keras.callbacks.Callback):
    scales = [1.0]

    def on_train_batch_begin(self, batch, logs=None):
        cell = self.model.layers[1].cell
        self.scales.append(float(keras.ops.convert_to_numpy(cell.step_scale)))

def compile(model):
    model.compile(optimizer=keras.optimizers.Adam(),
                  loss=keras.losses.SparseCategoricalCrossentropy(True))
    return model

rng = np.random.default_rng(0)
x = rng.standard_normal((64, 6, 5)).astype("float32")
y = rng.integers(0, 3, 64).astype("int32")
single = compile(build())
weights = single.get_weights()
single_loss = single.evaluate(x, y, batch_size=16, verbose=0)
"""

TF = COMMON.replace("import json", """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import json""", 1) + """
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = compile(build())
model.set_weights(weights)
loss = model.evaluate(x, y, batch_size=16, verbose=0)
controller = BudgetController(0.5)
model.fit(x, y, batch_size=16, epochs=4, verbose=0,
          callbacks=[controller, Seen()])
cell = model.layers[1].cell
print(json.dumps(dict(replicas=strategy.num_replicas_in_sync, loss=loss,
    single=single_loss, reached=controller.size / controller.target_size,
    gate_scale=float(keras.ops.convert_to_numpy(cell.gate_scale)),
    step_scale=float(keras.ops.convert_to_numpy(cell.step_scale)),
    max_step_scale=max(Seen.scales))))
"""

JAX = COMMON + """
import jax
devices = keras.distribution.list_devices("cpu")
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
model = compile(build())
model.set_weights(weights)
loss = model.evaluate(x, y, batch_size=16, verbose=0)
controller = BudgetController(0.5)
model.fit(x, y, batch_size=16, epochs=4, verbose=0,
          callbacks=[controller, Seen()])
cell = model.layers[1].cell
print(json.dumps(dict(replicas=len(devices), loss=loss, single=single_loss,
    reached=controller.size / controller.target_size,
    gate_scale=float(keras.ops.convert_to_numpy(cell.gate_scale)),
    step_scale=float(keras.ops.convert_to_numpy(cell.step_scale)),
    max_step_scale=max(Seen.scales))))
"""


def run(script, backend, **env):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    environ = {**os.environ, "KERAS_BACKEND": backend,
               "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=environ, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def check(result):
    assert result["replicas"] == 2
    # Eval mode: deterministic gates; the loss includes the L0 penalty.
    assert result["loss"] == pytest.approx(result["single"], rel=1e-5)
    # The shifts assigned from the callback reached every replica.
    assert abs(result["reached"] - 1) <= 0.1, result["reached"]
    assert result["gate_scale"] == 1.0
    # The width pace ran on every replica and folded back at the end.
    assert result["max_step_scale"] > 1.0
    assert result["step_scale"] == 1.0


def test_mirrored_strategy_two_cpus():
    check(run(TF, "tensorflow"))


def test_jax_data_parallel_two_host_devices():
    check(run(JAX, "jax",
              XLA_FLAGS="--xla_force_host_platform_device_count=2"))
