import re

import pytest

import summary
from nets.stats import attention_costs, count_flops
from nets.yolo import YoloV4Tiny


def test_flops_match_darknets_count():
    # darknet prints 6.910 BFLOPs for yolov4-tiny at 416 counting convolutions only; we also
    # count batch norm, activations and pooling, which add a little.
    flops = count_flops(YoloV4Tiny(80), (416, 416, 3))
    assert 6.91e9 < flops < 6.91e9 * 1.005


def test_attention_costs_per_insertion_point():
    costs = attention_costs(YoloV4Tiny(20, attention="se"), (416, 416))
    assert [(c.point, c.input_shape) for c in costs] == [
        ("attention_feat1", (26, 26, 256)),
        ("attention_feat2", (13, 13, 512)),
        ("attention_p5_upsample", (26, 26, 128)),
    ]
    # SE: two dense layers, C -> C/16 -> C, with biases.
    assert [c.params for c in costs] == [256 * 16 + 16 + 16 * 256 + 256, 512 * 32 + 32 + 32 * 512 + 512,
                                         128 * 8 + 8 + 8 * 128 + 128]
    assert all(c.flops > 0 for c in costs)
    assert attention_costs(YoloV4Tiny(20), (416, 416)) == []


# darknet's official yolov4-tiny.weights (80 classes): 24,251,276 bytes, a 20-byte header, then float32s.
DARKNET_FLOATS = (24_251_276 - 20) // 4  # 6,062,814, docs/attention.md's figure


def _attention_params(name, channels):
    """Parameters of one attention block on `channels` channels, counted from the papers' layouts."""
    if name in ("se", "cbam"):
        hidden = channels // 16  # a shared MLP C -> C/16 -> C with biases
        mlp = channels * hidden + hidden + hidden * channels + channels
        return mlp + (7 * 7 * 2 + 1 if name == "cbam" else 0)  # CBAM: a 7x7 conv on [mean, max] -> 1, bias
    if name == "eca":
        return 5  # one 1-D conv across channels, k = 5 for C = 128, 256, 512, no bias
    if name == "sa":
        inner = channels // 8  # SAGAN: query, key, value 1x1 convs to C/8 (the key without bias), out back to C
        return 3 * channels * inner + 2 * inner + inner * channels + channels + 1  # + gamma
    hidden = max(8, channels // 32)  # ca: a shared 1x1 conv (no bias) + batch norm, then one 1x1 conv per direction
    return channels * hidden + 4 * hidden + 2 * (hidden * channels + channels)


def test_the_darknet_float_count_is_the_file_layouts():
    from utils.interop.darknet import conv_specs, yolov4_tiny_cfg

    specs = conv_specs(yolov4_tiny_cfg(80))
    counted = sum(s.filters * (4 if s.batch_normalize else 1) + s.filters * s.in_channels * s.size**2 for s in specs)
    assert len(specs) == 21 and counted == DARKNET_FLOATS


@pytest.mark.slow
def test_all_prints_every_phi_with_independently_counted_parameters(capsys):
    """`summary.py --all --num-classes 80`: phi 0 has darknet's float count; each attention adds its
    blocks' parameters at feat1 (256 channels), feat2 (512) and the P5 upsample (128); self-attention
    at feat2 alone."""
    assert summary.main(["--all", "--num-classes", "80", "--input-size", "64"]) == 0
    out = capsys.readouterr().out
    rows = {int(m[0]): m[1:] for m in re.findall(r"^\s*(\d)\s+(\w+)\s+([\d,]+)\s+([+\-][\d,]+)\s", out, re.M)}
    assert sorted(rows) == [0, 1, 2, 3, 4, 5]
    for phi, name in enumerate(("none", "se", "cbam", "eca", "ca", "sa")):
        channels = () if phi == 0 else (512,) if name == "sa" else (256, 512, 128)
        points = [_attention_params(name, c) for c in channels]
        printed_name, params, added = rows[phi]
        assert printed_name == name
        assert int(params.replace(",", "")) == DARKNET_FLOATS + sum(points), name
        assert int(added.replace(",", "")) == sum(points), name
        if points:
            first = "feat2" if name == "sa" else "feat1"
            line = next(line for line in out.splitlines() if re.match(rf"\s*{phi}\s+{name}\s+{first}", line))
            assert re.findall(r"([\d,]+) / [\d.]+", line) == [f"{p:,}" for p in points], line
    assert "feat1 2x2x256" not in out and "feat1 4x4x256" in out  # at 64x64 feat1 is 4x4


def test_costs_follow_the_points_and_count_the_fusion():
    model = YoloV4Tiny(20, attention="sa", attention_at="stage3,head_p4", fusion="weighted")
    costs = attention_costs(model, (416, 416))
    assert [(c.point, c.input_shape) for c in costs] == [
        ("attention_stage3", (13, 13, 512)),
        ("attention_head_p4", (26, 26, 256)),
        ("fusion_34", [(26, 26, 128), (26, 26, 256)]),
    ]
    assert costs[0].params == _attention_params("sa", 512) == 131_713
    assert costs[2].params == 128 * 384 + 256 * 384 + 2
    # The fusion's 1x1 projections: 2 FLOPs per multiply-add, 26 * 26 pixels, (128 + 256) x 384.
    assert 2 * 26 * 26 * 384 * 384 <= costs[2].flops < 1.01 * 2 * 26 * 26 * 384 * 384


def test_one_model_with_placement_and_fusion(capsys):
    argv = ["--phi", "3", "--attention-at", "head_p5,stage1", "--fusion", "weighted", "--num-classes", "3",
            "--input-size", "64"]
    assert summary.main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s*3\s+eca\s+stage1 8x8x128: 5 / [\d.]+\s+head_p5 2x2x512: 5 / [\d.]+\s+fusion_34 "
                     r"4x4x128\+4x4x256: 147,458 / ", out, re.M), out
    assert summary.main(["--phi", "1", "--attention-at", "nowhere"]) == 2
    assert "the points are stage1" in capsys.readouterr().err
