import logging

import numpy as np
import pytest

from utils.data.annotations import AnnotatedImage
from utils.data.dataset import YoloDataset
from utils.data.demo import write_demo_dataset
from utils.data.voc import parse_voc_xml, read_image_set

SIZE = (64, 64)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = write_demo_dataset(tmp_path_factory.mktemp("demo"), splits={"train": 6}, image_size=96, seed=1)
    items = []
    for image_id in read_image_set(root, "train"):
        ann = parse_voc_xml(root / "Annotations" / f"{image_id}.xml", ["circle", "square", "triangle"])
        items.append(AnnotatedImage(str(root / "JPEGImages" / f"{image_id}.jpg"), ann.boxes, ann.class_ids))
    return items


def _collect(ds):
    return [(im.numpy(), gt.numpy()) for im, gt in ds]


def test_training_batches_are_deterministic_and_valid(images):
    # The heaviest placement (bubbliiiing's): aspect jitter, and scales that crop and shrink.
    heavy = dict(mosaic_prob=0.5, mixup_prob=0.5, jitter=0.3, scale_range=(0.25, 2.0))
    a = YoloDataset(images, SIZE, seed=3, **heavy)
    b = YoloDataset(images, SIZE, seed=3, **heavy)
    first = _collect(a.dataset(2, epoch=1, num_parallel_calls=1))
    second = _collect(b.dataset(2, epoch=1, num_parallel_calls=4))
    assert len(first) == 3
    for (im1, gt1), (im2, gt2) in zip(first, second, strict=True):
        assert im1.shape == (2, 64, 64, 3) and im1.dtype == np.uint8 and gt1.shape == (2, 100, 5)
        np.testing.assert_array_equal(im1, im2)
        np.testing.assert_array_equal(gt1, gt2)
        real = gt1[gt1[..., 4] >= 0]
        assert (real[:, :4] >= 0).all() and (real[:, [0, 2]] <= 64).all() and (real[:, [1, 3]] <= 64).all()
        assert (real[:, 2] > real[:, 0]).all() and set(real[:, 4].astype(int)) <= {0, 1, 2}
        padding = gt1[gt1[..., 4] < 0]
        assert (padding == -1).all()
    other = _collect(YoloDataset(images, SIZE, seed=4).dataset(2, epoch=1))
    assert not np.array_equal(first[0][0], other[0][0])


def test_epoch_plan_mosaic_switch_and_mixup_only_after_mosaic(images):
    ds = YoloDataset(images * 20, SIZE, mosaic_prob=0.5, mixup_prob=0.5, seed=0)
    plan = ds.epoch_plan(0)
    assert 0 < plan[:, 4].sum() < len(plan)
    assert (plan[:, 5] <= plan[:, 4]).all() and plan[:, 5].sum() > 0
    assert sorted(plan[:, 0].tolist()) == list(range(len(plan)))
    assert not ds.epoch_plan(0, mosaic=False)[:, 4:6].any()


def test_validation_letterboxes_boxes_exactly(images):
    ds = YoloDataset(images[:1], (64, 128), train=False)
    (image, gt), = _collect(ds.dataset(1, drop_remainder=False))
    # 96x96 -> scale 2/3 into 64x128, centred horizontally: dx = 32.
    expected = images[0].boxes * (2 / 3) + np.array([32, 0, 32, 0])
    real = gt[0][gt[0, :, 4] >= 0]
    np.testing.assert_allclose(real[:, :4], expected, atol=1e-4)
    assert (image[0, :, :32] == 128).all()


def test_corrupt_image_is_skipped_counted_and_warned(images, tmp_path, caplog):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    items = list(images) + [AnnotatedImage(str(broken), np.zeros((0, 4), np.float32), np.zeros(0, np.int32))]
    ds = YoloDataset(items, SIZE, mosaic_prob=0.0, mixup_prob=0.0, seed=0)
    with caplog.at_level(logging.WARNING, logger="yolov4_tiny"):
        batches = _collect(ds.dataset(1, epoch=0))
    assert len(batches) == 6
    assert ds.corrupt_images == [str(broken)]
    [warning] = [r for r in caplog.records if r.name == "yolov4_tiny.data"]  # once, not once per epoch or replica
    assert warning.levelno == logging.WARNING and "broken.jpg" in warning.getMessage()
    assert len(items) - 1 not in ds.epoch_plan(1)[:, 0]


def test_a_corrupt_mosaic_tile_costs_its_quadrant_not_the_sample(images, tmp_path, caplog):
    """Every training sample is a mosaic by default: one unreadable file among the four leaves its
    quadrant grey, and the other three images' objects train; the file is named once and left out
    of the next epochs."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    items = list(images) + [AnnotatedImage(str(broken), np.zeros((0, 4), np.float32), np.zeros(0, np.int32))]
    ds = YoloDataset(items, SIZE, mosaic_prob=1.0, seed=0)
    row = ds.epoch_plan(0)[0].copy()
    row[:4] = [0, len(items) - 1, 1, 2]  # the corrupt file as the second tile
    with caplog.at_level(logging.WARNING, logger="yolov4_tiny"):
        image, gt, ok = ds.load_sample(row)
    assert ok and image.shape == (64, 64, 3)
    assert (gt[:, 4] >= 0).sum() > 0  # the other tiles' objects
    assert ds.corrupt_images == [str(broken)]
    assert ["broken.jpg" in r.getMessage() for r in caplog.records if r.name == "yolov4_tiny.data"] == [True]
    row[:4] = len(items) - 1  # every tile corrupt: only then is the sample lost
    assert not ds.load_sample(row)[2]


def test_training_reads_images_as_inference_does(tmp_path):
    """One loader: transparency on white and EXIF orientation reach the network as they reach the detector."""
    from PIL import Image

    from utils.data.images import load_image
    from utils.inference.letterbox import letterbox

    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[:, :32] = (200, 30, 30, 255)  # opaque red left half, transparent right half
    transparent = tmp_path / "cutout.png"
    Image.fromarray(rgba, "RGBA").save(transparent)

    tall = np.zeros((32, 64, 3), np.uint8)
    tall[:, :16] = 250  # a bright stripe on the left of the stored pixels
    rotated = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: displayed rotated 90 degrees clockwise
    Image.fromarray(tall).save(rotated, exif=exif, quality=95)

    fed = {}
    for path in (transparent, rotated):
        item = AnnotatedImage(str(path), np.zeros((0, 4), np.float32), np.zeros(0, np.int32))
        ((image, _),) = _collect(YoloDataset([item], SIZE, train=False).dataset(1, drop_remainder=False))
        np.testing.assert_array_equal(image[0], letterbox(load_image(path), SIZE)[0])
        fed[path.name] = image[0]
    assert (fed["cutout.png"][:, 48:] == 255).all()  # the transparent half is white, not black
