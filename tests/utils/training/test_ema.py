"""The weights' moving average (utils/training/ema.py): the formula on every weight, batch-norm
statistics and frozen layers included; under MirroredStrategy; and in the trainer, where the saved
model is the average, not the raw weights."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from utils.training.ema import DECAY, TAU, ModelEMA, ema_decay

ROOT = Path(__file__).resolve().parents[3]


def test_the_decay_ramps_up_to_0_9999():
    assert ema_decay(1) == pytest.approx(0.9999 * (1 - math.exp(-1 / 2000)))
    assert ema_decay(2000) == pytest.approx(0.9999 * (1 - math.exp(-1)))
    assert ema_decay(1) < 0.001 and ema_decay(100) == pytest.approx(0.04876, abs=1e-5)
    assert ema_decay(10**6) == pytest.approx(DECAY) and TAU == 2000


def _small_model():
    import keras

    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="frozen")(inputs)
    x = keras.layers.Dense(5, name="dense")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, x)


def _lags(average, raw, initial) -> bool:
    """The average of a weight that moved is clearly behind its latest value (a short ramp)."""
    return np.abs(average - raw).max() > 0.1 * np.abs(raw - initial).max()


def _reference(start, steps, tau):
    """The average of `start` and then each step's weights, by the formula, in float64."""
    average = [np.asarray(w, np.float64) for w in start]
    for n, weights in enumerate(steps, start=1):
        d = ema_decay(n, tau=tau)
        average = [d * a + (1 - d) * np.asarray(w) for a, w in zip(average, weights, strict=True)]
    return average


def test_every_weight_follows_the_formula_and_a_frozen_one_stays_exact():
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model, copy = _small_model(), _small_model()
    model.get_layer("frozen").trainable = False
    ema = ModelEMA(model, copy, tau=1.0)  # a short ramp: after a few updates the average lags clearly
    assert [tuple(w.shape) for w in ema.weights] == [tuple(w.shape) for w in model.weights]
    start = model.get_weights()
    optimizer = keras.optimizers.SGD(0.1)
    data = tf.random.stateless_normal((4, 4), seed=(1, 2))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum((model(data, training=True) - 1.0) ** 2)  # also moves the batch-norm statistics
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        ema.update()

    steps = []
    for _ in range(4):
        step()
        steps.append(model.get_weights())
    assert int(ema.updates.numpy()) == 4
    expected = _reference(start, steps, tau=1.0)
    paths = [w.path for w in model.weights]
    assert {"bn/moving_mean", "bn/moving_variance", "frozen/kernel"} <= set(paths)
    for path, got, want, raw, initial in zip(paths, copy.get_weights(), expected, steps[-1], start, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7, err_msg=path)
        if path.startswith("frozen/"):  # never moved: the average is it, bit for bit
            np.testing.assert_array_equal(got, initial)
        elif path != "dense/bias":  # (a bias before a batch norm gets no gradient)
            assert np.abs(raw - initial).max() > 1e-3 and _lags(got, raw, initial), path


def test_reset_copies_the_model_and_clears_the_count():
    import tensorflow as tf

    model, copy = _small_model(), _small_model()
    ema = ModelEMA(model, copy)
    tf.function(ema.update)()
    model.get_layer("dense").kernel.assign(np.ones((3, 5), np.float32))
    ema.reset()
    assert int(ema.updates.numpy()) == 0
    for a, b in zip(copy.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="weights"):
        import keras

        ModelEMA(model, keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


MIRRORED = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from tests.utils.training.test_ema import _small_model
from utils.training.ema import ModelEMA
keras.utils.set_random_seed(0)
strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
with strategy.scope():
    model, copy = _small_model(), _small_model()
    model.get_layer("bn").synchronized = True
    ema = ModelEMA(model, copy, tau=3.0)
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
start = model.get_weights()

def replica_step(x):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=True) ** 2) / 4.0
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    ema.update()

@tf.function
def step(batch):
    strategy.run(replica_step, args=(batch,))

data = tf.data.Dataset.from_tensor_slices(np.random.default_rng(0).normal(size=(12, 4)).astype("float32")).batch(4)
steps = []
for batch in strategy.experimental_distribute_dataset(data):
    step(batch)
    steps.append([w.tolist() for w in model.get_weights()])
copies = [[strategy.experimental_local_results(w.value)[i].numpy().tolist() for w in ema.weights] for i in range(2)]
json.dump({"start": [w.tolist() for w in start], "steps": steps, "copies": copies,
           "updates": [int(v.numpy()) for v in strategy.experimental_local_results(ema.updates.value)]},
          open(sys.argv[1], "w"))
"""


@pytest.mark.slow
def test_under_mirrored_strategy_each_replica_averages_its_own_copy(tmp_path):
    """Two replicas (logical CPUs), three steps: both copies of the average equal the formula on the weights."""
    out = tmp_path / "ema.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["updates"] == [3, 3]
    expected = _reference(result["start"], result["steps"], tau=3.0)
    for copy in result["copies"]:
        for got, want in zip(copy, expected, strict=True):
            np.testing.assert_allclose(np.array(got), want, rtol=2e-6, atol=1e-7)
    raw, initial = result["steps"][-1], result["start"]
    lagging = [_lags(np.array(g), np.array(r), np.array(i)) for g, r, i in zip(copy, raw, initial, strict=True)]
    assert sum(lagging) >= 4  # the kernels, the scale, the offset, the statistics: not just copies of the weights


@pytest.mark.slow
def test_the_trainer_saves_the_average_of_its_steps(tmp_path):
    """Three real train steps in the frozen phase: the saved .keras holds the formula applied to the
    raw weights after each step (batch-norm statistics included), not the raw weights; the frozen
    backbone's average is its weights exactly."""
    import keras

    import nets.yolo  # noqa: F401  (registers YoloV4Tiny for loading)
    from utils.data.demo import write_demo_dataset
    from utils.training.config import TrainConfig
    from utils.training.trainer import Trainer, take_batches

    data = write_demo_dataset(tmp_path / "data", splits={"train": 6}, image_size=64, seed=0)
    config = TrainConfig(
        data=str(data), classes=str(data / "classes.txt"), input_size="64", epochs=2, freeze_epochs=1,
        freeze_batch_size=2, optimizer="adam", lr=4e-3, eval_period=0, save_dir=str(tmp_path / "run"),
    )  # fmt: skip
    trainer = Trainer(config)
    trainer.setup()
    trainer.ema.tau = 2.0  # before the step is traced: a short ramp, so the average lags the weights clearly
    start = trainer.model.get_weights()
    steps = []
    for batch in take_batches(trainer.train_batches(0), 3):
        trainer.optimizer.learning_rate = 4e-3
        trainer.train_step(batch)
        steps.append(trainer.model.get_weights())
    trainer.save_model(tmp_path / "saved.keras")
    saved = keras.saving.load_model(tmp_path / "saved.keras")
    expected = _reference(start, steps, tau=2.0)
    paths = [w.path for w in trainer.model.weights]
    backbone = trainer.backbone_names
    lagging = set()
    for path, got, want, raw, initial in zip(paths, saved.get_weights(), expected, steps[-1], start, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=path)
        if path.split("/")[0] in backbone:
            np.testing.assert_array_equal(got, initial, err_msg=path)
        elif np.abs(raw - initial).max() > 1e-5 and _lags(got, raw, initial):
            lagging.add(path.rsplit("/", 1)[-1])
    # The neck and heads trained, and the saved weights trail them: kernels, biases, scales, statistics.
    assert lagging >= {"kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance"}
    assert int(trainer.ema.updates.numpy()) == 3
