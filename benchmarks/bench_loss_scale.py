"""Loss normalisation: per-term gradient size of our "sum" loss against the reference's "mean" one.

    python benchmarks/bench_loss_scale.py                  # 416 and the demo's 128, phi 4, batch 16
    python benchmarks/bench_loss_scale.py --sizes 416 --batch-size 64

The learning rates this project inherits (SGD 1e-2, Adam 1e-3 at batch 64) come from bubbliiiing's
yolov4-tiny recipe, whose loss is a mean per term (utils.training.loss, normalization "mean");
ours by default is darknet's per-image sum ("sum"). On one augmented batch of generated shapes
images (utils.data.demo, as --demo trains on), with a fresh model and its head priors, this prints
for each term (box, objectness, class) its value and the global norm of its gradient over every
trainable weight under both normalisations, and the ratio sum / mean of the gradient norms: how
much larger a step the same learning rate takes here than in the recipe it came from.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TERMS = ("box", "obj", "cls")


def gradient_norms(model, loss_fn, images, gt, batch_size: int) -> dict[str, tuple[float, float]]:
    """term -> (its value, the global norm of its gradient) for `loss_fn.batch_loss`."""
    import tensorflow as tf

    result = {}
    for term in TERMS:
        with tf.GradientTape() as tape:
            _, parts = loss_fn.batch_loss(model(images, training=True), gt, batch_size)
            value = parts[term]
        grads = [g for g in tape.gradient(value, model.trainable_variables) if g is not None]
        result[term] = (float(value), float(tf.linalg.global_norm(grads)))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[416, 128], help="input sizes (multiples of 32)")
    parser.add_argument("--phi", type=int, default=4, help="attention (the demo's 4)")
    parser.add_argument("--batch-size", type=int, default=16, help="images in the batch")
    parser.add_argument("--images", type=int, default=64, help="generated training images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from utils.cli import setup_logging

    setup_logging(logging.WARNING)  # the library's warnings (an ONNX fallback, ...) on stderr

    import keras
    import tensorflow as tf

    from nets.attention import PHI_TO_ATTENTION
    from nets.yolo import YoloV4Tiny
    from utils.data.dataset import YoloDataset
    from utils.data.demo import DEMO_CLASSES, write_demo_dataset
    from utils.data.sources import open_data
    from utils.training.loss import YoloLoss
    from utils.training.trainer import init_head_biases

    with tempfile.TemporaryDirectory() as tmp:
        root = write_demo_dataset(Path(tmp) / "shapes", splits={"train": args.images}, image_size=128, seed=args.seed)
        images = [image.without_difficult() for image in open_data(root).read(["train"], list(DEMO_CLASSES)).images]
        for size in args.sizes:
            keras.utils.set_random_seed(args.seed)
            data = YoloDataset(images, (size, size), mosaic_prob=0.3, mixup_prob=0.0, seed=args.seed)
            batch_images, gt = next(iter(data.dataset(args.batch_size, epoch=0, mosaic=True)))
            model = YoloV4Tiny(len(DEMO_CLASSES), attention=PHI_TO_ATTENTION[args.phi], input_shape=(size, size, 3))
            init_head_biases(model, (size, size))
            inputs = tf.cast(batch_images, tf.float32) / 255.0
            boxes = int(tf.reduce_sum(tf.cast(gt[..., 4] >= 0, tf.int32)))
            print(f"input {size}x{size}, phi {args.phi}, batch {args.batch_size} ({boxes} boxes):")
            norms = {}
            for normalization in ("sum", "mean"):
                loss_fn = YoloLoss(model.anchors, model.anchors_mask, model.num_classes,
                                   scale_x_y=model.scale_x_y, normalization=normalization)  # fmt: skip
                norms[normalization] = gradient_norms(model, loss_fn, inputs, gt, args.batch_size)
                cells = ", ".join(f"{t} {v:.4g} (|grad| {g:.4g})" for t, (v, g) in norms[normalization].items())
                print(f"  {normalization:>4}: {cells}")
            ratios = ", ".join(f"{t} {norms['sum'][t][1] / max(norms['mean'][t][1], 1e-12):.0f}x" for t in TERMS)
            print(f"  gradient norm ratio sum / mean: {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
