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


@pytest.mark.slow
def test_cli_prints_parameters_and_gflops(capsys):
    summary.main(["--phi", "4", "--num-classes", "80", "--input-size", "64"])
    out = capsys.readouterr().out
    assert f"{YoloV4Tiny(80, attention='ca').count_params():,}" in out
    assert "attention_feat1" not in out  # points are printed by their short names
    assert "feat1 4x4x256" in out
