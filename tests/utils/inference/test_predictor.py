"""The Predictor from Python: images, a folder with a file that is not one, a video written with cv2,
the sinks (pictures, crops, a saved video, JSON records), and the records themselves.

Most tests run a toy detector that finds the one bright square of each picture (no model to load);
one loads a saved model as a user would."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from nets.model_data import ANCHORS_MASK, load_anchors
from nets.yolo import YoloV4Tiny
from tests.stream_helpers import FRAME_HW, bright_blob_forward, count_frames, moving_square, write_clip
from utils.files import OutputError
from utils.inference import ImageFolder, JsonRecords, Predictor, Result, Sink, load_detector
from utils.inference.detector import Detector
from utils.inference.engine.sinks import check_outputs, make_sinks
from utils.inference.explain import NoAttentionError
from utils.inference.video import SourceError, VideoSource, open_source


@pytest.fixture(scope="module")
def detector():
    return Detector(
        bright_blob_forward,
        num_classes=1,
        anchors=load_anchors(),
        anchors_mask=ANCHORS_MASK,
        scale_x_y=1.0,
        input_shape=FRAME_HW,
        class_names=["square"],
    )


@pytest.fixture
def folder(tmp_path):
    """Two pictures of the square (at x 0 and x 40), a truncated JPEG and a text file."""
    folder = tmp_path / "in"
    folder.mkdir()
    for index, name in ((0, "a.png"), (10, "b.jpg")):
        Image.fromarray(cv2.cvtColor(moving_square(index), cv2.COLOR_BGR2RGB)).save(folder / name)
    data = (folder / "b.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_a_folder_gives_a_result_per_file_and_names_those_that_are_no_image(detector, folder):
    results = Predictor(detector=detector).predict(folder)
    good, bad = [r for r in results if r.ok], [r for r in results if not r.ok]
    assert [r.path.name for r in good] == ["a.png", "b.jpg"] and [r.path.name for r in bad] == [
        "broken.jpg",
        "notes.txt",
    ]
    for result, left in zip(good, (0, 40), strict=True):
        [box] = result.detections.boxes
        assert abs(box[0] - left) < 3 and abs(box[2] - (left + 24)) < 3  # the square: x left..left+24, y 20..44
        assert abs(box[1] - 20) < 3 and abs(box[3] - 44) < 3
        assert result.counts() == "1 square"
        record = result.record()
        assert record["image"] == str(result.path) and (record["width"], record["height"]) == (96, 64)
        [det] = record["detections"]
        assert det["class_id"] == 0 and det["class_name"] == "square" and det["score"] > 0.99
        assert result.picture.shape == (64, 96, 3) and not np.array_equal(result.picture, result.image)
    for result in bad:
        assert result.image is None and result.picture is None and result.path.name in result.error
        assert result.record() == {"image": str(result.path), "error": result.error}


def test_run_writes_pictures_crops_and_json_records_and_counts(detector, folder, tmp_path):
    out, records = tmp_path / "out", tmp_path / "dets.json"
    predictor = Predictor(detector=detector)
    sinks = [ImageFolder(out, crops=True), JsonRecords(records)]
    seen = []
    stats = predictor.run([folder / "a.png", folder, folder / "notes.txt"], sinks, on_result=seen.append)
    assert (stats.processed, stats.failed) == (3, 3)
    # a.png twice: its second picture gets a name of its own; nothing overwritten.
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["a.png", "a_1.png", "b.jpg"]
    assert sorted(p.name for p in (out / "crops").iterdir()) == ["a_0_square.png", "a_1_0_square.png", "b_0_square.png"]
    width, height = Image.open(out / "crops" / "b_0_square.png").size
    assert 22 <= width <= 27 and 22 <= height <= 27  # the 24x24 square
    # The JSON file holds each result's record, in order.
    assert json.loads(records.read_text()) == [r.record() for r in seen]
    assert sorted(r.path.name for r in seen if not r.ok) == ["broken.jpg", "notes.txt", "notes.txt"]


def test_a_video_file_streams_its_frames_and_every_nth(detector, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=9)
    results = list(Predictor(detector=detector).stream(str(clip)))
    assert [r.frame for r in results] == list(range(9))
    assert [r.record()["image"] for r in results[:2]] == [f"{clip}#frame=0", f"{clip}#frame=1"]
    lefts = [r.detections.boxes[0, 0] for r in results]
    assert lefts[-1] > lefts[0] + 25  # the square moves 4 px a frame
    every_third = Predictor(detector=detector, every=3).predict(clip)
    assert [r.frame for r in every_third] == [0, 3, 6]


def test_a_run_saves_the_video_and_stops_at_max_frames(detector, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=20)
    source = open_source(clip)
    assert isinstance(source, VideoSource) and source.delivered_count == 20
    sinks = make_sinks(source, folder=tmp_path / "out", save_video=True, json_path=tmp_path / "v.json")
    stats = Predictor(detector=detector, track=True).run(source, sinks, max_frames=5)
    assert stats.processed == 5 and "5 frames" in stats.video_summary()
    assert count_frames(tmp_path / "out" / "clip_detected.mp4") == 5
    records = json.loads((tmp_path / "v.json").read_text())
    assert [r["image"].rsplit("=", 1)[1] for r in records] == ["0", "1", "2", "3", "4"]
    assert {d["track_id"] for r in records for d in r["detections"]} == {1}


class StopAfter(Sink):
    """Ends the run at its `n`-th result (as a window's q does); remembers being closed."""

    def __init__(self, n):
        self.n, self.seen, self.closed = n, 0, False

    def write(self, result):
        self.seen += 1
        return self.seen < self.n

    def close(self):
        self.closed = True


class FailAt(StopAfter):
    def write(self, result):
        self.seen += 1
        if self.seen == self.n:
            raise OutputError("disk full")


def test_a_sink_can_end_the_run_and_every_sink_is_closed_on_every_way_out(detector, folder, tmp_path):
    images = [folder / "a.png"] * 4
    stop, records = StopAfter(2), JsonRecords(tmp_path / "stopped.json")
    assert Predictor(detector=detector).run(images, [records, stop]).processed == 2
    assert stop.closed and len(json.loads((tmp_path / "stopped.json").read_text())) == 2
    fail = FailAt(3)
    with pytest.raises(OutputError, match="disk full"):
        Predictor(detector=detector).run(images, [JsonRecords(tmp_path / "failed.json"), fail])
    # The array is closed with the records written before the error (the third went in first).
    assert fail.closed and len(json.loads((tmp_path / "failed.json").read_text())) == 3


def test_sources_and_outputs_are_checked_before_any_model(folder, tmp_path):
    assert open_source(folder, kind="images") == sorted(folder.iterdir())
    with pytest.raises(SourceError, match="not a folder"):
        open_source(folder / "a.png", kind="folders")
    with pytest.raises(SourceError, match="no input images"):
        open_source([], kind="images")
    with pytest.raises(SourceError, match="no such video file"):
        open_source(tmp_path / "missing.mp4")
    with pytest.raises(OutputError, match="holds the input"):
        check_outputs([folder, folder / "a.png"], folder=folder, holds_inputs=True)
    with pytest.raises(OutputError, match="is an input"):
        check_outputs([folder / "a.png"], json_path=folder / "a.png")
    check_outputs([folder], folder=tmp_path / "out", holds_inputs=True, json_path=tmp_path / "d.json")
    assert not (tmp_path / "out").exists()


def test_bad_arguments_are_value_errors(detector):
    with pytest.raises(ValueError, match="boxes, heatmap, attention, cam"):
        Predictor(detector=detector, picture="saliency")
    with pytest.raises(ValueError, match="weights or a detector"):
        Predictor()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "cats.keras"
    YoloV4Tiny(2, class_names=["cat", "dog"]).save(path)
    return path


def test_weights_load_as_load_detector_loads_them_and_heatmaps_come_out(weights, folder):
    predictor = Predictor(weights, picture="heatmap", backend="keras", input_shape=(64, 96), conf=0.0)
    assert predictor.detector.class_names == ["cat", "dog"] and predictor.detector.backend == "keras"
    assert predictor.describe().startswith("2 classes, input (64, 96), TensorFlow on ")
    assert load_detector(weights, backend="keras").class_names == ["cat", "dog"]
    [result] = predictor.predict(folder / "a.png")
    assert isinstance(result, Result) and result.picture.shape == (64, 96, 3)
    assert result.record()["detections"]  # conf 0: a random model's boxes
    with pytest.raises(NoAttentionError, match="phi 0"):  # before any image is read
        Predictor(weights, picture="attention")
