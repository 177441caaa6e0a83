import numpy as np
import pytest

from nets.model_data import ANCHORS_MASK, STRIDES, load_anchors, load_class_names


def test_default_anchors_are_darknets():
    anchors = load_anchors()
    np.testing.assert_array_equal(anchors, [[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]])
    assert len(ANCHORS_MASK) == len(STRIDES) == 2
    # Coarse head (stride 32) gets the large anchors.
    assert anchors[list(ANCHORS_MASK[0])].min() > anchors[list(ANCHORS_MASK[1])].max() / 4


def test_class_files():
    assert len(load_class_names()) == 20
    from nets.model_data import COCO_CLASSES_PATH

    coco = load_class_names(COCO_CLASSES_PATH)
    assert len(coco) == 80 and coco[0] == "person" and coco[-1] == "toothbrush"


def test_bad_files_name_the_file(tmp_path):
    odd = tmp_path / "odd.txt"
    odd.write_text("10,14, 23")
    with pytest.raises(ValueError, match="odd.txt.*even number"):
        load_anchors(odd)
    words = tmp_path / "words.txt"
    words.write_text("10,abc")
    with pytest.raises(ValueError, match="words.txt"):
        load_anchors(words)
    dup = tmp_path / "dup.txt"
    dup.write_text("cat\ndog\ncat\n")
    with pytest.raises(ValueError, match=r"dup.txt.*\['cat'\]"):
        load_class_names(dup)


def test_input_size_forms_and_errors():
    from nets.model_data import parse_input_size

    assert parse_input_size("416") == (416, 416)
    assert parse_input_size("320x416") == parse_input_size("320,416") == (320, 416)
    for bad in ("100", "320x", "a,b", "0", "32x32x32"):
        with pytest.raises(ValueError, match="multiples of 32"):
            parse_input_size(bad)


def test_input_size_has_an_upper_bound_that_help_says():
    import argparse

    from nets.model_data import MAX_INPUT_SIDE, InputSizeError, check_input_hw, parse_input_size
    from utils.cli import add_input_size_argument

    assert parse_input_size(str(MAX_INPUT_SIDE)) == (MAX_INPUT_SIDE, MAX_INPUT_SIDE)
    too_big = MAX_INPUT_SIDE + 32
    for bad in (str(too_big), f"416x{too_big}", "32000"):
        with pytest.raises(InputSizeError, match=f"at most {MAX_INPUT_SIDE}"):
            parse_input_size(bad)
    with pytest.raises(InputSizeError, match=f"at most {MAX_INPUT_SIDE}"):
        check_input_hw((too_big, 416))
    parser = argparse.ArgumentParser()
    add_input_size_argument(parser)
    assert f"up to {MAX_INPUT_SIDE}" in " ".join(parser.format_help().split())  # however argparse wraps it
