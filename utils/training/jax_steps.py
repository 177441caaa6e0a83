"""The train and val steps on Keras' JAX backend, each one jitted function (XLA), without TensorFlow.

The TensorFlow steps (utils/training/trainer.py, `Trainer._make_steps`) are tf.functions over a
tf.distribute strategy. Here the same step is written once in the stateless form Keras documents for
custom JAX loops:

    train_step(batch)
        values of every variable it touches (the model's trainable and non-trainable ones, the
        optimizer's, the weight average's and its update count)
        -> jit: grad of the loss (model.stateless_call, utils.training.loss.YoloLoss.batch_loss) with
           respect to the trainable values; then the optimizer's update and the weight average's,
           run in a keras.StatelessScope that holds every value (so the optimizer, its weight decay
           and ModelEMA.update are the very code TensorFlow runs)
        -> the new values assigned back to the variables (on JAX an assignment replaces a reference)

    val_step(batch)
        the evaluated model (the weight average with --ema) in inference mode, and the loss

The variables are read at each call, so what the trainer does between steps (the learning rate it
sets, a checkpoint it loads) is what the next step uses. The trainable set is the one at the time the
steps are made: the trainer makes them again when the phase (frozen backbone or not) changes, and
the optimizer updates the trainable subset only (`optimizer.apply` with those variables; the frozen
ones keep their values and slots, as on TensorFlow).

`--strategy mirrored` (`DataParallel`): keras.distribution's data parallelism over the local
devices. The variables are made in its scope, so they are replicated on every device; each batch is
split over the devices along its first axis (`keras.distribution.distribute_tensor`), and XLA's
partitioner runs the step's global computation on the shards: the gradients of the global batch's
loss are all-reduced, and batch norm computes its statistics over the global batch, as TensorFlow's
synchronised batch norm does.

`--strategy multi-worker` (several hosts): JAX's multi-process runtime, started by
`keras.distribution.initialize()` from KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES and
_PROCESS_ID (`start_processes`). Every process runs the same program: the same DataParallel, now
over every process's devices; each process loads its share of the global batch
(`YoloDataset.batches(..., pipeline_id=process_index, num_pipelines=process_count)`), and the
shares become one global array (`jax.make_array_from_process_local_data`), so the step is the
one-process step over the global batch.
"""

from __future__ import annotations

import os

from utils.training.config import ConfigError

# What keras.distribution.initialize() reads on each process (--strategy multi-worker on JAX).
PROCESS_VARIABLES = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)


def start_processes() -> None:
    """Join JAX's multi-process runtime (once per process, before JAX computes anything); raises
    ConfigError naming the environment variables that are missing."""
    import jax
    import keras

    if jax.distributed.is_initialized():
        return
    missing = [name for name in PROCESS_VARIABLES if not os.environ.get(name)]
    if missing:
        raise ConfigError(
            f"--strategy multi-worker on JAX needs {', '.join(missing)} on every process (the coordinator's "
            "host:port first in the addresses, the number of processes, this process's index from 0); see "
            "docs/training.md#on-jax"
        )
    keras.distribution.initialize()


class DataParallel:
    """What the trainer uses of a strategy, for --strategy mirrored and multi-worker on JAX:
    keras.distribution's DataParallel over every device (GPUs, else the CPU devices) of every
    process (one process unless start_processes() joined several)."""

    def __init__(self):
        import jax
        import keras

        devices = keras.distribution.list_devices()
        self.distribution = keras.distribution.DataParallel(devices=devices)
        self.num_replicas_in_sync = len(devices)
        self.process_index, self.process_count = jax.process_index(), jax.process_count()

    def scope(self):
        """Variables made here are replicated on every device."""
        return self.distribution.scope()


def make_jax_steps(
    model, loss_fn, optimizer, ema, batch_size: int, eval_model, val_batch: int, compute_dtype: str,
    distribution=None,
):  # fmt: skip
    """(train_step, val_step) for the current trainable set, each taking a batch (uint8 images
    (B, H, W, 3), float32 gt (B, T, 5), NumPy) and returning (loss, {"box", "obj", "cls"}) as
    scalars divided by the batch size (`batch_size` for training, `val_batch` for validation).
    `distribution`: a keras.distribution.Distribution to split each batch over its devices; with
    several processes each passes its share of the batch (the global batch's rows of its devices)."""
    import jax
    import keras
    from keras import ops

    processes = jax.process_count()

    def place(batch):
        if distribution is None:
            return batch
        if processes == 1:
            return tuple(keras.distribution.distribute_tensor(x, distribution.get_data_layout(x.shape)) for x in batch)
        placed = []
        for x in batch:
            shape = (x.shape[0] * processes, *x.shape[1:])
            layout = distribution.get_data_layout(shape).backend_layout
            placed.append(jax.make_array_from_process_local_data(layout, x, shape))
        return tuple(placed)

    trainable = list(model.trainable_variables)
    non_trainable = list(model.non_trainable_variables)
    state = [*trainable, *non_trainable, *optimizer.variables]
    if ema is not None:
        state += [*ema.weights, ema.updates]
    if len({id(variable) for variable in state}) != len(state):
        raise RuntimeError("a variable is shared between the model, the optimizer and the weight average")
    sizes = (len(trainable), len(non_trainable))

    def loss_of(trainable_values, non_trainable_values, images, gt):
        x = ops.cast(images, compute_dtype) / 255.0
        outputs, non_trainable_values = model.stateless_call(trainable_values, non_trainable_values, x, training=True)
        loss, parts = loss_fn.batch_loss(outputs, gt, batch_size)
        return loss, (parts, non_trainable_values)

    gradient = jax.value_and_grad(loss_of, has_aux=True)

    @jax.jit
    def train(values, images, gt):
        trainable_values = values[: sizes[0]]
        non_trainable_values = values[sizes[0] : sum(sizes)]
        (loss, (parts, non_trainable_values)), grads = gradient(trainable_values, non_trainable_values, images, gt)
        current = [*trainable_values, *non_trainable_values, *values[sum(sizes) :]]
        with keras.StatelessScope(state_mapping=list(zip(state, current, strict=True))) as scope:
            optimizer.apply(grads, trainable)
            if ema is not None:
                ema.update()
        return loss, parts, [scope.get_current_value(variable) for variable in state]

    def train_step(batch):
        images, gt = place(batch)
        loss, parts, values = train([variable.value for variable in state], images, gt)
        for variable, value in zip(state, values, strict=True):
            variable.assign(value)
        return loss, parts

    @jax.jit
    def validate(trainable_values, non_trainable_values, images, gt):
        x = ops.cast(images, compute_dtype) / 255.0
        outputs, _ = eval_model.stateless_call(trainable_values, non_trainable_values, x, training=False)
        return loss_fn.batch_loss(outputs, gt, val_batch)

    def val_step(batch):
        images, gt = place(batch)
        trainable_values = [variable.value for variable in eval_model.trainable_variables]
        non_trainable_values = [variable.value for variable in eval_model.non_trainable_variables]
        return validate(trainable_values, non_trainable_values, images, gt)

    return train_step, val_step
