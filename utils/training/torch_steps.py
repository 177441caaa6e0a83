"""The train and val steps on Keras' torch backend, without TensorFlow.

The same step as TensorFlow's (utils/training/trainer.py, `Trainer._make_steps`) and JAX's
(utils/training/jax_steps.py), in the form Keras' own torch trainer uses: the forward and the loss
(utils.training.loss.YoloLoss.batch_loss) run eagerly, torch's autograd gives the gradients of the
trainable variables, then the same optimizer (its weight decay included) and the same
`ModelEMA.update` run under `torch.no_grad()`.

The trainable set is the one at the time the steps are made: the trainer makes them again when the
phase (frozen backbone or not) changes. One device: `--strategy mirrored` is refused on torch
(`Trainer`'s check_backend).
"""

from __future__ import annotations


def make_torch_steps(model, loss_fn, optimizer, ema, batch_size: int, eval_model, val_batch: int, compute_dtype: str):
    """(train_step, val_step) for the current trainable set, each taking a batch (uint8 images
    (B, H, W, 3), float32 gt (B, T, 5), NumPy) and returning (loss, {"box", "obj", "cls"}) as
    scalars divided by the batch size (`batch_size` for training, `val_batch` for validation)."""
    import torch
    from keras import ops

    trainable = list(model.trainable_variables)

    def inputs(batch):
        images, gt = batch
        return ops.cast(ops.convert_to_tensor(images), compute_dtype) / 255.0, ops.convert_to_tensor(gt)

    def train_step(batch):
        x, gt = inputs(batch)
        for variable in trainable:
            variable.value.grad = None
        loss, parts = loss_fn.batch_loss(model(x, training=True), gt, batch_size)
        loss.backward()
        with torch.no_grad():
            optimizer.apply([variable.value.grad for variable in trainable], trainable)
            if ema is not None:
                ema.update()
        return loss.detach(), {name: value.detach() for name, value in parts.items()}

    def val_step(batch):
        x, gt = inputs(batch)
        with torch.no_grad():
            return loss_fn.batch_loss(eval_model(x, training=False), gt, val_batch)

    return train_step, val_step
