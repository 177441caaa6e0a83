"""The training input pipeline: annotation lines -> augmented, batched images and padded boxes.

Each element is ``(image, gt)``:
    image: uint8 (H, W, 3) RGB, the network input (the train step divides by 255).
    gt: float32 (max_boxes, 5), pixel xyxy in the network input + class id; padding rows are
        all -1 (see utils.training.loss).

Augmentation (training only), darknet/bubbliiiing style, all in NumPy/OpenCV per sample:
    * random placement: aspect jitter, random scale, random offset on a grey canvas, flip;
    * mosaic (probability `mosaic_prob`): four such images cut at a random centre point;
    * mixup (probability `mixup_prob`, only on mosaic samples, i.e. after mosaic): blended 50/50
      with another randomly placed image, boxes of both kept;
    * HSV jitter.
Validation samples are letterboxed only, exactly as inference does (utils.inference.letterbox).

Determinism: the plan of an epoch (order, mosaic/mixup draws, partners, per-sample seeds) comes
from `np.random.default_rng((seed, epoch))` and each sample is drawn from its own seed, so the
batches do not depend on how many threads load them.

A file that cannot be decoded is reported once on stderr, counted in `corrupt_images`, and its
samples are dropped; later epochs leave it out.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from utils.data.annotations import AnnotatedImage
from utils.data.images import ImageLoadError, load_image
from utils.defaults import JITTER, MIXUP_PROB, MOSAIC_PROB, SCALE_RANGE
from utils.inference.letterbox import LETTERBOX_FILL, letterbox, letterbox_boxes

logger = logging.getLogger("yolov4_tiny.data")

GREY = LETTERBOX_FILL
MIN_BOX_SIDE = 2.0  # boxes narrower or lower than this (pixels) after augmentation are dropped
_PLAN_COLUMNS = 8  # idx0..idx3, mosaic, mixup, mixup partner, sample seed


def default_loaders() -> int:
    """Parallel sample loaders: two per usable core. A loader waits on file reads and the GIL part of
    the time (measured with benchmarks/bench_train.py at 128: pipeline overhead 2% with two per
    core, 16% with one)."""
    return 2 * usable_cores()


def _threaded_batches(load_sample, plan: np.ndarray, batch_size: int, parallel: int, drop_remainder: bool):
    """Batches of `load_sample(row)` over the rows of `plan`, in order, samples whose `ok` is False
    left out; at most `parallel` loads run at once, and at most two batches' worth are queued."""
    from concurrent.futures import ThreadPoolExecutor

    window = max(parallel, 2 * batch_size)
    pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="yolo-loader")
    pending = deque()
    rows = iter(plan)
    try:
        for row in itertools.islice(rows, window):
            pending.append(pool.submit(load_sample, row))
        images, gts = [], []
        while pending:
            image, gt, ok = pending.popleft().result()
            for row in itertools.islice(rows, 1):
                pending.append(pool.submit(load_sample, row))
            if not ok:
                continue
            images.append(image)
            gts.append(gt)
            if len(images) == batch_size:
                yield np.stack(images), np.stack(gts)
                images, gts = [], []
        if images and not drop_remainder:
            yield np.stack(images), np.stack(gts)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def usable_cores() -> int:
    """CPU cores this process may run on: its affinity (taskset, a container's cpuset), else all."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity on this platform (macOS, Windows)
        return os.cpu_count() or 1


def _keep_valid(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip (M, 5) pixel xyxy + class to the canvas and drop boxes that became too small."""
    boxes = boxes.copy()
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    keep = (boxes[:, 2] - boxes[:, 0] >= MIN_BOX_SIDE) & (boxes[:, 3] - boxes[:, 1] >= MIN_BOX_SIDE)
    return boxes[keep]


def random_placement(
    image: np.ndarray,
    boxes: np.ndarray,
    rng: np.random.Generator,
    canvas_hw: tuple[int, int],
    jitter: float,
    scale_range: tuple[float, float],
    flip_prob: float,
    anchor: tuple[float, float, str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Resize with aspect jitter and random scale, place on a grey canvas, maybe flip.

    Args:
        image: (h, w, 3) uint8.
        boxes: (M, 5) pixel xyxy + class, in `image`.
        canvas_hw: output (H, W).
        jitter: aspect ratio is multiplied by U(1-j, 1+j) / U(1-j, 1+j).
        scale_range: the longer side becomes U(*scale_range) times the canvas side.
        anchor: for mosaic, (x, y, corner) places the image's `corner` ("tl", "tr", "bl", "br")
            at canvas point (x, y) instead of a random offset.
    Returns: canvas (H, W, 3) uint8, boxes (M', 5) on the canvas (clipped, small ones dropped).
    """
    ih, iw = image.shape[:2]
    h, w = canvas_hw
    aspect = iw / ih * rng.uniform(1 - jitter, 1 + jitter) / rng.uniform(1 - jitter, 1 + jitter)
    scale = rng.uniform(*scale_range)
    if aspect < 1:
        nh = max(1, int(scale * h))
        nw = max(1, int(nh * aspect))
    else:
        nw = max(1, int(scale * w))
        nh = max(1, int(nw / aspect))
    if anchor is None:
        dx = int(rng.uniform(0, w - nw)) if w > nw else -int(rng.uniform(0, nw - w))
        dy = int(rng.uniform(0, h - nh)) if h > nh else -int(rng.uniform(0, nh - h))
    else:
        x, y, corner = anchor
        dx = int(x) - (nw if corner[1] == "r" else 0)
        dy = int(y) - (nh if corner[0] == "b" else 0)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    flip = rng.uniform() < flip_prob
    if flip:
        resized = resized[:, ::-1]
    canvas = np.full((h, w, 3), GREY, np.uint8)
    x0, y0, x1, y1 = max(dx, 0), max(dy, 0), min(dx + nw, w), min(dy + nh, h)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = resized[y0 - dy : y1 - dy, x0 - dx : x1 - dx]

    boxes = boxes.astype(np.float32).copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]] * nw / iw
    boxes[:, [1, 3]] = boxes[:, [1, 3]] * nh / ih
    if flip:
        boxes[:, [0, 2]] = nw - boxes[:, [2, 0]]
    boxes[:, [0, 2]] += dx
    boxes[:, [1, 3]] += dy
    return canvas, _keep_valid(boxes, w, h)


def augment_hsv(image: np.ndarray, rng: np.random.Generator, gains: tuple[float, float, float]) -> np.ndarray:
    """Random hue, saturation and value gains (yolov5's augment_hsv) on an RGB uint8 image."""
    r = rng.uniform(-1, 1, 3) * np.asarray(gains) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    merged = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return cv2.cvtColor(merged, cv2.COLOR_HSV2RGB)


class CorruptImageError(Exception):
    """An image file that cannot be read or decoded; `index` is its position in the data set."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


class YoloDataset:
    """The training and validation samples of a list of annotated images, batched: NumPy arrays
    loaded by a pool of threads (`batches`, every Keras backend), which `dataset` carries into
    tf.data for TensorFlow.

    Args:
        images: the annotation lines (utils.data.annotations.AnnotatedImage); boxes pixel xyxy.
        input_shape: network input (height, width).
        train: augment (True) or only letterbox (False).
        max_boxes: boxes per image after padding (extra boxes are dropped).
        mosaic_prob, mixup_prob: per-sample probabilities (mixup applies to mosaic samples).
        jitter, scale_range, mosaic_scale_range, flip_prob, hsv_gains: augmentation strengths.
        seed: the seed of every random draw.

    The defaults are train.py's (utils/defaults.py).
    """

    def __init__(
        self,
        images: Sequence[AnnotatedImage],
        input_shape: tuple[int, int],
        train: bool = True,
        max_boxes: int = 100,
        mosaic_prob: float = MOSAIC_PROB,
        mixup_prob: float = MIXUP_PROB,
        jitter: float = JITTER,
        scale_range: tuple[float, float] = SCALE_RANGE,
        mosaic_scale_range: tuple[float, float] = (0.4, 1.0),
        flip_prob: float = 0.5,
        hsv_gains: tuple[float, float, float] = (0.1, 0.7, 0.4),
        seed: int = 0,
    ):
        if not images:
            raise ValueError("no images to build a data set from")
        self.images = list(images)
        self.input_shape = (int(input_shape[0]), int(input_shape[1]))
        self.train = train
        self.max_boxes = int(max_boxes)
        self.mosaic_prob, self.mixup_prob = float(mosaic_prob), float(mixup_prob)
        self.jitter, self.scale_range, self.mosaic_scale_range = jitter, tuple(scale_range), tuple(mosaic_scale_range)
        self.flip_prob, self.hsv_gains = flip_prob, tuple(hsv_gains)
        self.seed = int(seed)
        self._corrupt: set[int] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.images)

    @property
    def corrupt_images(self) -> list[str]:
        """Paths found unreadable so far."""
        with self._lock:
            return [self.images[i].path for i in sorted(self._corrupt)]

    # -- loading ---------------------------------------------------------------------------
    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (h, w, 3) uint8 RGB and boxes (M, 5) pixel xyxy + class, or CorruptImageError.

        The image is read by `utils.data.images.load_image`, as inference reads it (EXIF
        orientation, transparency on white, 16-bit, CMYK), so training sees what the detector sees.
        """
        item = self.images[index]
        try:
            image = load_image(item.path)
        except ImageLoadError as err:
            raise CorruptImageError(index, str(err)) from None
        boxes = np.concatenate([item.boxes, item.class_ids[:, None].astype(np.float32)], axis=1)
        return image, boxes

    def _placed(self, index, rng, scale_range, anchor=None):
        image, boxes = self._read(index)
        return random_placement(
            image, boxes, rng, self.input_shape, self.jitter, scale_range, self.flip_prob, anchor=anchor
        )

    def _mosaic(self, indices, rng, on_corrupt):
        """Four images around a random cut point. A corrupt tile is passed to `on_corrupt` and its
        quadrant left grey, without objects; only when every tile is corrupt is the sample lost
        (CorruptImageError)."""
        h, w = self.input_shape
        cut_x, cut_y = int(w * rng.uniform(0.3, 0.7)), int(h * rng.uniform(0.3, 0.7))
        canvas = np.full((h, w, 3), GREY, np.uint8)
        all_boxes, corrupt = [], 0
        regions = {  # corner of the image placed at the cut point -> the quadrant it fills
            "br": (0, 0, cut_x, cut_y),
            "bl": (cut_x, 0, w, cut_y),
            "tr": (0, cut_y, cut_x, h),
            "tl": (cut_x, cut_y, w, h),
        }
        for index, (corner, (x0, y0, x1, y1)) in zip(indices, regions.items(), strict=True):
            try:
                placed, boxes = self._placed(int(index), rng, self.mosaic_scale_range, anchor=(cut_x, cut_y, corner))
            except CorruptImageError as err:
                on_corrupt(err)
                corrupt += 1
                if corrupt == len(regions):
                    raise
                continue
            canvas[y0:y1, x0:x1] = placed[y0:y1, x0:x1]
            boxes = boxes.copy()
            boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], x0, x1)
            boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], y0, y1)
            all_boxes.append(_keep_valid(boxes, w, h))
        return canvas, np.concatenate(all_boxes, axis=0)

    def load_sample(self, plan_row: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """One sample from a row of the epoch plan (see `epoch_plan`).

        Returns: image (H, W, 3) uint8, gt (max_boxes, 5) float32, ok (False when an image was corrupt).
        """
        h, w = self.input_shape
        try:
            return (*self._sample(plan_row, self._record_corrupt), True)
        except CorruptImageError as err:
            self._record_corrupt(err)
            return np.zeros((h, w, 3), np.uint8), np.full((self.max_boxes, 5), -1, np.float32), False

    def _record_corrupt(self, err: CorruptImageError) -> None:
        """Leave the image out of the next epochs' plans; warn the first time."""
        with self._lock:
            first_time = err.index not in self._corrupt
            self._corrupt.add(err.index)
        if first_time:
            logger.warning(f"{err}; skipped")

    def _sample(self, plan_row: np.ndarray, on_corrupt) -> tuple[np.ndarray, np.ndarray]:
        """load_sample's image and gt; a corrupt mosaic tile goes to `on_corrupt`, any other
        corrupt image raises CorruptImageError."""
        idx = [int(i) for i in plan_row[:4]]
        use_mosaic, use_mixup, partner = bool(plan_row[4]), bool(plan_row[5]), int(plan_row[6])
        rng = np.random.default_rng(int(plan_row[7]))
        h, w = self.input_shape
        if not self.train:
            image, boxes = self._read(idx[0])
            image, info = letterbox(image, self.input_shape)
            boxes[:, :4] = letterbox_boxes(boxes[:, :4], info)
            boxes = _keep_valid(boxes, w, h)
        else:
            if use_mosaic:
                image, boxes = self._mosaic(idx, rng, on_corrupt)
                if use_mixup:
                    other, other_boxes = self._placed(partner, rng, self.scale_range)
                    image = ((image.astype(np.uint16) + other) // 2).astype(np.uint8)
                    boxes = np.concatenate([boxes, other_boxes], axis=0)
            else:
                image, boxes = self._placed(idx[0], rng, self.scale_range)
            image = augment_hsv(image, rng, self.hsv_gains)
        gt = np.full((self.max_boxes, 5), -1, np.float32)
        boxes = boxes[: self.max_boxes]
        gt[: len(boxes)] = boxes
        return np.ascontiguousarray(image), gt

    def first_samples(self, count: int, epoch: int = 0, mosaic: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The first `count` samples epoch `epoch`'s pipeline yields (the same plan and draws, so
        the start of its first batch), loaded here and now: images (n, H, W, 3) uint8, gt (n,
        max_boxes, 5) float32, n <= count. A corrupt image is passed over silently and not recorded,
        so the epoch's plan and the warnings stay the training's."""
        images, gts = [], []
        for row in self.epoch_plan(epoch, shuffle=self.train, mosaic=mosaic):
            if len(images) == count:
                break
            try:
                image, gt = self._sample(row, on_corrupt=lambda err: None)
            except CorruptImageError:
                continue
            images.append(image)
            gts.append(gt)
        h, w = self.input_shape
        if not images:
            return np.zeros((0, h, w, 3), np.uint8), np.zeros((0, self.max_boxes, 5), np.float32)
        return np.stack(images), np.stack(gts)

    # -- the epoch plan and the batches ---------------------------------------------------
    def epoch_plan(self, epoch: int, shuffle: bool = True, mosaic: bool = True) -> np.ndarray:
        """(num_samples, 8) int64: per sample idx0..idx3, mosaic, mixup, mixup partner, seed.

        Images found corrupt earlier are left out. Deterministic in (seed, epoch).
        """
        rng = np.random.default_rng((self.seed, int(epoch)))
        with self._lock:
            usable = np.array([i for i in range(len(self.images)) if i not in self._corrupt], dtype=np.int64)
        if usable.size == 0:
            raise RuntimeError("every image of the data set is corrupt")
        n = usable.size
        order = rng.permutation(usable) if shuffle else usable
        plan = np.zeros((n, _PLAN_COLUMNS), np.int64)
        plan[:, 0] = order
        plan[:, 1:4] = usable[rng.integers(0, n, size=(n, 3))]
        plan[:, 4] = (rng.uniform(size=n) < self.mosaic_prob) & mosaic & self.train
        plan[:, 5] = (rng.uniform(size=n) < self.mixup_prob) & (plan[:, 4] == 1)
        plan[:, 6] = usable[rng.integers(0, n, size=n)]
        plan[:, 7] = rng.integers(0, 2**62, size=n)
        return plan

    def batches(
        self,
        batch_size: int,
        epoch: int = 0,
        mosaic: bool = True,
        shuffle: bool | None = None,
        drop_remainder: bool = True,
        num_parallel_calls: int | None = None,
        global_batch: int | None = None,
        pipeline_id: int = 0,
        num_pipelines: int = 1,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch's batches (image uint8 (B, H, W, 3), gt float32 (B, max_boxes, 5)), NumPy arrays
        loaded by `num_parallel_calls` threads (default: two per usable core; OpenCV and the image
        decoders release the GIL) a batch or two ahead, in the plan's order whatever the threads'
        count. A corrupt sample is left out. The one batcher of every backend (`dataset` carries it
        into tf.data).

        Several replicas: `batch_size` is the per-replica batch, `global_batch` the sum over all
        replicas, and this pipeline (`pipeline_id` of `num_pipelines`, one per worker) keeps exactly
        the per-replica batches its replicas consume, so global step k sees the same images as a
        one-process run with batch `global_batch`.

        Stop iterating whenever: closing the generator (or dropping it) cancels the loads not
        started and waits for none of the others.
        """
        shuffle = self.train if shuffle is None else shuffle
        plan = self.epoch_plan(epoch, shuffle=shuffle, mosaic=mosaic)
        global_batch = batch_size if global_batch is None else int(global_batch)
        replicas = global_batch // batch_size
        if replicas * batch_size != global_batch or replicas % num_pipelines:
            raise ValueError(f"global batch {global_batch} is not {batch_size} x a multiple of {num_pipelines}")
        if replicas > 1:
            plan = plan[: len(plan) // global_batch * global_batch]
            replica_of_row = (np.arange(len(plan)) // batch_size) % replicas
            plan = plan[replica_of_row // (replicas // num_pipelines) == pipeline_id]
        parallel = default_loaders() if num_parallel_calls is None else int(num_parallel_calls)
        return _threaded_batches(self.load_sample, plan, batch_size, parallel, drop_remainder)

    def dataset(self, batch_size: int, drop_remainder: bool = True, **batches_kwargs):
        """`batches(batch_size, ...)` as a tf.data.Dataset, for TensorFlow's train step and
        tf.distribute (`distribute_datasets_from_function`); the same arguments. The epoch's plan is
        drawn when the dataset's iterator is made; deleting the iterator closes the batcher.
        """
        import tensorflow as tf

        h, w = self.input_shape
        rows = batch_size if drop_remainder else None
        signature = (
            tf.TensorSpec((rows, h, w, 3), tf.uint8),
            tf.TensorSpec((rows, self.max_boxes, 5), tf.float32),
        )
        ds = tf.data.Dataset.from_generator(
            lambda: self.batches(batch_size, drop_remainder=drop_remainder, **batches_kwargs),
            output_signature=signature,
        )
        options = tf.data.Options()
        # No autotuning thread: deleting an iterator joins it, and it only wakes at the end of its
        # tuning period (up to a minute), so an epoch ended with a stall of up to 60 s (measured:
        # benchmarks/bench_train.py --epoch-end). The batcher loads ahead on its own threads.
        options.autotune.enabled = False
        return ds.with_options(options).prefetch(1)

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, (len(self.images) - len(self._corrupt)) // batch_size)
