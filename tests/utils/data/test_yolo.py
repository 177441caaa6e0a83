"""utils.data.yolo: records of another format written as a data.yaml set read back the same; hostile
data.yaml and label files refused or skipped, naming the file (and line), in bounded memory."""

import os

import numpy as np
import pytest

from utils.data.demo import CLUTTER_CLASSES, write_demo_dataset
from utils.data.sources import open_data


def test_write_yolo_data_round_trip(tmp_path):
    from utils.data.yolo import write_yolo_data

    voc = write_demo_dataset(tmp_path / "voc", splits={"train": 3, "val": 2}, image_size=(100, 160), preset="clutter")
    names = list(CLUTTER_CLASSES)
    source = open_data(voc)
    splits = {s: source.read([s], names).images for s in ("train", "val")}
    kept = {s: [r.without_difficult() for r in records] for s, records in splits.items()}
    yaml_path = write_yolo_data(tmp_path / "yolo", kept, names)

    yolo = open_data(yaml_path)
    assert yolo.kind == "yolo" and yolo.class_names == names
    for split, records in kept.items():
        back = {r.image_id: r for r in yolo.read([split], names).images}
        assert sorted(back) == sorted(r.image_id for r in records)
        for record in records:
            got = back[record.image_id]
            assert got.size == record.size
            np.testing.assert_array_equal(got.class_ids, record.class_ids)
            np.testing.assert_allclose(got.boxes, record.boxes, atol=1e-3)
            assert not got.difficult.any()


# ------------------------------------------------------------------------- hostile data files
def _yolo_set(tmp_path):
    from tests.data_formats import write_yolo

    return write_yolo(tmp_path / "yolo")


def _read_train(yaml_path):
    from tests.data_formats import CLASSES

    return open_data(yaml_path).read(["train"], CLASSES)


def test_a_negative_class_id_is_skipped_with_a_warning_naming_the_line(tmp_path):
    yaml_path = _yolo_set(tmp_path)
    label = yaml_path.parent / "labels" / "train" / "图 2.txt"
    label.write_text("-1 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.4 0.4\n", "utf-8")
    split = _read_train(yaml_path)
    image = next(i for i in split.images if i.image_id == "图 2")
    assert image.class_ids.tolist() == [2]  # not -1 read as the last class
    [issue] = [i for i in split.issues if i.path == str(label)]
    assert issue.kind == "unknown class" and f"{label}:1: class id -1" in issue.message


def test_a_class_id_of_1e300_is_skipped_not_a_traceback(tmp_path):
    yaml_path = _yolo_set(tmp_path)
    label = yaml_path.parent / "labels" / "train" / "图 2.txt"
    label.write_text("2 0.5 0.5 0.4 0.4\n1e300 0.5 0.5 0.2 0.2\n", "utf-8")
    split = _read_train(yaml_path)
    image = next(i for i in split.images if i.image_id == "图 2")
    assert image.class_ids.tolist() == [2]
    [issue] = [i for i in split.issues if i.path == str(label)]
    assert f"{label}:2: class id 1e300" in issue.message


# Nine levels of nine references: 9**9 = 387 million names once expanded, in about 400 bytes.
_ALIAS_CHAIN = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)
)
_READ_IN_A_SMALL_PROCESS = """
import resource, sys
from utils.data.yolo import YoloDataError, read_data_yaml
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB: the expansion needs 2.4 GB
try:
    read_data_yaml(sys.argv[1])
except YoloDataError as err:
    print(err)
    sys.exit(3)
"""


@pytest.mark.parametrize("entry", ["names: *a8\ntrain: images/train\n", "names: [cat]\ntrain: *a8\n"])
def test_a_yaml_alias_bomb_is_refused_in_bounded_memory_and_time(tmp_path, entry):
    import subprocess
    import sys
    from pathlib import Path

    yaml_path = tmp_path / "data.yaml"
    yaml_path.write_text(_ALIAS_CHAIN + entry, "utf-8")
    assert yaml_path.stat().st_size < 600
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", _READ_IN_A_SMALL_PROCESS, str(yaml_path)],
        cwd=root, capture_output=True, text=True, timeout=120, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 3, done.stderr[-2000:]
    assert str(yaml_path) in done.stdout


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("train: images/train\nnames: [cat, [dog, bird]]\n", "names must be names or paths"),
        ("train: [images/train, {a: 1}]\nnames: [cat]\n", "train entries must be names or paths"),
        ("path: [a, b]\ntrain: images/train\nnames: [cat]\n", "path must be names or paths"),
        ("train: images/train\nnames: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply"),
    ],
)
def test_a_data_yaml_with_lists_where_names_go_is_refused(tmp_path, text, fragment):
    from utils.data.yolo import YoloDataError, read_data_yaml

    yaml_path = tmp_path / "data.yaml"
    yaml_path.write_text(text, "utf-8")
    with pytest.raises(YoloDataError, match=fragment) as error:
        read_data_yaml(yaml_path)
    assert str(yaml_path) in str(error.value)
