"""The optimizers: Nesterov SGD or Adam, with weight decay on convolution kernels only.

Weight decay comes in two kinds (`--weight-decay-mode`):

* "coupled" (SGD's default): L2, `decay * w` added to the kernel's gradient before the momentum
  (or Adam's moments) see it, as darknet (`decay` in the cfg), PyTorch's `SGD(weight_decay=...)`
  (ultralytics, bubbliiiing's yolov4-tiny-pytorch) and Keras' `l2` regularizers (bubbliiiing's
  yolov4-tiny-tf2) do. With momentum m the decay accumulates in the velocity, so in the steady
  state a kernel shrinks by lr * decay / (1 - m) * w a step: 15.9 x lr * decay at m = 0.937.
* "decoupled" (Adam's default, AdamW): the kernel is multiplied by 1 - lr * decay after the step,
  outside the momentum (Keras' `weight_decay` argument). At the same `--weight-decay` it is 1 - m
  times weaker than coupled L2 under SGD with momentum (1/16 at m = 0.937).

Only kernels decay (convolutions, the attention blocks' convolutions and dense layers): no
batch-norm scale or offset and no bias, as darknet and the references decay only kernels.
"""

from __future__ import annotations

import re

import keras
from keras import ops

WEIGHT_DECAY_MODES = ("coupled", "decoupled")
# Trainable variables by name: what decays. Batch norms hold gamma and beta, convolutions bias.
DECAYED_NAMES = ("kernel",)
NOT_DECAYED_NAMES = ("gamma", "beta", "bias")
_REPLICA_SUFFIX = re.compile(r"/replica_\d+$")


def is_decayed(variable) -> bool:
    """Whether weight decay applies to `variable`: a Keras variable ("kernel") or the backend
    variable the optimizer's update step receives ("conv_0/kernel:0"; under MirroredStrategy the
    other replicas' copies are "conv_0/kernel/replica_1:0")."""
    path = _REPLICA_SUFFIX.sub("", str(variable.name).split(":")[0])
    return path.rsplit("/", 1)[-1] in DECAYED_NAMES


class _CoupledL2:
    """Mixin: adds `l2 * w` to the gradient of every decayed variable before the update step."""

    def __init__(self, *args, l2: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2 and is_decayed(variable):
            decay = ops.multiply(ops.cast(self.l2, variable.dtype), variable)
            gradient = ops.add(ops.cast(gradient, variable.dtype), decay)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


@keras.saving.register_keras_serializable(package="yolov4_tiny")
class SGDL2(_CoupledL2, keras.optimizers.SGD):
    """keras.optimizers.SGD with coupled L2 weight decay `l2` on kernels (see the module docstring)."""


@keras.saving.register_keras_serializable(package="yolov4_tiny")
class AdamL2(_CoupledL2, keras.optimizers.Adam):
    """keras.optimizers.Adam with coupled L2 weight decay `l2` on kernels (Adam + L2, not AdamW)."""


def make_optimizer(name: str, lr: float, momentum: float, weight_decay: float, mode: str):
    """The training optimizer.

    Args:
        name: "sgd" (Nesterov, momentum `momentum`) or "adam" (beta_1 `momentum`).
        lr: the initial learning rate (the trainer sets it every step).
        weight_decay: the decay of kernels (0: none).
        mode: "coupled" (L2 added to the gradient) or "decoupled" (AdamW-style).
    """
    if mode not in WEIGHT_DECAY_MODES:
        raise ValueError(f"weight decay mode must be one of {WEIGHT_DECAY_MODES}, got {mode!r}")
    coupled = weight_decay if mode == "coupled" else 0.0
    decoupled = weight_decay if mode == "decoupled" and weight_decay else None
    if name == "sgd":
        optimizer = SGDL2(lr, momentum=momentum, nesterov=True, weight_decay=decoupled, l2=coupled)
    elif name == "adam":
        optimizer = AdamL2(lr, beta_1=momentum, weight_decay=decoupled, l2=coupled)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")
    if decoupled:
        optimizer.exclude_from_weight_decay(var_names=list(NOT_DECAYED_NAMES))
    return optimizer
