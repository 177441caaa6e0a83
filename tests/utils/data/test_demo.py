import pytest

from utils.data.demo import DEMO_CLASSES, write_demo_dataset
from utils.data.voc import parse_voc_xml, read_image_set


def test_demo_dataset_is_deterministic_and_valid(tmp_path):
    splits = {"train": 3, "val": 2}
    a = write_demo_dataset(tmp_path / "a", splits=splits, image_size=96, seed=3)
    b = write_demo_dataset(tmp_path / "b", splits=splits, image_size=96, seed=3)
    assert read_image_set(a, "train") == ["000000", "000001", "000002"]
    assert read_image_set(a, "val") == ["000003", "000004"]
    assert (a / "classes.txt").read_text().split() == list(DEMO_CLASSES)
    for image_id in read_image_set(a, "trainval"):
        jpg = f"JPEGImages/{image_id}.jpg"
        assert (a / jpg).read_bytes() == (b / jpg).read_bytes()
        ann = parse_voc_xml(a / "Annotations" / f"{image_id}.xml", list(DEMO_CLASSES))
        assert ann.warnings == [] and len(ann.boxes) >= 1
        assert (ann.boxes >= 0).all() and (ann.boxes <= 96).all()
        assert (ann.boxes[:, 2:] - ann.boxes[:, :2] >= 10).all()
    c = write_demo_dataset(tmp_path / "c", splits=splits, image_size=96, seed=4)
    assert (c / "JPEGImages" / "000000.jpg").read_bytes() != (a / "JPEGImages" / "000000.jpg").read_bytes()


def test_demo_images_of_varied_sizes(tmp_path):
    from PIL import Image

    root = write_demo_dataset(tmp_path / "v", splits={"train": 6}, image_size=(40, 80), seed=1)
    sizes = [Image.open(p).size for p in sorted((root / "JPEGImages").glob("*.jpg"))]
    assert all(40 <= w == h <= 80 for w, h in sizes) and len(set(sizes)) > 1
    for image_id, (w, _) in zip(read_image_set(root, "train"), sizes, strict=True):
        ann = parse_voc_xml(root / "Annotations" / f"{image_id}.xml", list(DEMO_CLASSES))
        assert ann.warnings == [] and (ann.boxes <= w).all()


def test_clutter_preset(tmp_path):
    """Ten classes, varied sizes and aspects, objects from tiny to large, difficult and truncated ones,
    deterministic by seed."""
    import xml.etree.ElementTree as ET

    import numpy as np
    from PIL import Image

    from utils.data.demo import CLUTTER_CLASSES, DIFFICULT_SIDE, MIN_OBJECT_SIDE

    splits = {"train": 10, "val": 2, "test": 4}
    a = write_demo_dataset(tmp_path / "a", splits=splits, preset="clutter", seed=7)
    b = write_demo_dataset(tmp_path / "b", splits=splits, preset="clutter", seed=7)
    assert (a / "classes.txt").read_text().split() == list(CLUTTER_CLASSES) and len(CLUTTER_CLASSES) == 10
    assert read_image_set(a, "test") == ["000012", "000013", "000014", "000015"]
    sides, difficult, truncated, shapes, classes = [], [], [], set(), set()
    for image_id in read_image_set(a, "trainval") + read_image_set(a, "test"):
        for folder in ("JPEGImages", "Annotations"):
            name = f"{folder}/{image_id}.{'jpg' if folder == 'JPEGImages' else 'xml'}"
            assert (a / name).read_bytes() == (b / name).read_bytes()
        w, h = Image.open(a / "JPEGImages" / f"{image_id}.jpg").size
        assert 320 <= w <= 640 and 320 <= h <= 640
        shapes.add((w, h))
        ann = parse_voc_xml(a / "Annotations" / f"{image_id}.xml", list(CLUTTER_CLASSES))
        assert ann.warnings == [] and ann.image_size == (h, w)
        assert (ann.boxes >= 0).all() and (ann.boxes[:, [0, 2]] <= w).all() and (ann.boxes[:, [1, 3]] <= h).all()
        side = (ann.boxes[:, 2:] - ann.boxes[:, :2]).max(axis=1)
        assert (side[~ann.difficult] >= DIFFICULT_SIDE).all()  # the tiny ones are difficult
        assert (side <= min(w, h) / 2 + 2).all()
        sides += side.tolist()
        difficult += ann.difficult.tolist()
        classes.update(ann.class_ids.tolist())
        xml = ET.parse(a / "Annotations" / f"{image_id}.xml").getroot()
        truncated += [t.text == "1" for t in xml.iter("truncated")]
    assert len(shapes) > 10 and any(w != h for w, h in shapes)
    assert min(sides) < 16 and max(sides) > 120 and min(sides) >= 2
    assert any(difficult) and not all(difficult)
    assert any(truncated) and len(truncated) == len(difficult)
    assert len(classes) >= 8
    c = write_demo_dataset(tmp_path / "c", splits={"train": 1}, preset="clutter", seed=8)
    assert (c / "JPEGImages" / "000000.jpg").read_bytes() != (a / "JPEGImages" / "000000.jpg").read_bytes()
    assert MIN_OBJECT_SIDE == 8 and np.isfinite(sides).all()


@pytest.mark.parametrize("preset", ["photos", "objects"])
def test_photos_preset(tmp_path, preset):
    """The ten classes on scikit-image's photographs: deterministic by seed, boxes inside the image,
    1-6 objects of up to 0.6 of the shorter side."""
    import numpy as np
    from PIL import Image

    pytest.importorskip("skimage", reason="the photos preset needs scikit-image (requirements-dev.txt)")
    from utils.data.demo import CLUTTER_CLASSES, PHOTO_FILES, load_photos

    splits = {"train": 8, "test": 2}
    a = write_demo_dataset(tmp_path / "a", splits=splits, preset=preset, seed=3)
    b = write_demo_dataset(tmp_path / "b", splits=splits, preset=preset, seed=3)
    assert (a / "classes.txt").read_text().split() == list(CLUTTER_CLASSES)
    photos = load_photos()
    assert len(photos) == len(PHOTO_FILES) >= 15
    sides, counts = [], []
    for image_id in read_image_set(a, "trainval") + read_image_set(a, "test"):
        image_bytes = (a / "JPEGImages" / f"{image_id}.jpg").read_bytes()
        assert image_bytes == (b / "JPEGImages" / f"{image_id}.jpg").read_bytes()
        image = np.asarray(Image.open(a / "JPEGImages" / f"{image_id}.jpg"))
        h, w = image.shape[:2]
        ann = parse_voc_xml(a / "Annotations" / f"{image_id}.xml", list(CLUTTER_CLASSES))
        assert ann.warnings == [] and ann.image_size == (h, w)
        assert (ann.boxes[:, [0, 2]] <= w).all() and (ann.boxes[:, [1, 3]] <= h).all() and (ann.boxes >= 0).all()
        side = (ann.boxes[:, 2:] - ann.boxes[:, :2]).max(axis=1)
        assert (side <= 0.6 * min(h, w) + 2).all()
        sides += side.tolist()
        counts.append(len(ann.boxes))
    assert max(counts) <= 6 and min(counts) >= 1 and max(sides) > 100


def test_objects_preset_colours_each_class():
    """"objects": every class's surface takes its own hue (what makes the set learnable in minutes),
    whatever it covers; the hues of different classes are far apart."""
    import cv2
    import numpy as np

    pytest.importorskip("skimage", reason="the objects preset needs scikit-image (requirements-dev.txt)")
    from utils.data.demo import CLUTTER_CLASSES, OBJECT_HUES, load_photos, objects_style

    style = objects_style(load_photos())
    rng = np.random.default_rng(0)
    for name, hue in zip(CLUTTER_CLASSES, OBJECT_HUES, strict=True):
        for under in (np.zeros(3), np.full(3, 255.0)):
            surface = np.clip(style.surface(rng, (24, 24), under, name), 0, 255).astype(np.uint8)
            mean = cv2.cvtColor(surface.mean(axis=(0, 1)).round().astype(np.uint8)[None, None], cv2.COLOR_BGR2HSV)
            distance = abs(int(mean[0, 0, 0]) - hue)
            assert min(distance, 180 - distance) <= 8, (name, hue, mean)
    assert min(b - a for a, b in zip(OBJECT_HUES, OBJECT_HUES[1:])) >= 15


def test_unknown_preset(tmp_path):
    with pytest.raises(ValueError, match="clutter"):
        write_demo_dataset(tmp_path, splits={"train": 1}, preset="paintings")
