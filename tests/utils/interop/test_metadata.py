"""utils.interop.metadata: export metadata is checked when it is read; what a decoder could not use
(masks past the anchors, names that do not count the classes, NaN anchors, deep JSON) is a
MetadataError naming the file, not an IndexError later."""

import json

import pytest

from utils.errors import YoloError
from utils.interop.metadata import MetadataError, metadata_path, read_metadata, write_metadata


def valid_metadata(num_classes: int = 3, input_hw=(64, 64)) -> dict:
    """The parts of export_metadata's output that the backends and the Detector read."""
    width = 3 * (5 + num_classes)
    return {
        "format": "tflite",
        "num_classes": num_classes,
        "class_names": [f"class {i}" for i in range(num_classes)],
        "anchors": [[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]],
        "anchors_mask": [[3, 4, 5], [1, 2, 3]],
        "scale_x_y": 1.05,
        "input_shape": list(input_hw),
        "outputs": [
            {"name": "p5", "shape": [None, input_hw[0] // 32, input_hw[1] // 32, width]},
            {"name": "p4", "shape": [None, input_hw[0] // 16, input_hw[1] // 16, width]},
        ],
        "include_nms": False,
    }


def test_valid_metadata_reads_back(tmp_path):
    model = tmp_path / "m.tflite"
    write_metadata(metadata_path(model), valid_metadata())
    assert read_metadata(model) == json.loads(json.dumps(valid_metadata()))


def _edit(key, value):
    def edit(metadata):
        metadata[key] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (_edit("anchors_mask", [[3, 4, 9], [1, 2, 3]]), "refers past the 6 anchors"),
        (_edit("anchors_mask", [[3, 4, 5], [1, 2]]), "anchors_mask must be"),
        (_edit("class_names", ["a", "b"]), "2 class_names for num_classes 3"),
        (lambda m: m.update(num_classes=4, class_names=None), "does not end in 27 channels"),
        (_edit("num_classes", "3"), "num_classes must be an integer"),
        (_edit("anchors", [[float("nan"), 14]] + [[10, 14]] * 5), "finite positive"),
        (_edit("scale_x_y", float("inf")), "scale_x_y must be"),
        (_edit("input_shape", [32000, 32000]), "input_shape"),
        (lambda m: m.pop("anchors"), "lacks ['anchors']"),
    ],
    ids=["mask-index", "mask-lengths", "names", "classes-vs-heads", "classes-text", "nan-anchor", "scale", "size",
         "missing"],
)  # fmt: skip
def test_unusable_metadata_is_an_error_naming_the_file(tmp_path, edit, fragment):
    model = tmp_path / "m.tflite"
    metadata = valid_metadata()
    edit(metadata)
    sidecar = metadata_path(model)
    sidecar.write_text(json.dumps(metadata), "utf-8")  # NaN and Infinity as Python's json writes them
    with pytest.raises(MetadataError) as error:
        read_metadata(model)
    assert str(sidecar) in str(error.value) and fragment in str(error.value)
    assert isinstance(error.value, YoloError) and isinstance(error.value, ValueError)


def test_metadata_nested_100000_deep_is_an_error_naming_the_file(tmp_path):
    model = tmp_path / "m.tflite"
    sidecar = metadata_path(model)
    sidecar.write_text('{"anchors": ' + "[" * 100_000 + "]" * 100_000 + "}", "utf-8")
    with pytest.raises(MetadataError, match="nested too deeply"):
        read_metadata(model)
