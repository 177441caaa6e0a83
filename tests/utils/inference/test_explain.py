"""The attention maps and the class activation maps, on hand-built blocks and models whose answer is known."""

import keras
import numpy as np
import pytest

from nets.attention import PHI_TO_ATTENTION, CBAMBlock, CoordAttention, SEBlock, SelfAttention
from nets.fusion import WeightedFusion
from nets.yolo import YoloV4Tiny
from utils.inference.explain import AttentionProbe, GradCam, NoAttentionError, block_map

CHANNELS = 8


def _coord_attention(varying: str) -> CoordAttention:
    """A CA whose row weights follow the row means (varying="rows") or whose column weights follow the
    column means (varying="columns"); the other direction's weights are a flat sigmoid(0) = 0.5."""
    layer = CoordAttention()  # hidden width max(8, 8 / 32) = 8
    layer.build((None, None, None, CHANNELS))
    identity = np.eye(CHANNELS, dtype=np.float32)[None, None]  # (1, 1, C, C)
    layer.conv_shared.kernel.assign(identity)
    follows, flat = (layer.conv_h, layer.conv_w) if varying == "rows" else (layer.conv_w, layer.conv_h)
    follows.kernel.assign(2 * identity)
    flat.kernel.assign(np.zeros_like(identity))
    return layer


@pytest.mark.parametrize("varying", ["rows", "columns"])
def test_coordinate_attention_fed_a_row_pattern_highlights_those_rows(varying):
    x = np.full((1, 6, 10, CHANNELS), 0.5, np.float32)
    if varying == "rows":
        x[:, [1, 4]] = 3.0  # rows 1 and 4 bright, along their whole width
    else:
        x[:, :, [2, 7]] = 3.0  # columns 2 and 7
    what, values = block_map(_coord_attention(varying), x)
    assert what == "row x column weight" and values.shape == (1, 6, 10)
    values = values[0] if varying == "rows" else values[0].T  # (the varying axis, the other)
    bright = [1, 4] if varying == "rows" else [2, 7]
    dim = [i for i in range(values.shape[0]) if i not in bright]
    np.testing.assert_allclose(values, values[:, :1].repeat(values.shape[1], axis=1), rtol=1e-6)  # flat along
    assert values[bright].min() > values[dim].max() + 0.05  # and the bright lines stand out


def test_cbam_map_is_its_spatial_weight_peaking_on_the_bright_square():
    layer = CBAMBlock(kernel_size=3)
    x = np.full((1, 8, 8, CHANNELS), 0.2, np.float32)
    x[:, 2:4, 5:7] = 2.0
    layer(x)
    layer.mlp_out.kernel.assign(np.zeros_like(layer.mlp_out.kernel))  # channel weights sigmoid(0) = 0.5
    kernel = np.zeros((3, 3, 2, 1), np.float32)
    kernel[1, 1, 0, 0] = 4.0  # spatial logit = 4 x the channel mean at the pixel
    layer.spatial_conv.kernel.assign(kernel)
    what, values = block_map(layer, x)
    assert what == "spatial weight"
    expected = 1 / (1 + np.exp(-4 * 0.5 * x.mean(axis=-1)))
    np.testing.assert_allclose(values, expected, rtol=1e-5)
    assert np.unravel_index(np.argmax(values[0]), (8, 8)) in {(2, 5), (2, 6), (3, 5), (3, 6)}


def test_se_map_is_the_share_of_energy_its_channel_weights_keep():
    layer = SEBlock(reduction=2)
    x = np.zeros((1, 4, 6, CHANNELS), np.float32)
    x[:, :, :3, 0] = 1.0  # the left half's energy is in channel 0
    x[:, :, 3:, 1] = 1.0  # the right half's in channel 1
    layer(x)
    bias = np.full(CHANNELS, -10.0, np.float32)
    bias[0] = 10.0  # keep channel 0, damp every other
    layer.excite.kernel.assign(np.zeros_like(layer.excite.kernel))
    layer.excite.bias.assign(bias)
    what, values = block_map(layer, x)
    assert what.startswith("energy kept")
    np.testing.assert_allclose(values[0, :, :3], 1.0, atol=1e-4)
    np.testing.assert_allclose(values[0, :, 3:], 0.0, atol=1e-4)


def test_attention_probe_maps_every_insertion_point_and_refuses_phi_0():
    images = np.random.default_rng(0).uniform(size=(2, 64, 96, 3)).astype(np.float32)
    for name in PHI_TO_ATTENTION[1:5]:  # the gated blocks (self-attention: below)
        maps = AttentionProbe(YoloV4Tiny(2, attention=name))(images)
        assert [m.point for m in maps] == ["attention_feat1", "attention_feat2", "attention_p5_upsample"]
        assert [m.values.shape for m in maps] == [(2, 4, 6), (2, 2, 3), (2, 4, 6)]
        assert [m.feature_shape for m in maps] == [(4, 6, 256), (2, 3, 512), (4, 6, 128)]
        assert all(m.block == name and np.all((m.values > 0) & (m.values <= 1)) for m in maps)
    with pytest.raises(NoAttentionError, match="phi 0"):
        AttentionProbe(YoloV4Tiny(2))



def test_attention_probe_follows_the_points_and_draws_the_fusion():
    images = np.random.default_rng(0).uniform(size=(1, 64, 96, 3)).astype(np.float32)
    model = YoloV4Tiny(2, attention="cbam", attention_at="stage2,head_p4", fusion="weighted", identity_init=True)
    maps = AttentionProbe(model)(images)
    assert [(m.point, m.block) for m in maps] == [
        ("attention_stage2", "cbam"), ("attention_head_p4", "cbam"), ("fusion_34", "fusion"),
    ]
    assert [m.feature_shape for m in maps] == [(4, 6, 256), (4, 6, 256), (4, 6, 384)]
    np.testing.assert_array_equal(maps[0].values, 1.0)  # identity_init: every factor 1 until it trains
    assert maps[2].what.startswith("P5 upsample's energy share (weights 0.50/0.50)")
    assert np.all((maps[2].values >= 0) & (maps[2].values <= 1))
    only_fusion = AttentionProbe(YoloV4Tiny(2, fusion="weighted"))(images)  # phi 0 with a fusion to draw
    assert [m.point for m in only_fusion] == ["fusion_34"]
    [only_sa] = AttentionProbe(YoloV4Tiny(2, attention="sa"))(images)  # one point: the probe has one output
    assert (only_sa.point, only_sa.values.shape, only_sa.feature_shape) == ("attention_feat2", (1, 2, 3), (2, 3, 512))


def test_fusion_map_is_the_upsamples_energy_share():
    up = np.zeros((1, 4, 6, 2), np.float32)
    feat1 = np.zeros((1, 4, 6, 3), np.float32)
    up[:, :, :3] = 1.0  # the left half's energy comes from the upsample
    feat1[:, :, 3:] = 1.0  # the right half's from feat1
    layer = WeightedFusion()
    layer([up, feat1])
    what, values = block_map(layer, [up, feat1])
    np.testing.assert_allclose(values[0, :, :3], 1.0)
    np.testing.assert_allclose(values[0, :, 3:], 0.0)


def test_self_attention_map_is_the_attention_each_position_receives():
    x = np.full((1, 3, 4, CHANNELS), 0.1, np.float32)
    x[0, 1, 2] = 3.0  # one position stands out
    layer = SelfAttention(reduction=1)
    layer(x)
    eye = np.eye(CHANNELS, dtype=np.float32)[None, None]
    layer.query.kernel.assign(eye)
    layer.key.kernel.assign(eye)  # scores = x_i . x_j: every query looks most at the bright position
    what, values = block_map(layer, x)
    assert what == "attention received (gamma 0.000)" and values.shape == (1, 3, 4)
    np.testing.assert_allclose(values.mean(), 1.0, rtol=1e-5)  # shares of H * W positions, 1 on average
    assert np.unravel_index(np.argmax(values[0]), (3, 4)) == (1, 2)


HOT_CELL = (1, 2)  # P5 cell (row, column) of a 128x128 input: pixels rows 32-64, columns 64-96


def _one_region_model(image):
    """A 1-class model whose P5 anchor-slot-0 objectness is +8 at HOT_CELL and -8 at every other
    cell of `image` (the head fitted by least squares to the features there), every other
    objectness -8, and the class logit +8: one detection, made by that region's features."""
    keras.utils.set_random_seed(3)
    model = YoloV4Tiny(1, class_names=["blob"], attention="ca")
    features = np.asarray(keras.Model(model.input, model.get_layer("conv_29").input)(image[None]))[0]
    target = np.full(features.shape[:2], -8.0)
    target[HOT_CELL] = 8.0
    design = np.concatenate([features.reshape(-1, features.shape[-1]), np.ones((target.size, 1))], axis=1)
    solution = np.linalg.lstsq(design, target.reshape(-1), rcond=None)[0]
    for name in ("conv_29", "conv_36"):
        layer = model.get_layer(name)
        kernel, bias = np.zeros(layer.kernel.shape, np.float32), np.zeros(layer.bias.shape, np.float32)
        bias[4::6], bias[5::6] = -8.0, 8.0
        if name == "conv_29":
            kernel[0, 0, :, 4], bias[4] = solution[:-1], solution[-1]
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)
    return model


def test_grad_cam_of_a_detection_peaks_in_the_region_its_head_depends_on():
    image = np.random.default_rng(5).uniform(size=(128, 128, 3)).astype(np.float32)
    model = _one_region_model(image)
    [found] = GradCam(model).explain(image[None], conf=0.5, nms_iou=0.3, top=3)
    [det] = found
    assert (det.head, det.cell, det.anchor, det.class_id) == (0, HOT_CELL, model.anchors_mask[0][0], 0)
    assert det.score > 0.99 and det.cam.shape == (128, 128) and det.cam.max() == pytest.approx(1.0)
    row, col = np.unravel_index(np.argmax(det.cam), det.cam.shape)
    assert 32 <= row < 64 and 64 <= col < 96, (row, col)
    inside = det.cam[36:60, 68:92].mean()  # the cell, away from its interpolated border
    outside = np.concatenate([det.cam[:, :48].ravel(), det.cam[80:].ravel()]).mean()
    assert inside > 0.5 and outside < 0.2 * inside, (inside, outside)
    # The box is the hot cell's anchor box, centred in the cell.
    x1, y1, x2, y2 = det.box
    assert x1 < 80 < x2 and y1 < 48 < y2


def test_grad_cam_without_detections_returns_none():
    image = np.random.default_rng(5).uniform(size=(1, 64, 64, 3)).astype(np.float32)
    keras.utils.set_random_seed(0)
    assert GradCam(YoloV4Tiny(2)).explain(image, conf=1.0, nms_iou=0.3, top=2) == [[]]
