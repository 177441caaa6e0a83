"""What a model looks at: its attention blocks' weights, and class activation maps of its detections.

Both read the Keras model (TensorFlow backend) through sub-models that expose intermediate tensors
by the public `layer.input` / `layer.output`; exported models (ONNX, TFLite) have no layers to read.

    probe = AttentionProbe(model)           # phi 1-5 or --fusion weighted; else NoAttentionError
    maps = probe(images)                    # one AttentionMap per insertion point, values (N, h, w)
    cam = GradCam(model)
    found = cam.explain(images, conf=0.5, nms_iou=0.3, top=4)   # per image, its best detections

`images` are float32 (N, in_h, in_w, 3) in [0, 1], letterboxed (`Detector.preprocess` / 255).

Attention maps, one value per pixel of the feature map at each of the model's insertion points
(by default feat1, feat2 and the P5 upsample; `model.attention_layers`, nets.yolo.INSERTION_POINTS),
from the blocks' own `attention_weights(x)`, then the weighted fusion's, if the model has one:

    CBAM    its spatial weight (computed after its channel attention), in (0, 1)
    CA      row weight x column weight, averaged over the channels: (1/C) a_h @ a_w^T, an (H, W)
            sum of outer products, in (0, 1)
    SE/ECA  their channel weights w are the same at every pixel; what they do per pixel is keep a
            share of its activation energy, ||x * w||^2 / ||x||^2 (over the channels), in (0, 1):
            high where the channels the block keeps dominate, low where those it damps do.
    (blocks built with identity_init gate with 2 * sigmoid: their weights lie in (0, 2), and the
    energy kept by SE/ECA in (0, 4); 1 is "unchanged")
    SA      self-attention: the attention each position receives, the mean over the query positions
            of its softmax weight, times H * W: 1 where it gets a uniform share, more where many
            positions look at it. It is added to x scaled by gamma (printed in the caption): at
            gamma 0 the block does nothing yet, whatever the map shows.
    fusion  --fusion weighted: the P5 upsample's share of the fused activation energy at each
            pixel, ||t_up||^2 / (||t_up||^2 + ||t_feat1||^2), t the weighted projections, in [0, 1].

Grad-CAM (Selvaraju et al., ICCV 2017) at the two head inputs (the inputs of conv_29 and conv_36,
13x13x512 and 26x26x256 at 416). The target is the detection's score, sigmoid(objectness) x
sigmoid(class logit) at its head, cell and anchor; channel weights are the spatial mean of its
gradient, the map is ReLU(sum over channels of weight x activation), upsampled to the network
input. The heads are 1x1 convolutions, so the gradient is non-zero at the detection's own cell
only: the map shows where in the image the features carry what this score responds to, the object
itself first, and other places that look like it. Only the detection's own head contributes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import keras
import numpy as np
import tensorflow as tf

from nets.attention import CoordAttention, SelfAttention
from nets.fusion import WeightedFusion
from nets.model_data import HEAD_CONV_INDICES
from nets.yolo import ATTENTION_POINTS, FUSION_LAYER
from utils.errors import YoloError
from utils.inference.postprocess import decode_outputs, non_max_suppression


class ExplainError(YoloError, ValueError):
    """A model or setting the attention and CAM pictures cannot use; the message says why."""


class NoAttentionError(ExplainError):
    """A model without attention blocks (phi 0) has no attention to draw."""


@dataclass
class AttentionMap:
    """One insertion point's map.

    point: the block's layer name ("attention_<point>", or "fusion_34"). block: "se", "cbam", "eca",
    "ca", "sa", a user block's key, or "fusion".
    what: what the values are, for a caption. feature_shape: (h, w, C) of the feature map (the
    fusion: of its output).
    values: float32 (N, h, w), one value per feature-map pixel (see the module docstring).
    """

    point: str
    block: str
    what: str
    feature_shape: tuple[int, int, int]
    values: np.ndarray


def block_map(layer: keras.layers.Layer, x) -> tuple[str, np.ndarray]:
    """(what, values float32 (N, H, W)): what attention block `layer` does at each pixel of its input
    `x` (N, H, W, C) (the weighted fusion: its list of inputs), from its `attention_weights` (see the
    module docstring)."""
    if isinstance(layer, WeightedFusion):
        weights = layer.attention_weights([np.asarray(t, np.float32) for t in x])
        up, feat1 = (float(w) for w in np.asarray(weights["inputs"]))
        return f"P5 upsample's energy share (weights {up:.2f}/{feat1:.2f})", np.asarray(weights["spatial"], np.float32)
    x = np.asarray(x, np.float32)
    if isinstance(layer, SelfAttention):
        weights = layer.attention_weights(x)
        beta = np.asarray(weights["attention"], np.float32)  # (N, P, P): query rows, key columns
        received = beta.mean(axis=1) * beta.shape[-1]  # (N, P): 1 = a uniform share
        gamma = float(np.asarray(weights["gamma"]))
        return f"attention received (gamma {gamma:.3f})", received.reshape(x.shape[:3]).astype(np.float32)
    if isinstance(layer, CoordAttention):
        weights = layer.attention_weights(x, training=False)
        a_h, a_w = np.asarray(weights["height"]), np.asarray(weights["width"])  # (N, H, C), (N, W, C)
        return "row x column weight", np.einsum("nhc,nwc->nhw", a_h, a_w) / a_h.shape[-1]
    # CBAM, SE, ECA and user blocks (nets.attention's contract): "spatial" first, else "channel".
    weights = layer.attention_weights(x) if callable(getattr(layer, "attention_weights", None)) else {}
    if not isinstance(weights, dict):
        weights = {}
    if "spatial" in weights:
        return "spatial weight", np.asarray(weights["spatial"], np.float32)
    if "channel" in weights:
        w = np.asarray(weights["channel"], np.float32)[:, None, None, :]  # (N, 1, 1, C)
        energy = np.sum(x * x, axis=-1)
        kept = np.sum((x * w) ** 2, axis=-1)
        # A pixel without activation has nothing to keep or lose: 1.
        ratio = np.divide(kept, energy, out=np.ones_like(energy), where=energy > 1e-12)
        return "energy kept by the channel weights", ratio.astype(np.float32)
    raise ExplainError(
        f"{layer.name}: no attention map for a {type(layer).__name__} layer (its attention_weights(x) gives "
        "no 'spatial' (N, H, W) or 'channel' (N, C) entry)"
    )


class AttentionProbe:
    """The attention maps of a YoloV4Tiny with attention (phi 1-5) at its insertion points, and of its
    weighted fusion (--fusion weighted) if it has one."""

    def __init__(self, model):
        attention = getattr(model, "attention", "none")
        names = [] if attention == "none" else list(getattr(model, "attention_layers", ATTENTION_POINTS))
        if getattr(model, "fusion", "concat") == "weighted":
            names.append(FUSION_LAYER)
        if not names:
            raise NoAttentionError(
                f"{model.name} has no attention blocks (phi 0): there is no attention to draw; "
                "--mode attention needs a model trained with --phi 1-5 or --fusion weighted (--mode cam and "
                "heatmap work with any)"
            )
        self.block = attention
        self.layers = [model.get_layer(name) for name in names]
        # One flat list of tensors: the fusion's two inputs take two places.
        inputs = [layer.input if isinstance(layer.input, list) else [layer.input] for layer in self.layers]
        self._slots = [len(x) if isinstance(layer.input, list) else 0 for layer, x in zip(self.layers, inputs)]
        tensors = [t for x in inputs for t in x]
        self._inputs = keras.Model(model.input, tensors)

    def __call__(self, images: np.ndarray) -> list[AttentionMap]:
        """images: float32 (N, in_h, in_w, 3) in [0, 1]. Returns one AttentionMap per insertion point
        (network order), then the fusion's."""
        outputs = self._inputs(np.asarray(images, np.float32), training=False)
        features = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]  # one point: one tensor
        maps = []
        for layer, slots in zip(self.layers, self._slots, strict=True):
            x = [features.pop(0) for _ in range(slots)] if slots else features.pop(0)
            what, values = block_map(layer, x)
            out = layer.compute_output_shape([t.shape for t in x]) if slots else x.shape
            block = "fusion" if slots else self.block
            maps.append(AttentionMap(layer.name, block, what, tuple(int(v) for v in out[1:]), values))
        return maps


@dataclass
class ExplainedDetection:
    """One detection and its class activation map.

    box: (4,) float32 pixel xyxy in the network input. score: sigmoid(obj) x sigmoid(class).
    head: 0 for P5 (stride 32), 1 for P4 (stride 16). cell: (row, column) in that head.
    anchor: index into the model's anchors. cam: float32 (in_h, in_w) on the network input, in
    [0, 1] (its maximum is 1 unless it is zero everywhere).
    """

    box: np.ndarray
    score: float
    class_id: int
    head: int
    cell: tuple[int, int]
    anchor: int
    cam: np.ndarray


class GradCam:
    """Grad-CAM of a YoloV4Tiny's detections at its two head inputs (any phi)."""

    def __init__(self, model):
        heads = [model.get_layer(f"conv_{index}") for index in HEAD_CONV_INDICES]
        self.model = model
        self._probe = keras.Model(model.input, [*(h.input for h in heads), *(h.output for h in heads)])

    def explain(self, images: np.ndarray, conf: float, nms_iou: float, top: int) -> list[list[ExplainedDetection]]:
        """The `top` best detections of each image (score > conf, per-class NMS at nms_iou), each with
        its Grad-CAM. images: float32 (N, in_h, in_w, 3) in [0, 1]."""
        model = self.model
        images = tf.convert_to_tensor(np.asarray(images, np.float32))
        input_hw = (int(images.shape[1]), int(images.shape[2]))
        num_classes, masks = model.num_classes, model.anchors_mask
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(images)
            outputs = self._probe(images, training=False)
            features, heads = list(outputs[:2]), list(outputs[2:])
            scores = []  # per head (N, H, W, A, C): the score of every anchor and class
            for raw, mask in zip(heads, masks, strict=True):
                raw = tf.reshape(tf.cast(raw, tf.float32), [*raw.shape[:3], len(mask), 5 + num_classes])
                scores.append(tf.sigmoid(raw[..., 4:5]) * tf.sigmoid(raw[..., 5:]))
        boxes, flat_scores = decode_outputs(heads, model.anchors, masks, num_classes, input_hw, model.scale_x_y)
        kept_boxes, kept_scores, kept_classes, valid = (
            np.asarray(t) for t in non_max_suppression(boxes, flat_scores, conf, nms_iou, max(1, top))
        )
        boxes, flat_scores = np.asarray(boxes), np.asarray(flat_scores)
        sizes = [int(np.prod(s.shape[1:4])) for s in scores]  # H * W * A per head
        results = []
        for n in range(len(valid)):
            found = []
            for k in range(min(int(valid[n]), top)):
                box, score, class_id = kept_boxes[n, k], float(kept_scores[n, k]), int(kept_classes[n, k])
                # NMS returns a candidate's own box and score: find that candidate.
                error = np.abs(flat_scores[n, :, class_id] - score) + np.abs(boxes[n] - box).sum(axis=-1)
                index = int(np.argmin(error))
                head = int(np.searchsorted(np.cumsum(sizes), index, side="right"))
                local = index - sum(sizes[:head])
                _, grid_h, grid_w, num_anchors, _ = scores[head].shape
                cell, anchor = divmod(local, num_anchors)
                row, col = divmod(cell, grid_w)
                target = np.zeros(scores[head].shape, np.float32)
                target[n, row, col, anchor, class_id] = 1.0
                grads = tape.gradient(scores[head], features, output_gradients=tf.constant(target))
                cam = np.zeros(input_hw, np.float32)
                for feature, grad in zip(features, grads, strict=True):
                    if grad is None:  # the other head's input does not reach this score
                        continue
                    weights = np.mean(np.asarray(grad[n]), axis=(0, 1))  # (C,)
                    level = np.maximum(np.asarray(feature[n]) @ weights, 0.0).astype(np.float32)  # (h, w)
                    cam += cv2.resize(level, (input_hw[1], input_hw[0]), interpolation=cv2.INTER_LINEAR)
                peak = float(cam.max())
                found.append(
                    ExplainedDetection(
                        box=box.astype(np.float32),
                        score=score,
                        class_id=class_id,
                        head=head,
                        cell=(int(row), int(col)),
                        anchor=int(masks[head][anchor]),
                        cam=cam / peak if peak > 0 else cam,
                    )
                )
            results.append(found)
        del tape
        return results
