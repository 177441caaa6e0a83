"""utils.data.coco: hostile COCO JSON (repeated ids, ids that are lists, deep nesting, numbers no
image has) refused or skipped with a message naming the file, never a traceback or a silent mix-up."""

import json

import pytest

from tests.data_formats import CLASSES, write_coco
from utils.data.annotations import UNKNOWN_CLASS, UNREADABLE_ANNOTATION
from utils.data.coco import CocoDataError, read_coco_set


@pytest.fixture
def coco(tmp_path):
    """The val split of the shared small set: its JSON path and content (images 5 and 6)."""
    path = write_coco(tmp_path / "coco") / "annotations" / "instances_val.json"
    return path, json.loads(path.read_text("utf-8"))


def _rewrite(path, content):
    path.write_text(json.dumps(content, ensure_ascii=False), "utf-8")


@pytest.mark.parametrize("what", ["images", "categories"])
def test_two_images_or_two_categories_with_one_id_are_refused_by_id(coco, what):
    path, content = coco
    entries = content[what]
    entries[1]["id"] = entries[0]["id"]
    _rewrite(path, content)
    with pytest.raises(CocoDataError, match=f"two {what} have id {entries[0]['id']}") as error:
        read_coco_set(path, CLASSES)
    assert str(path) in str(error.value)


def test_a_json_nested_100000_deep_is_an_error_naming_the_file(coco):
    path, _ = coco
    path.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}", "utf-8")
    with pytest.raises(CocoDataError, match="nested too deeply") as error:
        read_coco_set(path, CLASSES)
    assert str(path) in str(error.value)


def test_ids_that_are_lists_and_sizes_of_1e400_are_skipped_naming_the_file(coco):
    path, content = coco
    first, second = content["images"]
    second["id"] = [second["id"]]  # the image entry is skipped (and its annotation with it)
    first["width"] = 1e400  # written as Infinity: the size is unknown, the image kept
    [annotation, *_] = [a for a in content["annotations"] if a["image_id"] == first["id"]]
    annotation["category_id"] = [annotation["category_id"]]
    _rewrite(path, content)
    split = read_coco_set(path, CLASSES)
    [image] = split.images
    assert image.image_id == str(first["id"]) and image.size is None
    kinds = sorted(issue.kind for issue in split.issues)
    assert kinds == [UNKNOWN_CLASS, UNREADABLE_ANNOTATION, UNREADABLE_ANNOTATION]
    assert all(str(path) in issue.message for issue in split.issues)
