
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
