"""Sources for the video tests: an MJPEG stream served on loopback, a generated clip, a toy detector."""

from __future__ import annotations

import contextlib
import http.server
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

FRAME_HW = (64, 96)


def moving_square(index: int) -> np.ndarray:
    """A BGR frame: a white 24x24 square on grey, 4 px further right every frame (wrapping)."""
    frame = np.full((*FRAME_HW, 3), 60, np.uint8)
    x = 4 * index % (FRAME_HW[1] - 24)
    frame[20:44, x : x + 24] = 255
    return frame


def write_clip(path: Path, frames: int, fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, FRAME_HW[::-1])
    for i in range(frames):
        writer.write(moving_square(i))
    writer.release()
    return path


def count_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    return frames


@contextlib.contextmanager
def mjpeg_stream(frames: int, rate: float, comes_back: bool = False) -> Iterator[str]:
    """Serve `frames` JPEG frames at `rate` per second as multipart/x-mixed-replace on 127.0.0.1
    (what IP cameras serve); then the connection closes and the server stops answering, as a
    camera that goes down. `comes_back`: it keeps answering, and every new connection serves
    `frames` again then closes (a stream that flaps). Yields the URL."""
    stopped = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if stopped.is_set():
                self.send_error(503)
                return
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            start = time.perf_counter()
            for i in range(frames):
                ok, jpeg = cv2.imencode(".jpg", moving_square(i))
                try:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg))
                    self.wfile.write(jpeg.tobytes() + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    return
                time.sleep(max(0.0, start + (i + 1) / rate - time.perf_counter()))
            if not comes_back:
                stopped.set()  # gone for good: reconnects are refused

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    finally:
        stopped.set()
        server.shutdown()
        server.server_close()


def bright_cells_forward(x):
    """A content-based toy raw forward (1 class): cells whose mean brightness is above 0.7 are objects."""
    import tensorflow as tf

    heads = []
    for stride in (32, 16):
        pooled = tf.nn.avg_pool2d(tf.reduce_mean(x, -1, keepdims=True), stride, stride, "VALID")
        zeros = tf.zeros_like(pooled)
        anchor0 = tf.concat([zeros, zeros, zeros, zeros, 40.0 * (pooled - 0.7), zeros + 20.0], -1)
        other = tf.concat([zeros, zeros, zeros, zeros, zeros - 20.0, zeros], -1)
        heads.append(tf.concat([anchor0, other, other], -1))
    return heads


def bright_blob_forward(x, anchor=(81.0, 82.0)):
    """A toy raw forward (1 class, scale_x_y 1) that finds THE bright blob of each image: one box on
    the centroid of the pixels brighter than 0.7, sized by their count, on P5 anchor 0 (`anchor`
    is that anchor's size: nets.model_data's mask puts anchor 3, 81x82, there)."""
    import tensorflow as tf

    mask = tf.cast(tf.reduce_mean(x, -1) > 0.7, tf.float32)  # (N, H, W)
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    ys, xs = tf.meshgrid(
        tf.range(height, dtype=tf.float32) + 0.5, tf.range(width, dtype=tf.float32) + 0.5, indexing="ij"
    )
    area = tf.reduce_sum(mask, [1, 2]) + 1e-6
    cx, cy = tf.reduce_sum(mask * xs, [1, 2]) / area, tf.reduce_sum(mask * ys, [1, 2]) / area
    side = tf.sqrt(area)
    rows, cols = height // 32, width // 32
    col, row = tf.floor(cx / 32), tf.floor(cy / 32)
    frac_x, frac_y = tf.clip_by_value(cx / 32 - col, 1e-4, 1 - 1e-4), tf.clip_by_value(cy / 32 - row, 1e-4, 1 - 1e-4)
    cell = tf.one_hot(tf.cast(row, tf.int32) * cols + tf.cast(col, tf.int32), rows * cols)  # (N, rows*cols)
    logit = lambda p: tf.math.log(p / (1 - p))  # noqa: E731
    values = tf.stack(
        [logit(frac_x), logit(frac_y), tf.math.log(side / anchor[0]), tf.math.log(side / anchor[1]),
         tf.fill(tf.shape(cx), 20.0), tf.fill(tf.shape(cx), 20.0)], -1
    )  # fmt: skip
    empty = tf.constant([0, 0, 0, 0, -20.0, 0])
    anchor0 = cell[..., None] * values[:, None, :] + (1 - cell[..., None]) * empty  # (N, rows*cols, 6)
    others = tf.broadcast_to(empty, tf.shape(anchor0))
    p5 = tf.reshape(tf.concat([anchor0, others, others], -1), [-1, rows, cols, 18])
    nothing = tf.tile(tf.concat([empty, empty, empty], -1), [tf.shape(x)[0] * rows * cols * 4])
    p4 = tf.reshape(nothing, [-1, rows * 2, cols * 2, 18])
    return [p5, p4]
