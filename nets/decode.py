"""From a raw YOLO head to boxes, the way darknet's [yolo] layer decodes them.

For the cell at column i, row j and anchor (a_w, a_h), with head size (H, W) and network input
size (in_h, in_w) in pixels:

    x = (i + sigmoid(tx) * s - (s - 1) / 2) / W * in_w
    y = (j + sigmoid(ty) * s - (s - 1) / 2) / H * in_h
    w = exp(tw) * a_w          h = exp(th) * a_h          (anchors are in input pixels)

with s = scale_x_y. Boxes come out as pixel `center_xywh` in the letterboxed network input (see
utils.boxes). Training (the loss) and inference both use this function.
"""

from __future__ import annotations

from collections.abc import Sequence

from keras import ops


def decode_head(
    raw,
    anchors: Sequence[Sequence[float]],
    num_classes: int,
    input_hw: tuple,
    scale_x_y: float = 1.0,
):
    """Decode one raw head (keras.ops: any Keras backend, and inside TensorFlow and XLA graphs).

    Args:
        raw: (N, H, W, A * (5 + num_classes)) raw head output (any float dtype).
        anchors: (A, 2) widths and heights, in network-input pixels, of this head's anchors.
        num_classes: C.
        input_hw: network input (height, width) in pixels; Python ints or scalar tensors.
        scale_x_y: darknet's centre scale.

    Returns:
        boxes: (N, H, W, A, 4) float32, pixel center_xywh in the network input.
        objectness_logit: (N, H, W, A) float32, before sigmoid.
        class_logits: (N, H, W, A, C) float32, before sigmoid.
    """
    raw = ops.cast(raw, "float32")
    anchors = ops.convert_to_tensor(anchors, "float32")
    num_anchors = anchors.shape[0]
    shape = ops.shape(raw)
    grid_h, grid_w = shape[1], shape[2]
    raw = ops.reshape(raw, (shape[0], grid_h, grid_w, num_anchors, 5 + num_classes))

    col_grid, row_grid = ops.meshgrid(ops.arange(grid_w, dtype="float32"), ops.arange(grid_h, dtype="float32"))
    grid = ops.stack([col_grid, row_grid], axis=-1)[None, :, :, None, :]  # (1, H, W, 1, 2)

    grid_wh = ops.cast(ops.stack([grid_w, grid_h]), "float32")
    input_wh = ops.cast(ops.stack([input_hw[1], input_hw[0]]), "float32")
    xy = (grid + ops.sigmoid(raw[..., :2]) * scale_x_y - (scale_x_y - 1.0) / 2.0) / grid_wh * input_wh
    wh = ops.exp(raw[..., 2:4]) * anchors
    return ops.concatenate([xy, wh], axis=-1), raw[..., 4], raw[..., 5:]
