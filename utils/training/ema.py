"""An exponential moving average of the model's weights (ultralytics' ModelEMA, for Keras).

The average covers every weight of the model: kernels, biases, batch-norm scales and offsets
(trainable or frozen) and the batch-norm moving statistics. After optimizer step `n` (from 1):

    d(n) = DECAY * (1 - exp(-n / TAU))              DECAY 0.9999, TAU 2000 updates
    ema  = d(n) * ema + (1 - d(n)) * weights        computed as ema -= (1 - d(n)) * (ema - weights)

The ramp makes d small at first (d(1) = 0.0005, d(100) = 0.049, d(2000) = 0.63), so on a short
run the average stays close to the latest weights instead of dragging the random start along. The
second form is the same average, and leaves a weight that did not move (a frozen layer) bit for bit
as it was.

The average lives in a second model of the same architecture (`ema_model`), so it is evaluated
and saved like any model. `update()` is keras.ops: it runs inside the train step, whatever the
backend. On TensorFlow that is a tf.function, in replica context under a tf.distribute strategy:
each replica averages its own copy of the weights into its own copy of the average (the replicas'
weights are equal after the all-reduced step), so no value crosses devices. On JAX it runs in the
jitted step's keras.StatelessScope (utils/training/steps_jax.py), which holds every variable's
value, the average's and its update count included.
"""

from __future__ import annotations

import math

DECAY = 0.9999
TAU = 2000.0


def ema_decay(updates: int | float, decay: float = DECAY, tau: float = TAU) -> float:
    """d after `updates` updates (the weight the average keeps; 1 - d goes to the new weights)."""
    return decay * (1.0 - math.exp(-updates / tau))


class ModelEMA:
    """The moving average of `model`'s weights, held in `ema_model` (same architecture).

    Create it, and call `update()`, in the scope of the strategy that made `model`. `ema_model`
    starts as a copy of `model`; `updates` (a non-trainable integer variable: int64 on TensorFlow,
    int32 on JAX and torch) counts the updates.

    `decay` and `tau` are read when the train step is traced: change them before the first step.
    """

    def __init__(self, model, ema_model, decay: float = DECAY, tau: float = TAU):
        import keras

        if [tuple(w.shape) for w in model.weights] != [tuple(w.shape) for w in ema_model.weights]:
            raise ValueError("ModelEMA: the average's model does not have the model's weights")
        self.model, self.ema_model = model, ema_model
        self.decay, self.tau = float(decay), float(tau)
        # "int": int64 on TensorFlow, int32 on JAX (without x64) and torch, as Keras' optimizer counts its steps.
        self.updates = keras.Variable(0, dtype="int", trainable=False, name="ema_updates")
        # model.weights, not trainable_weights: frozen layers and batch-norm statistics are averaged too.
        self.pairs = list(zip(ema_model.weights, model.weights, strict=True))
        self.reset()

    def reset(self) -> None:
        """The average := the model's current weights, no update counted."""
        self.ema_model.set_weights(self.model.get_weights())
        self.updates.assign(0)

    def update(self) -> None:
        """One update, inside the train step (a tf.function, or JAX's stateless scope)."""
        from keras import ops

        self.updates.assign_add(1)
        n = ops.cast(self.updates, "float32")
        keep = self.decay * (1.0 - ops.exp(-n / self.tau))
        for average, weight in self.pairs:
            average.assign_sub((1.0 - keep) * (average - weight))

    @property
    def weights(self) -> list:
        """The average's variables, in `model.weights` order."""
        return self.ema_model.weights
