import keras
import numpy as np
import pytest

from nets.backbone import ChannelGroup, cspdarknet53_tiny


@pytest.fixture(scope="module")
def backbone():
    inputs = keras.Input(shape=(None, None, 3))
    return keras.Model(inputs, cspdarknet53_tiny(inputs))


@pytest.mark.parametrize("height, width", [(416, 416), (96, 160)])
def test_feature_shapes(backbone, height, width):
    feat1, feat2 = backbone(np.zeros((1, height, width, 3), "float32"))
    assert tuple(feat1.shape) == (1, height // 16, width // 16, 256)
    assert tuple(feat2.shape) == (1, height // 32, width // 32, 512)


def test_layers_are_named_by_darknet_cfg_index(backbone):
    convs = sorted(int(layer.name.split("_")[1]) for layer in backbone.layers if layer.name.startswith("conv_"))
    # yolov4-tiny.cfg: layers 0-26 minus the routes (3, 6, 8, 11, 14, 16, 19, 22, 24) and max-pools (9, 17, 25).
    assert convs == [0, 1, 2, 4, 5, 7, 10, 12, 13, 15, 18, 20, 21, 23, 26]
    assert backbone.get_layer("conv_0").kernel.shape == (3, 3, 3, 32)
    assert backbone.get_layer("conv_23").kernel.shape == (1, 1, 256, 256)


def test_stride_two_pads_top_left_like_darknet():
    # Darknet pads one pixel on the top/left of a stride-2 3x3 conv and none on the bottom/right,
    # so the window of output (0, 0) is centred on input (0, 0). Keras' "same" would centre it on (1, 1).
    inputs = keras.Input(shape=(8, 8, 3))
    model = keras.Model(inputs, cspdarknet53_tiny(inputs))
    conv = model.get_layer("conv_0")
    kernel = np.zeros(conv.kernel.shape, "float32")
    kernel[1, 1, 0, 0] = 1.0  # pick the centre tap of channel 0
    conv.kernel.assign(kernel)
    probe = keras.Model(inputs, conv.output)
    image = np.zeros((1, 8, 8, 3), "float32")
    image[0, 0, 0, 0], image[0, 2, 4, 0] = 3.0, 5.0
    out = np.asarray(probe(image))[0, :, :, 0]
    assert out.shape == (4, 4)
    assert out[0, 0] == 3.0 and out[1, 2] == 5.0
    assert np.count_nonzero(out) == 2


def test_channel_group_takes_darknets_second_half():
    x = np.arange(8, dtype="float32").reshape(1, 1, 1, 8)
    np.testing.assert_array_equal(ChannelGroup(2, 1)(x)[0, 0, 0], [4, 5, 6, 7])
    np.testing.assert_array_equal(ChannelGroup(4, 0)(x)[0, 0, 0], [0, 1])
    with pytest.raises(ValueError, match="group_id"):
        ChannelGroup(2, 2)
