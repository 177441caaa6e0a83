"""utils.data.sources: one data set as VOC, YOLO txt and COCO JSON reads to the same records and the same mAP;
VOCdevkit years; what a folder holds decides the reader; the faults a reader names."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import get_map
from tests.data_formats import CLASSES, IMAGES, SPLITS, write_coco, write_voc, write_yolo
from utils.data.annotations import (
    BOX_OUTSIDE,
    UNKNOWN_CLASS,
    UNREADABLE_ANNOTATION,
    AnnotatedImage,
    read_annotation_lines,
    write_annotation_lines,
)
from utils.data.sources import DataFormatError, SetSpec, open_data
from utils.data.voc import VocLayoutError
from utils.evaluation.metrics import ImageDetections
from utils.evaluation.voc_eval import EvaluationLog, detections_to_coco_json, evaluate_split, load_voc_split


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    base = tmp_path_factory.mktemp("data") / "我的 数据"
    return {
        "voc": write_voc(base / "VOC 格式"),
        "yolo": write_yolo(base / "yolo 格式"),
        "coco": write_coco(base / "coco 格式"),
    }


def by_stem(images):
    return {Path(image.path).stem: image for image in images}


def test_the_three_formats_read_to_the_same_records(formats):
    sources = {kind: open_data(path) for kind, path in formats.items()}
    assert [source.kind for source in sources.values()] == ["voc", "yolo", "coco"]
    assert sources["voc"].class_names is None  # VOC names no class list: --classes or VOC's 20
    assert sources["yolo"].class_names == CLASSES == sources["coco"].class_names  # COCO: categories sorted by id
    for role, members in SPLITS.items():
        splits = {kind: source.read(source.default_sets(role), CLASSES) for kind, source in sources.items()}
        assert all(split.issues == [] and split.left_out == {} for split in splits.values())
        records = {kind: by_stem(split.images) for kind, split in splits.items()}
        assert all(sorted(found) == sorted(members) for found in records.values())
        for name in members:
            hw, boxes, classes, difficult = IMAGES[name]
            voc, yolo, coco = records["voc"][name], records["yolo"][name], records["coco"][name]
            for record in (voc, coco):  # VOC and COCO carry the difficult flag (COCO as iscrowd)
                np.testing.assert_allclose(record.boxes, np.reshape(boxes, (-1, 4)), atol=1e-4)
                assert record.class_ids.tolist() == [CLASSES.index(c) for c in classes]
                assert record.difficult.tolist() == [bool(d) for d in difficult]
            for record in (voc.without_difficult(), coco.without_difficult()):  # YOLO has no difficult objects
                np.testing.assert_allclose(yolo.boxes, record.boxes, atol=1e-4)
                assert yolo.class_ids.tolist() == record.class_ids.tolist()
            assert voc.size == yolo.size == coco.size == hw
            assert voc.image_id == yolo.image_id == name and coco.image_id.isdigit()
            assert all(Path(r.path).is_file() and Path(r.path).name == f"{name}.jpg" for r in (voc, yolo, coco))


# The fake detector's output per image (by file stem): hits, a shifted hit, a wrong class, a
# duplicate, a poor overlap, misses and a detection on an empty image.
FAKE = {
    "图 1": [([4, 4, 30, 30], "猫", 0.9), ([34, 10, 60, 40], "bird", 0.8)],
    "图 2": [([12, 10, 40, 50], "bird", 0.7)],
    "photo 3": [([0, 0, 20, 20], "猫", 0.95), ([0, 0, 21, 20], "猫", 0.6), ([40, 20, 60, 40], "猫", 0.5)],
    "空": [([10, 10, 20, 20], "小 狗", 0.3)],
}


def fake_detections(split):
    found = {}
    for image_id, path in split.paths.items():
        items = FAKE.get(Path(path).stem, [])
        found[image_id] = ImageDetections(
            np.array([b for b, _, _ in items], np.float64).reshape(-1, 4),
            np.array([s for _, _, s in items]),
            np.array([CLASSES.index(c) for _, c, _ in items]),
        )
    return found


def test_the_three_formats_evaluate_to_the_same_map(formats, tmp_path):
    results = {}
    for kind, data in formats.items():
        log = EvaluationLog()
        split = load_voc_split(data, "train", CLASSES, log, progress=False)
        assert log.problems == [] and log.notes == []
        evaluation = evaluate_split(split, fake_detections(split), CLASSES, log, source={}, coco=True)
        results[kind] = evaluation
    maps = {kind: e.result.map for kind, e in results.items()}
    assert 0.2 < maps["voc"] < 0.9
    assert maps["voc"] == pytest.approx(maps["yolo"], abs=1e-9) == pytest.approx(maps["coco"], abs=1e-9)
    for kind in ("yolo", "coco"):
        np.testing.assert_allclose(results[kind].result.ap, results["voc"].result.ap, atol=1e-9)
        assert results[kind].coco.stats["AP50"] == pytest.approx(results["voc"].coco.stats["AP50"], abs=1e-9)

    # get_map.py on the COCO copy, with the detections as a COCO results file (image ids: COCO's)
    # and the class names from the data: the same mAP, and results.json in UTF-8 with the names as they are.
    dets = tmp_path / "检测 结果.json"
    dets.write_text(json.dumps(detections_to_coco_json(results["coco"].detections), ensure_ascii=False), "utf-8")
    out = tmp_path / "map out"
    assert get_map.main(["--detections", str(dets), "--data", str(formats["coco"]), "--split", "train",
                         "--output", str(out), "--no-plots"]) == 0  # fmt: skip
    text = (out / "results.json").read_text("utf-8")
    assert '"小 狗"' in text and json.loads(text)["mAP"] == pytest.approx(maps["voc"], abs=1e-9)


def test_vocdevkit_years_and_set_names(formats, tmp_path):
    devkit = tmp_path / "VOCdevkit"
    write_voc(devkit / "VOC2007", {"train": ["图 1", "图 2"], "test": ["验证 5"]})
    write_voc(devkit / "VOC2012", {"trainval": ["photo 3", "图 1"]})
    source = open_data(devkit)
    assert source.kind == "voc" and {"2007:train", "2007:test", "2012:trainval"} <= set(source.set_names())
    split = source.read(["2007:train", "2012:trainval"], CLASSES)
    assert len(split.images) == 4 and len(set(split.image_ids)) == 4  # 图 1 of 2012 renamed, not merged
    assert split.image_ids[-1].endswith("VOC2012:trainval/图 1")
    assert source.read(["train"], CLASSES).image_ids == ["图 1", "图 2"]  # no year: VOC2007, as before
    log = EvaluationLog()
    assert list(load_voc_split(devkit, "2007:test", CLASSES, log, progress=False).ground_truths) == ["验证 5"]
    with pytest.raises(VocLayoutError, match="2011"):
        source.read(["2011:train"], CLASSES)
    # Several VOC folders given by path.
    other = formats["voc"]
    assert len(source.read([f"{other}:val"], CLASSES).images) == 2
    assert SetSpec.parse("2012:trainval") == SetSpec("2012", "trainval") and SetSpec.parse("val").where is None


def test_what_the_folder_holds_decides_the_reader(formats, tmp_path):
    assert open_data(formats["yolo"]).kind == "yolo" and open_data(formats["yolo"].parent).kind == "yolo"
    single = formats["coco"] / "annotations" / "instances_val.json"
    source = open_data(single)
    assert source.kind == "coco" and source.default_sets("train") == ["val"] and source.default_sets("val") == []
    assert [Path(i.path).stem for i in source.read(source.default_sets("test"), CLASSES).images] == SPLITS["val"]
    assert open_data(formats["coco"]).default_sets("test") == ["val"]  # COCO has no test annotations
    (tmp_path / "stuff").mkdir()
    for path, message in ((tmp_path / "nowhere", "no such file"), (tmp_path / "stuff", "VOC folder")):
        with pytest.raises(DataFormatError, match=message) as error:
            open_data(path)
        assert error.value.exit_code == 2
    with pytest.raises(DataFormatError, match="no split 'test'"):
        open_data(formats["yolo"]).read(["test"], CLASSES)


def test_yolo_label_faults_are_named(formats, tmp_path):
    root = tmp_path / "yolo"
    shutil.copytree(formats["yolo"].parent, root)
    labels = root / "labels" / "train"
    (labels / "图 1.txt").write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.1 0.1\n0 0.95 0.5 0.2 0.2\n", "utf-8")
    (labels / "图 2.txt").write_text("2 0.5 oops 0.2\n", "utf-8")
    (labels / "photo 3.txt").write_text("1 0.1 0.1 0.3 0.1 0.3 0.4\n", "utf-8")  # a polygon
    split = open_data(root).read(["train"], CLASSES)
    kinds = {(issue.kind, Path(issue.path).name) for issue in split.issues}
    assert kinds == {(UNKNOWN_CLASS, "图 1.txt"), (BOX_OUTSIDE, "图 1.txt"), (UNREADABLE_ANNOTATION, "图 2.txt")}
    assert "图 2.txt:1" in split.left_out["图 2"].message and "class id 7" in split.issues[0].message
    polygon = by_stem(split.images)["photo 3"]
    np.testing.assert_allclose(polygon.boxes, [[0.1 * 64, 0.1 * 48, 0.3 * 64, 0.4 * 48]], atol=1e-4)


def test_annotation_lines_keep_paths_with_spaces_and_any_script(tmp_path):
    images = [
        AnnotatedImage("/data/my images/图 1.jpg", [[0, 1, 10.5, 20]], [2]),
        AnnotatedImage("/data/plain.jpg", [[1, 2, 3, 4]], [0]),
        AnnotatedImage("/data/tab\tand  two spaces.jpg", np.zeros((0, 4)), []),
    ]
    path = tmp_path / "lines.txt"
    write_annotation_lines(path, images)
    text = path.read_text("utf-8")
    assert '"/data/my images/图 1.jpg" 0,1,10.50,20,2\n' in text and "/data/plain.jpg 1,2,3,4,0\n" in text
    read = read_annotation_lines(path)
    assert [i.path for i in read] == [i.path for i in images]
    np.testing.assert_allclose(read[0].boxes, images[0].boxes)
    # Lines written by hand or by other tools, with spaces and no quotes, read too.
    path.write_text("/data/my images/a b.jpg 1,2,3,4,0 5,6,7,8,1\n/data/no boxes here.jpg\n", "utf-8")
    read = read_annotation_lines(path)
    assert [i.path for i in read] == ["/data/my images/a b.jpg", "/data/no boxes here.jpg"]
    assert read[0].class_ids.tolist() == [0, 1] and len(read[1].boxes) == 0
