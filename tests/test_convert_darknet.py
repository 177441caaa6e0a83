"""convert_darknet.py end to end on a tiny 3-class darknet model: darknet -> Keras -> darknet, attention, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

import convert_darknet
from utils.interop import darknet as dk

ROOT = Path(__file__).resolve().parent.parent
CLASS_NAMES = ["ant", "bee", "wasp"]


@pytest.fixture(scope="module")
def darknet_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("darknet")
    cfg = dk.yolov4_tiny_cfg(len(CLASS_NAMES), input_hw=(96, 128))
    cfg_path, weights_path, classes_path = tmp / "tiny.cfg", tmp / "tiny.weights", tmp / "classes.txt"
    cfg_path.write_text(cfg.to_text())
    dk.write_weights(weights_path, dk.random_darknet_weights(dk.conv_specs(cfg), seed=5))
    classes_path.write_text("\n".join(CLASS_NAMES) + "\n")
    return {"tmp": tmp, "cfg": cfg_path, "weights": weights_path, "classes": classes_path}


def test_help():
    result = subprocess.run(
        [sys.executable, str(ROOT / "convert_darknet.py"), "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0 and "--to-darknet" in result.stdout and "--phi" in result.stdout


@pytest.mark.slow
def test_darknet_to_keras_and_back_is_exact(darknet_files, tmp_path, capsys):
    out = tmp_path / "tiny.keras"
    args = ["--cfg", darknet_files["cfg"], "--weights", darknet_files["weights"], "--classes", darknet_files["classes"]]
    assert convert_darknet.main([str(a) for a in [*args, "--out", out]]) == 0
    printed = capsys.readouterr().out
    assert "Loaded 21 of 21" in printed and f"Saved {out}" in printed

    model = keras.saving.load_model(out)
    assert model.class_names == CLASS_NAMES and model.image_shape == (96, 128, 3)
    assert model.anchors_mask == [[3, 4, 5], [1, 2, 3]] and model.scale_x_y == pytest.approx(1.05)

    out_cfg, out_weights = tmp_path / "back.cfg", tmp_path / "back.weights"
    argv = ["--to-darknet", "--weights", out, "--out-cfg", out_cfg, "--out-weights", out_weights]
    assert convert_darknet.main([str(a) for a in argv]) == 0
    assert out_weights.read_bytes() == darknet_files["weights"].read_bytes()
    assert dk.parse_cfg(out_cfg).to_text() == dk.parse_cfg(darknet_files["cfg"]).to_text()
    # What we wrote is what OpenCV's darknet importer reads.
    net = cv2.dnn.readNetFromDarknet(str(out_cfg), str(out_weights))
    net.setInput(np.zeros((1, 3, 96, 128), np.float32))
    assert net.forward("conv_29").shape == (1, 3 * (5 + len(CLASS_NAMES)), 3, 4)


@pytest.mark.slow
def test_phi_loads_into_attention_model(darknet_files, tmp_path, capsys):
    out = tmp_path / "cbam.keras"
    argv = ["--cfg", darknet_files["cfg"], "--weights", darknet_files["weights"], "--phi", "2", "--any-size"]
    assert convert_darknet.main([str(a) for a in [*argv, "--out", out]]) == 0
    printed = capsys.readouterr().out
    assert "Kept their fresh initialisation: attention_feat1" in printed
    model = keras.saving.load_model(out)
    assert model.attention == "cbam" and model.image_shape == (None, None, 3)

    # An attention model has no darknet form: a clear error and a failing exit code.
    argv = ["--to-darknet", "--weights", out, "--out-cfg", tmp_path / "x.cfg", "--out-weights", tmp_path / "x.weights"]
    assert convert_darknet.main([str(a) for a in argv]) == 2
    assert "only attention 'none'" in capsys.readouterr().err
    assert not (tmp_path / "x.weights").exists()


@pytest.mark.slow
def test_blocks_at_chosen_points_start_as_the_identity_and_reload(darknet_files, tmp_path, capsys):
    out = tmp_path / "placed.keras"
    argv = ["--cfg", darknet_files["cfg"], "--weights", darknet_files["weights"], "--phi", "4",
            "--attention-at", "head_p4,stage1", "--fusion", "weighted"]  # fmt: skip
    assert convert_darknet.main([str(a) for a in [*argv, "--out", out]]) == 0
    printed = capsys.readouterr().out
    assert "Kept their fresh initialisation: attention_head_p4, attention_stage1, fusion_34" in printed
    model = keras.saving.load_model(out)
    assert model.attention_at == ("stage1", "head_p4") and model.fusion == "weighted" and model.identity_init
    plain, _ = dk.model_from_darknet(darknet_files["cfg"], darknet_files["weights"])
    image = np.random.default_rng(0).uniform(size=(1, 96, 128, 3)).astype(np.float32)
    for got, want in zip(model(image), plain(image)):  # identity blocks; the fusion is 0.99995 x the concatenation
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-3 * float(np.abs(want).max()))
    # A weighted fusion has no darknet form either.
    argv = ["--to-darknet", "--weights", out, "--out-cfg", tmp_path / "x.cfg", "--out-weights", tmp_path / "x.weights"]
    assert convert_darknet.main([str(a) for a in argv]) == 2
    assert "cannot express" in capsys.readouterr().err
    assert convert_darknet.main(["--cfg", str(darknet_files["cfg"]), "--weights", str(darknet_files["weights"]),
                                 "--phi", "1", "--attention-at", "neck", "--out", str(tmp_path / "n.keras")]) == 2
    assert "the points are stage1" in capsys.readouterr().err


def test_truncated_weights_fail_cleanly(darknet_files, tmp_path, capsys):
    bad = tmp_path / "bad.weights"
    bad.write_bytes(darknet_files["weights"].read_bytes()[:-400])
    out = tmp_path / "never.keras"
    argv = ["--cfg", darknet_files["cfg"], "--weights", bad, "--out", out]
    assert convert_darknet.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "truncated" in err and "expected" in err and "found" in err
    assert not out.exists()


def test_missing_cfg_is_an_error(darknet_files, capsys):
    assert convert_darknet.main(["--weights", str(darknet_files["weights"])]) == 2
    assert "--cfg is required" in capsys.readouterr().err


@pytest.mark.slow
def test_another_class_count_loads_backbone_and_neck_and_starts_fresh_heads(darknet_files, tmp_path, capsys):
    five = tmp_path / "five.txt"
    five.write_text("a\nb\nc\nd\ne\n")
    out = tmp_path / "five.keras"
    argv = ["--cfg", darknet_files["cfg"], "--weights", darknet_files["weights"], "--classes", five, "--out", out]
    assert convert_darknet.main([str(a) for a in argv]) == 0
    printed = capsys.readouterr().out
    assert "weights have 3, the model 5" in printed and "heads start fresh" in printed
    model = keras.saving.load_model(out)
    assert model.class_names == ["a", "b", "c", "d", "e"] and model.get_layer("conv_29").kernel.shape[-1] == 3 * 10
    reference, _ = dk.model_from_darknet(darknet_files["cfg"], darknet_files["weights"])
    for name in ("conv_0", "bn_0", "conv_28", "bn_28", "conv_35", "bn_35"):  # the last layers before the heads
        for a, b in zip(model.get_layer(name).get_weights(), reference.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("filters=32", "filters 32", r"line (\d+): expected '\[section\]' or 'key=value'"),
        ("filters=64", "filters=48", r"layer 1 \[convolutional\] \(line (\d+)\): filters=48"),
        ("[maxpool]", "[shortcut]\nfrom=-3\n\n[maxpool]", r"\[shortcut\] \(line (\d+)\)"),
    ],
    ids=["malformed-line", "not-yolov4-tiny", "unsupported-layer"],
)
def test_a_bad_cfg_is_an_error_naming_the_file_and_line(darknet_files, tmp_path, capsys, old, new, expected):
    import re

    text = darknet_files["cfg"].read_text().replace(old, new, 1)
    bad = tmp_path / "bad.cfg"
    bad.write_text(text)
    argv = ["--cfg", bad, "--weights", darknet_files["weights"], "--out", tmp_path / "never.keras"]
    assert convert_darknet.main([str(a) for a in argv]) == 2  # DarknetError's exit code
    err = capsys.readouterr().err
    match = re.search(expected, err)
    assert str(bad) in err and match, err
    # The line named is the line of the fault (the malformed line, or the section's [header]).
    named = text.splitlines()[int(match.group(1)) - 1]
    assert named in ("filters 32", "[convolutional]", "[shortcut]"), named
    assert not (tmp_path / "never.keras").exists()
