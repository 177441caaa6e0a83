"""Video sources: files and sequences give every frame; live streams give the newest one, never a backlog."""

import time

import cv2
import numpy as np
import pytest

from tests.stream_helpers import mjpeg_stream, moving_square, write_clip
from utils.inference import video
from utils.inference.video import SourceError, StreamEndedError, VideoSource, source_kind


def test_source_kinds():
    assert source_kind("0") == "camera"
    assert source_kind("rtsp://cam.local/live") == source_kind("http://10.0.0.2/video.mjpg") == "stream"
    assert source_kind("frames/img_%05d.jpg") == "sequence"
    assert source_kind("clip.mp4") == "file"


def test_a_file_gives_every_frame_in_order_and_every_nth(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=10)
    with VideoSource(str(clip)) as source:
        assert not source.live and source.frame_count == 10 and source.frame_size == (96, 64)
        assert [frame.index for frame in source] == list(range(10))
    with VideoSource(str(clip), every=3) as source:
        assert [frame.index for frame in source] == [0, 3, 6, 9]


def test_a_numbered_image_sequence(tmp_path):
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"img_{i:04d}.png"), moving_square(i))
    with VideoSource(str(tmp_path / "img_%04d.png")) as source:
        frames = list(source)
    assert [f.index for f in frames] == list(range(5))
    np.testing.assert_array_equal(frames[2].image, moving_square(2))


def test_a_live_stream_gives_the_newest_frame_and_no_backlog():
    """A 100 fps stream read by a detector that needs 50 ms a frame: the detector skips ahead
    instead of falling behind. With a queue, the 30th frame would be about 1.5 s old."""
    with mjpeg_stream(frames=600, rate=100) as url, VideoSource(url) as source:
        assert source.live
        indices, ages = [], []
        for _ in range(30):
            frame = source.read()
            ages.append(time.perf_counter() - frame.captured)
            indices.append(frame.index)
            time.sleep(0.05)  # a slow detector
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert indices[-1] >= 100  # kept pace with the source (a backlog would stop near 30)
    assert source.dropped > 0
    assert max(ages[1:]) < 0.5


def test_a_stream_that_goes_down_ends_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(video, "RECONNECT_DELAY_S", 0.05)
    with mjpeg_stream(frames=20, rate=200) as url, VideoSource(url) as source:
        seen = []
        with pytest.raises(StreamEndedError, match="stopped delivering frames") as error:
            while True:
                seen.append(source.read().index)
    assert seen and error.value.exit_code == 1
    assert source.reconnects == video.RECONNECT_ATTEMPTS


def test_a_stream_that_comes_back_only_to_drop_again_still_ends(monkeypatch):
    """Every reopening succeeds and serves a few frames, then the connection drops: the attempts
    must not start afresh at each reopening, or the run never ends (issue 22)."""
    monkeypatch.setattr(video, "RECONNECT_DELAY_S", 0.05)
    deadline = time.perf_counter() + 20
    with mjpeg_stream(frames=5, rate=200, comes_back=True) as url, VideoSource(url) as source:
        with pytest.raises(StreamEndedError, match="stopped delivering frames"):
            while time.perf_counter() < deadline:
                source.read()
    assert source.reconnects == video.RECONNECT_ATTEMPTS


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/video.mjpg", "rtsp://127.0.0.1:1/live"])
def test_an_unreachable_stream_fails_at_once(url):
    start = time.perf_counter()
    with pytest.raises(SourceError, match="cannot open stream"):
        VideoSource(url)
    assert time.perf_counter() - start < 5


def test_a_missing_file_names_it(tmp_path):
    with pytest.raises(SourceError, match="nothere.mp4: no such video file"):
        VideoSource(str(tmp_path / "nothere.mp4"))
