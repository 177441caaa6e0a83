import numpy as np
import pytest

from utils.data.voc import VocFormatError, find_voc_root, parse_voc_xml, read_image_set, write_voc_xml

CLASSES = ["cat", "dog"]


def _xml(objects: str, size: str = "<size><width>100</width><height>80</height><depth>3</depth></size>") -> str:
    return f"<annotation><filename>a.jpg</filename>{size}{objects}</annotation>"


def _obj(name, box, difficult=0):
    xmin, ymin, xmax, ymax = box
    return (
        f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin>"
        f"<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def test_parse_converts_one_based_inclusive_to_continuous_xyxy(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(_xml(_obj("dog", (1, 1, 10, 20)) + _obj("cat", (50, 40, 100, 80), difficult=1)))
    ann = parse_voc_xml(path, CLASSES)
    np.testing.assert_allclose(ann.boxes, [[0, 0, 10, 20], [49, 39, 100, 80]])
    assert ann.class_ids.tolist() == [1, 0]
    assert ann.difficult.tolist() == [False, True]
    assert ann.image_size == (80, 100) and ann.filename == "a.jpg" and ann.warnings == []


def test_write_then_parse_round_trips(tmp_path):
    boxes = np.array([[0, 0, 10, 20], [5, 6, 7, 8]], np.float32)
    write_voc_xml(tmp_path / "b.xml", "b.jpg", (30, 40), boxes, ["dog", "cat"], difficult=np.array([0, 1], bool))
    ann = parse_voc_xml(tmp_path / "b.xml", CLASSES)
    np.testing.assert_array_equal(ann.boxes, boxes)
    assert ann.class_ids.tolist() == [1, 0] and ann.difficult.tolist() == [False, True]


@pytest.mark.parametrize(
    "obj, fragment",
    [
        (_obj("bird", (1, 1, 10, 10)), "'bird'"),
        (_obj("cat", (10, 10, 9, 20)), "zero area"),
        (_obj("cat", (10, 10, 120, 20)), "outside"),
    ],
)
def test_bad_objects_are_skipped_with_a_warning_naming_the_file(tmp_path, obj, fragment):
    path = tmp_path / "c.xml"
    path.write_text(_xml(obj + _obj("dog", (1, 1, 5, 5))))
    ann = parse_voc_xml(path, CLASSES)
    assert ann.class_ids.tolist() == [1]
    assert len(ann.warnings) == 1 and str(path) in ann.warnings[0] and fragment in ann.warnings[0]


def test_malformed_xml_raises_naming_the_file(tmp_path):
    path = tmp_path / "broken.xml"
    path.write_text("<annotation><object>")
    with pytest.raises(VocFormatError, match="broken.xml"):
        parse_voc_xml(path, CLASSES)


def test_layout_helpers(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("0001\n0002 1\n\n")
    assert find_voc_root(tmp_path / "VOCdevkit") == root
    assert read_image_set(root, "train") == ["0001", "0002"]
    with pytest.raises(FileNotFoundError):
        read_image_set(root, "val")


@pytest.mark.parametrize("width", ["1e400", "1e300"])  # 1e400: OverflowError (infinity) before
def test_an_image_size_beyond_any_image_is_an_error_naming_the_file(tmp_path, width):
    path = tmp_path / "huge.xml"
    path.write_text(_xml(_obj("cat", (1, 1, 10, 10)), size=f"<size><width>{width}</width><height>80</height></size>"))
    with pytest.raises(VocFormatError, match="huge.xml: bad <size>"):
        parse_voc_xml(path, CLASSES)

