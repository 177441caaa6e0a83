import numpy as np
import pytest
import tensorflow as tf

from nets.model_data import ANCHORS_MASK, load_anchors
from utils.training.loss import YoloLoss


@pytest.fixture(scope="module")
def loss_fn():
    """The best anchor only (yolov4-tiny.cfg's rule), so each box has one positive per head it trains."""
    return YoloLoss(load_anchors(), ANCHORS_MASK, num_classes=2, scale_x_y=1.05, anchor_iou_thresh=1.0)


def _outputs(batch=2, size=64, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    return [
        tf.constant(rng.normal(0, 0.5, (batch, size // s, size // s, 3 * (5 + classes))), tf.float32) for s in (32, 16)
    ]


def test_assignment_best_anchor_and_shared_anchor(loss_fn):
    gt = np.full((1, 3, 5), -1.0, np.float32)
    gt[0, 0] = [0, 0, 81, 82, 1]  # exactly anchor 3, which both heads use
    gt[0, 1] = [100, 100, 140, 160, 0]  # 40x60: anchor 2 (37x58)
    assigned = loss_fn.assignment(tf.constant(gt)).numpy()
    assert assigned[0, 0].tolist() == [False, False, False, True, False, False]
    assert assigned[0, 1].tolist() == [False, False, True, False, False, False] and not assigned[0, 2].any()
    _, positive_p5, classes_p5 = loss_fn.level_targets(tf.constant(gt), 0, (7, 7))
    _, positive_p4, _ = loss_fn.level_targets(tf.constant(gt), 1, (14, 14))
    # centre (40.5, 41) -> P5 cell (1, 1) anchor slot 0 (anchor 3); P4 cell (2, 2) anchor slot 2 (anchor 3).
    assert positive_p5.numpy()[0, 1, 1, 0] == 1 and positive_p4.numpy()[0, 2, 2, 2] == 1
    np.testing.assert_array_equal(classes_p5.numpy()[0, 1, 1, 0], [0, 1])
    assert positive_p5.numpy().sum() == 1 and positive_p4.numpy().sum() == 2


def test_a_tiny_box_falls_back_to_the_best_anchor_a_head_uses(loss_fn):
    """A 6x8 box fits anchor 0 (10x14) best, which neither head uses (masks 3,4,5 and 1,2,3): it
    trains anchor 1 (23x27) on P4, its best anchor among those used, instead of nothing."""
    gt = tf.constant([[[60, 60, 66, 68, 1]]], tf.float32)
    assigned = loss_fn.assignment(gt).numpy()[0, 0]
    assert assigned.tolist() == [False, True, False, False, False, False]
    _, positive_p5, _ = loss_fn.level_targets(gt, 0, (4, 4))
    _, positive_p4, classes_p4 = loss_fn.level_targets(gt, 1, (8, 8))
    assert positive_p5.numpy().sum() == 0
    # centre (63, 64) -> P4 cell (row 4, col 3), slot 0 of mask 1,2,3 (anchor 1)
    assert positive_p4.numpy()[0, 4, 3, 0] == 1 and positive_p4.numpy().sum() == 1
    np.testing.assert_array_equal(classes_p4.numpy()[0, 4, 3, 0], [0, 1])


def test_extra_anchors_only_above_the_anchor_iou_threshold():
    """A 40x50 box: best anchor 2 (37x58, shape IoU 0.80); anchor 3 (81x82) has IoU 0.30 and
    anchor 1 (23x27) 0.31. By default (yolov4.cfg's iou_thresh 0.213) all three are positives;
    with 1 (yolov4-tiny.cfg sets no iou_thresh) only the best."""
    gt = tf.constant([[[20, 20, 60, 70, 0]]], tf.float32)
    best_only = YoloLoss(load_anchors(), ANCHORS_MASK, num_classes=2, anchor_iou_thresh=1.0).assignment(gt)
    extra = YoloLoss(load_anchors(), ANCHORS_MASK, num_classes=2).assignment(gt).numpy()
    assert best_only.numpy()[0, 0].tolist() == [False, False, True, False, False, False]
    assert extra[0, 0].tolist() == [False, True, True, True, False, False]


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_two_boxes_in_one_cell_and_anchor_the_better_fitting_one_is_the_target(loss_fn, order):
    """Two boxes centred in the same P4 cell whose best anchor is anchor 2 (37x58): the 36x56
    box (shape IoU 0.94 with it) is the target whatever the order, not the 48x48 one (0.66)."""
    boxes = np.array([[40, 36, 76, 92, 0], [34, 40, 82, 88, 1]], np.float32)  # centres (58, 64) both
    gt = tf.constant(boxes[list(order)][None])
    true_boxes, positive, classes = loss_fn.level_targets(gt, 1, (8, 8))
    positive = positive.numpy()
    assert positive.sum() == 1 and positive[0, 4, 3, 1] == 1  # cell (row 4, col 3), slot 1 = anchor 2
    np.testing.assert_allclose(true_boxes.numpy()[0, 4, 3, 1], [58, 64, 36, 56])
    np.testing.assert_array_equal(classes.numpy()[0, 4, 3, 1], [1, 0])


def test_label_smoothing():
    fn = YoloLoss(load_anchors(), ANCHORS_MASK, num_classes=4, label_smoothing=0.1)
    gt = tf.constant([[[0, 0, 81, 82, 2]]], tf.float32)
    _, positive, classes = fn.level_targets(gt, 0, (4, 4))
    picked = classes.numpy()[positive.numpy() == 1]
    assert len(picked) >= 1
    np.testing.assert_allclose(picked, np.tile([[0.025, 0.025, 0.925, 0.025]], (len(picked), 1)), atol=1e-6)


def test_images_without_boxes_are_safe(loss_fn):
    gt = tf.fill((2, 4, 5), -1.0)
    with tf.GradientTape() as tape:
        outputs = _outputs()
        for o in outputs:
            tape.watch(o)
        loss, parts = loss_fn(outputs, gt)
    grads = tape.gradient(loss, outputs)
    assert loss.shape == (2,) and np.isfinite(loss.numpy()).all()
    np.testing.assert_array_equal(parts["box"].numpy(), 0)
    np.testing.assert_array_equal(parts["cls"].numpy(), 0)
    assert (parts["obj"].numpy() > 0).all()
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    # No boxes at all (T = 0) works too.
    loss, _ = loss_fn(outputs, tf.zeros((2, 0, 5)))
    assert np.isfinite(loss.numpy()).all()


def test_loss_is_per_image(loss_fn):
    outputs = _outputs()
    gt = np.full((2, 2, 5), -1.0, np.float32)
    gt[0, 0] = [10, 10, 40, 50, 0]
    gt[1, 0] = [5, 20, 60, 60, 1]
    both, _ = loss_fn(outputs, tf.constant(gt))
    first, _ = loss_fn([o[:1] for o in outputs], tf.constant(gt[:1]))
    np.testing.assert_allclose(both.numpy()[:1], first.numpy(), rtol=1e-5)


@pytest.mark.slow
def test_one_step_lowers_the_loss():
    import keras

    from nets.yolo import YoloV4Tiny

    keras.utils.set_random_seed(0)
    model = YoloV4Tiny(2, attention="eca", input_shape=(64, 64, 3))
    loss_fn = YoloLoss(model.anchors, model.anchors_mask, 2, scale_x_y=model.scale_x_y)
    images = tf.random.stateless_uniform((2, 64, 64, 3), seed=(1, 2))
    gt = tf.constant([[[8, 8, 40, 44, 0], [0, 0, 0, 0, -1]], [[20, 10, 60, 50, 1], [2, 30, 30, 62, 0]]], tf.float32)
    optimizer = keras.optimizers.Adam(1e-3)

    def loss_value():
        return tf.reduce_mean(loss_fn(model(images, training=True), gt)[0])

    before = float(loss_value())
    with tf.GradientTape() as tape:
        loss = loss_value()
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    after = float(loss_value())
    assert after < before


def _softplus(x):
    return float(np.log1p(np.exp(x)))


def _empty_heads(size=64, classes=2):
    """Raw heads of zeros (P5 then P4) for a size x size input, as float32 NumPy arrays."""
    return [np.zeros((1, size // s, size // s, 3 * (5 + classes)), np.float32) for s in (32, 16)]


def test_objectness_is_weighted_per_level():
    """Without objects every anchor's objectness is a negative: BCE = softplus(logit), summed per
    head and weighted 0.4 on P5 and 1.0 on P4 by default (or by `balance`)."""
    p5, p4 = _empty_heads()
    p5[..., 4::7], p4[..., 4::7] = 1.5, -0.5
    gt = tf.fill((1, 1, 5), -1.0)
    per_p5, per_p4 = 2 * 2 * 3 * _softplus(1.5), 4 * 4 * 3 * _softplus(-0.5)
    default = YoloLoss(load_anchors(), ANCHORS_MASK, num_classes=2)
    custom = YoloLoss(load_anchors(), ANCHORS_MASK, num_classes=2, balance=(2.0, 0.5))
    outputs = [tf.constant(p5), tf.constant(p4)]
    np.testing.assert_allclose(default(outputs, gt)[1]["obj"].numpy(), [0.4 * per_p5 + 1.0 * per_p4], rtol=1e-5)
    np.testing.assert_allclose(custom(outputs, gt)[1]["obj"].numpy(), [2.0 * per_p5 + 0.5 * per_p4], rtol=1e-5)


def test_negatives_overlapping_a_ground_truth_above_the_ignore_threshold_are_ignored():
    """A 20x20 box centred at (16, 16) trains anchor 1 on P4 only. On P5 cell (0, 0), which it does
    not train, anchor slot 0 predicts exactly that box (IoU 1) and slot 1 a 25x25 box on the same
    centre (IoU 0.64): their objectness loss counts only while the IoU is not above the threshold."""
    anchors = load_anchors()
    p5, p4 = _empty_heads()
    for slot, side, logit in ((0, 20.0, 2.0), (1, 25.0, 1.0)):
        anchor_w, anchor_h = anchors[ANCHORS_MASK[0][slot]]
        p5[0, 0, 0, slot * 7 : slot * 7 + 5] = [0.0, 0.0, np.log(side / anchor_w), np.log(side / anchor_h), logit]
    gt = tf.constant([[[6, 6, 26, 26, 0]]], tf.float32)
    outputs = [tf.constant(p5), tf.constant(p4)]

    def obj(threshold):
        loss = YoloLoss(anchors, ANCHORS_MASK, num_classes=2, scale_x_y=1.05, ignore_thresh=threshold)
        return float(loss(outputs, gt)[1]["obj"].numpy()[0])

    never, above_07, above_05 = obj(1.0), obj(0.7), obj(0.5)
    assert never - above_07 == pytest.approx(0.4 * _softplus(2.0), rel=1e-4)  # the exact box is ignored
    assert above_07 - above_05 == pytest.approx(0.4 * _softplus(1.0), rel=1e-4)  # then the IoU 0.64 one too


def test_mean_normalisation_divides_by_the_counts_with_the_reference_ratios():
    """"mean": objectness = 5 * (input area / 416^2) * balance * mean BCE over the cells counted,
    box = 0.05 * mean over positives, class = C / 80 * mean over positives and classes."""
    p5, p4 = _empty_heads()
    p5[..., 4::7], p4[..., 4::7] = 1.5, -0.5
    outputs = [tf.constant(p5), tf.constant(p4)]
    empty = tf.fill((1, 1, 5), -1.0)
    fn = YoloLoss(load_anchors(), ANCHORS_MASK, num_classes=2, anchor_iou_thresh=1.0, normalization="mean")
    loss, parts = fn.batch_loss(outputs, empty, global_batch=1)
    ratio = 5 * 64 * 64 / 416**2
    assert float(parts["obj"]) == pytest.approx(ratio * (0.4 * _softplus(1.5) + 1.0 * _softplus(-0.5)), rel=1e-5)
    assert float(parts["box"]) == float(parts["cls"]) == 0 and float(loss) == pytest.approx(float(parts["obj"]))
    # One box (one positive, on P4): its box and class terms are means over that one positive.
    gt = tf.constant([[[10, 10, 50, 60, 0]]], tf.float32)  # 40x50: anchor 2 only
    _, parts = fn.batch_loss(outputs, gt, global_batch=1)
    sums = fn.level_sums(outputs, gt)[0]
    assert [float(level["positives"][0]) for level in sums] == [0, 1]
    assert float(parts["box"]) == pytest.approx(0.05 * float(sums[1]["box"][0]), rel=1e-5)
    assert float(parts["cls"]) == pytest.approx(2 / 80 * float(sums[1]["cls"][0]) / 2, rel=1e-5)
    # "sum" (the default) over a batch: per-image sums averaged over the global batch.
    fn_sum = YoloLoss(load_anchors(), ANCHORS_MASK, num_classes=2)
    loss, _ = fn_sum.batch_loss(outputs, gt, global_batch=4)
    assert float(loss) == pytest.approx(float(fn_sum(outputs, gt)[0][0]) / 4, rel=1e-6)
    with pytest.raises(ValueError, match="normalization"):
        YoloLoss(load_anchors(), ANCHORS_MASK, num_classes=2, normalization="batch")


def test_neighbor_cells_add_the_two_cells_nearest_the_centre():
    """A 40x60 box (best anchor 2 only, on P4: stride 16) centred at (58, 70): cell (row 4, col 3),
    at (0.625, 0.375) within it, so the next cells nearest the centre are the one to the right
    (col 4) and the one above (row 3). A box centred in the first cell's top-left quarter has no
    neighbour left of or above it: only the centre cell. It needs scale_x_y >= 2."""
    anchors = load_anchors()
    loss = YoloLoss(anchors, ANCHORS_MASK, num_classes=2, scale_x_y=2.0, anchor_iou_thresh=1.0, neighbor_cells=True)
    gt = tf.constant([[[38, 40, 78, 100, 1], [2, 4, 14, 20, -1]]], tf.float32)  # the second row is padding
    true_boxes, positive, classes = loss.level_targets(gt, 1, (8, 8))
    positive = positive.numpy()
    assert sorted(zip(*np.nonzero(positive[0, ..., 1]))) == [(3, 3), (4, 3), (4, 4)]
    assert positive.sum() == 3
    for row, col in ((3, 3), (4, 3), (4, 4)):  # each trains the same box and class
        np.testing.assert_allclose(true_boxes.numpy()[0, row, col, 1], [58, 70, 40, 60])
        np.testing.assert_array_equal(classes.numpy()[0, row, col, 1], [0, 1])
    corner = tf.constant([[[4, 4, 40, 62, 0]]], tf.float32)  # centre (22, 33): cell (2, 1) at (0.375, 0.06)
    _, positive, _ = loss.level_targets(corner, 1, (8, 8))
    assert sorted(zip(*np.nonzero(positive.numpy()[0, ..., 1]))) == [(1, 1), (2, 0), (2, 1)]
    edge = tf.constant([[[0, 0, 12, 14, 0]]], tf.float32)  # centre (6, 7) in cell (0, 0), nearer its top-left
    _, positive, _ = loss.level_targets(edge, 1, (8, 8))
    assert positive.numpy().sum() == 1
    with pytest.raises(ValueError, match="scale_x_y"):
        YoloLoss(anchors, ANCHORS_MASK, num_classes=2, scale_x_y=1.05, neighbor_cells=True)


def test_a_centre_cell_wins_over_another_boxs_neighbour_cell():
    """Box A's centre cell is box B's neighbour cell (same anchor): A is the target there."""
    loss = YoloLoss(load_anchors(), ANCHORS_MASK, num_classes=2, scale_x_y=2.0, anchor_iou_thresh=1.0,
                    neighbor_cells=True)  # fmt: skip
    a = [36, 40, 76, 100, 0]  # 40x60 centred (56, 70): cell (4, 3)
    b = [52, 40, 92, 100, 1]  # 40x60 centred (72, 70): cell (4, 4) at x 0.5 -> right neighbour; A's cell is left
    b[0] -= 1
    b[2] -= 1  # centre (71, 70): x 0.4375 in cell 4 -> its left neighbour is A's cell (4, 3)
    for boxes in ([a, b], [b, a]):
        true_boxes, positive, classes = loss.level_targets(tf.constant([boxes], tf.float32), 1, (8, 8))
        np.testing.assert_allclose(true_boxes.numpy()[0, 4, 3, 1], [56, 70, 40, 60])
        np.testing.assert_array_equal(classes.numpy()[0, 4, 3, 1], [1, 0])


def test_obj_iou_target_is_the_predicted_boxs_fit():
    """A positive whose predicted box overlaps its ground truth with CIoU c gets objectness target c:
    its BCE is c * softplus(-z) + (1 - c) * softplus(z), instead of softplus(-z) with target 1."""
    anchors = load_anchors()
    p5, p4 = _empty_heads()
    gt = tf.constant([[[6, 6, 26, 26, 0]]], tf.float32)  # 20x20 at (16, 16): anchor 1 on P4, cell (1, 1)
    anchor_w, anchor_h = anchors[ANCHORS_MASK[1][0]]
    # Predict a 24x20 box at the cell's centre (24, 24), logit 1.
    p4[0, 1, 1, 0:5] = [0.0, 0.0, np.log(24 / anchor_w), np.log(20 / anchor_h), 1.0]
    outputs = [tf.constant(p5), tf.constant(p4)]
    kwargs = dict(num_classes=2, scale_x_y=1.0, anchor_iou_thresh=1.0, ignore_thresh=1.0)
    plain = float(YoloLoss(anchors, ANCHORS_MASK, **kwargs)(outputs, gt)[1]["obj"][0])
    fitted = float(YoloLoss(anchors, ANCHORS_MASK, obj_iou_target=True, **kwargs)(outputs, gt)[1]["obj"][0])
    from utils.boxes import box_ciou_ops

    c = float(box_ciou_ops(tf.constant([24.0, 24.0, 24.0, 20.0]), tf.constant([16.0, 16.0, 20.0, 20.0])))
    assert 0 < c < 1
    assert fitted - plain == pytest.approx((c * _softplus(-1.0) + (1 - c) * _softplus(1.0)) - _softplus(-1.0), rel=1e-4)


@pytest.mark.parametrize("neighbor_cells", [False, True])
def test_the_loss_under_xla_is_the_loss(neighbor_cells):
    """--xla compiles the loss with the step: the same values as without, boxes colliding and all
    (XLA pads the dynamic number of positives; concatenating two such tensors once lost rows)."""
    rng = np.random.default_rng(0)
    gt = np.full((4, 20, 5), -1, np.float32)
    for image in range(4):
        for row in range(6):
            x, y = rng.uniform(0, 200, 2)
            w, h = rng.uniform(10, 100, 2)
            gt[image, row] = [x, y, min(x + w, 255), min(y + h, 255), rng.integers(10)]
    outputs = [tf.constant(rng.normal(0, 1, (4, s, s, 45)), tf.float32) for s in (8, 16)]
    loss = YoloLoss(load_anchors(), ANCHORS_MASK, 10, scale_x_y=2.0, neighbor_cells=neighbor_cells,
                    obj_iou_target=True)  # fmt: skip

    def total(outputs, gt):
        value, parts = loss.batch_loss(outputs, gt, 4)
        levels, _ = loss.level_sums(outputs, gt)
        return value, parts, [tf.reduce_sum(level["positives"]) for level in levels]

    eager = total(outputs, tf.constant(gt))
    compiled = tf.function(total, jit_compile=True)(outputs, tf.constant(gt))
    assert [float(p) for p in compiled[2]] == [float(p) for p in eager[2]]
    np.testing.assert_allclose(float(compiled[0]), float(eager[0]), rtol=1e-5)
    for key in ("box", "obj", "cls"):
        np.testing.assert_allclose(float(compiled[1][key]), float(eager[1][key]), rtol=1e-5)
