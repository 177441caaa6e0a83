"""check_data.py (and voc_annotation.py, which runs the same check): every planted fault found and its file named."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import check_data
from tests.data_formats import CLASSES, write_coco, write_voc, write_yolo
from utils.data.voc import write_voc_xml

CLEAN = {"train": ["图 1", "图 2", "photo 3"], "val": ["验证 5", "验证 6"]}

# name -> (kind found, what the finding names)
FAULTS = {
    "坏 xml": ("unreadable annotation", "坏 xml.xml"),
    "没有 图": ("missing image", "没有 图.xml"),
    "截断": ("corrupt image", "截断.jpg"),
    "零 字节": ("corrupt image", "零 字节.jpg"),
    "乱码": ("corrupt image", "乱码.jpg"),
    "尺寸": ("size mismatch", "尺寸.xml"),
    "复制": ("duplicate image", "复制.jpg"),
    "重复 框": ("duplicate box", "重复 框.xml"),
    "出界": ("box outside the image", "出界.xml"),
    "无尺寸": ("box outside the image", "无尺寸.xml"),  # no <size>: found against the decoded image
    "零面积": ("degenerate box", "零面积.xml"),
    "未知": ("unknown class", "未知.xml"),
    "空": ("empty image", "空.jpg"),
}


def _image(path, hw=(48, 64), seed=0):
    pixels = np.random.default_rng(seed).integers(0, 255, (*hw, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """A VOC set with one fault of each kind in its train set, plus a clean val set."""
    root = write_voc(tmp_path_factory.mktemp("check") / "数据 检查", CLEAN)
    jpegs, xmls = root / "JPEGImages", root / "Annotations"
    cat = np.array([[5, 5, 30, 30]])
    for seed, name in enumerate(FAULTS, 10):
        if name not in ("没有 图", "空"):
            _image(jpegs / f"{name}.jpg", seed=seed)
        write_voc_xml(xmls / f"{name}.xml", f"{name}.jpg", (48, 64), cat, ["猫"])
    (xmls / "坏 xml.xml").write_text("<annotation><object>", "utf-8")
    data = (jpegs / "截断.jpg").read_bytes()
    (jpegs / "截断.jpg").write_bytes(data[: len(data) // 2])
    (jpegs / "零 字节.jpg").write_bytes(b"")
    (jpegs / "乱码.jpg").write_bytes(b"not an image at all" * 10)
    _image(jpegs / "尺寸.jpg", hw=(64, 48))  # the XML says 64 wide, 48 high
    shutil.copy(jpegs / "图 1.jpg", jpegs / "复制.jpg")
    write_voc_xml(xmls / "重复 框.xml", "重复 框.jpg", (48, 64), np.array([[5, 5, 30, 30]] * 2), ["猫", "猫"])
    write_voc_xml(xmls / "出界.xml", "出界.jpg", (48, 64), np.array([[50, 10, 80, 30]]), ["猫"])
    box = "<bndbox><xmin>40</xmin><ymin>1</ymin><xmax>90</xmax><ymax>20</ymax></bndbox>"
    (xmls / "无尺寸.xml").write_text(f"<annotation><object><name>猫</name>{box}</object></annotation>", "utf-8")
    write_voc_xml(xmls / "零面积.xml", "零面积.jpg", (48, 64), np.array([[10, 10, 10, 20]]), ["猫"])
    write_voc_xml(xmls / "未知.xml", "未知.jpg", (48, 64), np.array([[5, 5, 30, 30]]), ["dog"])
    write_voc_xml(xmls / "空.xml", "空.jpg", (48, 64), np.zeros((0, 4)), [])
    _image(jpegs / "空.jpg", seed=99)
    train = CLEAN["train"] + list(FAULTS)
    (root / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{n}\n" for n in train), "utf-8")
    with_unused = root.parent / "classes with unused.txt"
    with_unused.write_text("".join(f"{c}\n" for c in [*CLASSES, "未用"]), "utf-8")
    return root, with_unused


def test_every_planted_fault_is_found_and_named(faulty, tmp_path, capsys):
    root, with_unused = faulty
    out = tmp_path / "检查 结果"
    code = check_data.main(["--data", str(root), "--classes", str(with_unused), "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 2  # "未用" has no object in the training set: train.py would refuse
    report = json.loads((out / "data_check.json").read_text("utf-8"))
    findings = report["findings"]
    for name, (kind, named) in FAULTS.items():
        matching = [f for f in findings if f["kind"] == kind and named in f["message"]]
        assert matching, f"{kind} of {name} not found"
        assert named in captured.err
    assert any(f["kind"] == "unused class" and "'未用'" in f["message"] for f in findings)
    assert "'未用'" in report["unusable"][0] and "error: " in captured.err
    assert "图 1.jpg" in next(f["message"] for f in findings if f["kind"] == "duplicate image")
    assert "dog" in next(f["message"] for f in findings if f["kind"] == "unknown class")
    # The summary table: objects per class and set, findings per kind.
    assert "unusable for training (exit code 2)" in captured.out and "duplicate box" in captured.out
    assert (out / "labels.png").stat().st_size > 10_000

    # With a class list the data matches, the same faults are warnings: exit code 1.
    code = check_data.main(["--data", str(root), "--classes", str(root / "classes.txt"), "--output", str(out),
                            "--no-plots"])  # fmt: skip
    counts = json.loads((out / "data_check.json").read_text("utf-8"))["counts_by_kind"]
    assert code == 1 and "unused class" not in counts and counts["corrupt image"] == 3


@pytest.mark.parametrize("kind", ["voc", "yolo", "coco"])
def test_clean_data_in_every_format_passes(kind, tmp_path, capsys):
    writer = {"voc": write_voc, "yolo": write_yolo, "coco": write_coco}[kind]
    data = writer(tmp_path / "干净 数据", CLEAN)
    classes = ["--classes", str(data / "classes.txt")] if kind == "voc" else []  # the others name their classes
    code = check_data.main(["--data", str(data), *classes, "--output", str(tmp_path / "out"), "--no-plots"])
    out = capsys.readouterr().out
    assert code == 0 and "no problem found" in out and "小 狗" in out
