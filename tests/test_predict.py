"""predict.py end to end on tiny data: every mode, the image kinds, bad inputs."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import predict
from nets.model_data import COCO_CLASSES_PATH
from nets.yolo import YoloV4Tiny
from utils.interop.darknet import save_darknet

ROOT = Path(__file__).resolve().parents[1]


def _cat_model(path, class_names=("cat", "dog")):
    """A 2-class model whose heads ignore the image: anchor 0 of every cell is class 0 at 0.995^2."""
    model = YoloV4Tiny(2, class_names=list(class_names))
    for name in ("conv_29", "conv_36"):
        layer = model.get_layer(name)
        bias = np.tile(np.array([0, 0, 0, 0, -10, 0, 0], np.float32), 3)
        bias[4:7] = [6.0, 6.0, -6.0]
        layer.kernel.assign(np.zeros(layer.kernel.shape, np.float32))
        layer.bias.assign(bias)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return _cat_model(tmp_path_factory.mktemp("weights") / "cats.keras")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)).save(folder / "rgb.jpg")
    Image.fromarray(rng.integers(0, 256, (70, 50, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    Image.fromarray((rng.integers(0, 65536, (40, 80))).astype(np.uint16)).save(folder / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 256, (100, 40, 3), dtype=np.uint8)).save(folder / "phone.jpg", exif=exif)
    return folder


def run(argv, weights):
    return predict.main(["--weights", str(weights), "--input-size", "64", *argv])


@pytest.mark.slow
def test_predict_images_with_crop_count_and_json(weights, images, tmp_path, capsys):
    out = tmp_path / "out"
    sources = [str(images / n) for n in ("rgb.jpg", "rgba.png", "deep.png", "phone.jpg")]
    argv = ["--source", *sources, "--output", str(out), "--json", str(tmp_path / "d.json"), "--crop", "--count"]
    assert run(argv, weights) == 0
    records = {Path(r["image"]).name: r for r in json.loads((tmp_path / "d.json").read_text())}
    assert set(records) == {"rgb.jpg", "rgba.png", "deep.png", "phone.jpg"}
    # The EXIF-rotated phone photo is 40 wide x 100 high as stored, 100 x 40 as displayed.
    assert (records["phone.jpg"]["width"], records["phone.jpg"]["height"]) == (100, 40)
    assert Image.open(out / "phone.jpg").size == (100, 40)
    printed = capsys.readouterr().out
    for name, record in records.items():
        assert (out / name).is_file()
        dets = record["detections"]
        assert dets and all(d["class_name"] == "cat" and d["class_id"] == 0 for d in dets)
        w, h = record["width"], record["height"]
        for d in dets:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and 0.98 < d["score"] <= 1
        assert f"{name}: {len(dets)} cat" in printed
    crops = list((out / "crops").glob("rgb_*_cat.png"))
    assert len(crops) == len(records["rgb.jpg"]["detections"])


@pytest.mark.slow
def test_dir_predict_reports_bad_files_and_processes_the_rest(weights, images, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("rgb.jpg", "rgba.png"):
        (folder / name).write_bytes((images / name).read_bytes())
    data = (images / "rgb.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert run(["--mode", "dir_predict", "--source", str(folder), "--output", str(out)], weights) == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "notes.txt" in err and "2 of 4 images failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["rgb.jpg", "rgba.png"]


@pytest.mark.slow
def test_video_file_saved_with_json(weights, tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    for i in range(6):
        writer.write(np.full((64, 96, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / "out"
    argv = ["--mode", "video", "--source", str(video), "--save", "--no-show", "--output", str(out)]
    assert run([*argv, "--json", str(tmp_path / "v.json")], weights) == 0
    records = json.loads((tmp_path / "v.json").read_text())
    assert len(records) == 6 and all(r["detections"] for r in records)
    saved = cv2.VideoCapture(str(out / "clip_detected.mp4"))
    frames = 0
    while saved.read()[0]:
        frames += 1
    saved.release()
    assert frames == 6


@pytest.mark.slow
def test_heatmap_and_fps(weights, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(["--mode", "heatmap", "--source", str(images / "phone.jpg"), "--output", str(out)], weights) == 0
    heat = np.asarray(Image.open(out / "phone_heatmap.jpg"))
    assert heat.shape == (40, 100, 3)
    assert run(["--mode", "fps", "--runs", "3"], weights) == 0
    printed = capsys.readouterr().out
    for stage in ("preprocess", "model", "postprocess", "total"):
        assert stage in printed


@pytest.mark.slow
def test_darknet_weights_with_cfg(images, tmp_path):
    save_darknet(YoloV4Tiny(80), tmp_path / "random.cfg", tmp_path / "random.weights")
    argv = ["--weights", str(tmp_path / "random.weights"), "--cfg", str(tmp_path / "random.cfg"), "--input-size", "64"]
    argv += ["--classes", str(COCO_CLASSES_PATH), "--conf", "0.1", "--source", str(images / "rgb.jpg")]
    assert predict.main([*argv, "--output", str(tmp_path / "out"), "--json", str(tmp_path / "d.json")]) == 0
    [record] = json.loads((tmp_path / "d.json").read_text())
    assert record["detections"] and (tmp_path / "out" / "rgb.jpg").is_file()


def test_bad_weights_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "junk.keras").write_text("junk")
    (tmp_path / "a.png").write_bytes(b"")
    assert predict.main(["--weights", str(tmp_path / "junk.keras"), "--source", str(tmp_path / "a.png")]) == 2
    assert "junk.keras" in capsys.readouterr().err


@pytest.mark.parametrize("source", ["no_such_video.mp4", "99"])
def test_video_or_camera_that_will_not_open_fails_fast(tmp_path, source):
    (tmp_path / "w.keras").write_text("never loaded: the source is checked first")
    command = [sys.executable, str(ROOT / "predict.py"), "--weights", str(tmp_path / "w.keras"), "--mode", "video"]
    result = subprocess.run([*command, "--source", source], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert ("no such video file" if source.endswith(".mp4") else "cannot open camera 99") in result.stderr


def test_help_explains_modes():
    result = subprocess.run([sys.executable, str(ROOT / "predict.py"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for word in ("dir_predict", "heatmap", "--json", "--half", "--crop", "--count"):
        assert word in result.stdout


@pytest.mark.slow
def test_chinese_class_names_are_drawn_as_characters(tmp_path):
    """Two models alike but for the name of class 0: the saved pictures differ where the label is
    (with a font lacking the characters both names are the same empty box)."""
    image = tmp_path / "white.png"
    Image.fromarray(np.full((128, 160, 3), 255, np.uint8)).save(image)
    drawn = []
    for names in (["猫", "狗"], ["狗", "猫"]):
        weights = _cat_model(tmp_path / f"{names[0]}.keras", names)
        out = tmp_path / names[0]
        argv = ["--source", str(image), "--output", str(out), "--max-detections", "1", "--json", str(out / "d.json")]
        assert run(argv, weights) == 0
        [record] = json.loads((out / "d.json").read_text())
        assert [d["class_name"] for d in record["detections"]] == [names[0]]
        drawn.append(np.asarray(Image.open(out / "white.png")))
    assert drawn[0].shape == drawn[1].shape and not np.array_equal(drawn[0], drawn[1])
