import numpy as np

import voc_annotation
from utils.data.annotations import format_annotation_line, parse_annotation_line, read_annotation_lines
from utils.data.demo import DEMO_CLASSES, write_demo_dataset
from utils.data.voc import parse_voc_xml


def test_annotation_line_round_trip():
    boxes = np.array([[0, 1, 10.5, 20], [3, 4, 5, 6]], np.float32)
    line = format_annotation_line("/x/a.jpg", boxes, [2, 0])
    assert line == "/x/a.jpg 0,1,10.50,20,2 3,4,5,6,0"
    parsed = parse_annotation_line(line)
    np.testing.assert_allclose(parsed.boxes, boxes)
    assert parsed.class_ids.tolist() == [2, 0]
    assert parse_annotation_line("/x/b.jpg").boxes.shape == (0, 4)


def test_voc_annotation_skips_bad_files_and_objects(tmp_path, capsys):
    root = write_demo_dataset(tmp_path / "VOCdevkit" / "VOC2007", splits={"train": 4, "val": 2}, image_size=96)
    (root / "Annotations" / "000000.xml").write_text("<annotation><object>")  # malformed
    (root / "JPEGImages" / "000001.jpg").unlink()  # missing image
    xml = root / "Annotations" / "000002.xml"
    xml.write_text(
        xml.read_text()
        .replace("<name>circle</name>", "<name>hexagon</name>", 1)
        .replace("<name>square</name>", "<name>hexagon</name>", 1)
        .replace("<name>triangle</name>", "<name>hexagon</name>", 1)
    )
    code = voc_annotation.main(
        ["--data", str(tmp_path / "VOCdevkit"), "--classes", str(root / "classes.txt"), "--output-dir", str(tmp_path)]
    )
    out, err = capsys.readouterr()
    assert code == 1
    assert "000000.xml" in err and "000001" in err and "'hexagon'" in err and "000002.xml" in err
    train = read_annotation_lines(tmp_path / "2007_train.txt")
    assert [a.path.rsplit("/", 1)[1] for a in train] == ["000002.jpg", "000003.jpg"]
    expected = parse_voc_xml(root / "Annotations" / "000003.xml", list(DEMO_CLASSES))
    np.testing.assert_array_equal(train[1].boxes, expected.boxes)
    assert len(read_annotation_lines(tmp_path / "2007_val.txt")) == 2
    assert "circle" in out and "train: 2 images" in out


def test_include_difficult_keeps_objects_marked_difficult(tmp_path):
    # seed 28: the two images hold every class even without the object marked difficult below
    root = write_demo_dataset(tmp_path / "VOC2007", splits={"train": 2}, image_size=64, seed=28)
    xml = root / "Annotations" / "000000.xml"
    xml.write_text(xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1))
    objects = {}
    for flag in ([], ["--include-difficult"]):
        out = tmp_path / ("with" if flag else "without")
        argv = ["--data", str(root), "--classes", str(root / "classes.txt"), "--splits", "train", "--output", str(out)]
        assert voc_annotation.main([*argv, *flag]) == 0
        objects[bool(flag)] = [len(a.boxes) for a in read_annotation_lines(out / "2007_train.txt")]
    in_xml = xml.read_text().count("<object>")
    assert objects[True][0] == in_xml and objects[False][0] == in_xml - 1
    assert objects[True][1] == objects[False][1]  # the other image has no difficult object
