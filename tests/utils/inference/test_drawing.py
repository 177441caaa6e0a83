"""Labels on saved images: class names in any script the fonts cover are drawn as characters."""

import logging
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from utils.inference import drawing
from utils.inference.drawing import draw_detections, draw_text, font_path, label_font

BOX = np.array([[20.0, 60.0, 180.0, 180.0]], np.float32)


def _label_area(name):
    """The label strip above BOX, drawn on white with one detection of class 0 named `name`."""
    image = np.full((200, 320, 3), 255, np.uint8)
    drawn = draw_detections(image, BOX, np.array([0.9]), np.array([0]), [name])
    return drawn[30:60, 20:320]


def _text_mask(text, font):
    image = Image.new("L", (200, 40), 0)
    ImageDraw.Draw(image).text((2, 2), text, fill=255, font=font)
    return np.asarray(image)


def test_chinese_class_names_are_drawn_as_their_characters(caplog):
    dejavu = ImageFont.truetype(font_path(), 20)
    # Without a CJK font, different characters are the same empty box: the check below can fail.
    assert np.array_equal(_text_mask("猫", dejavu), _text_mask("狗", dejavu))

    assert label_font("汽车").name == "Noto Sans CJK SC"
    caplog.set_level(logging.WARNING, logger="yolov4_tiny")
    cat, dog, car = (_label_area(name) for name in ("猫", "狗", "汽车"))
    assert not [r for r in caplog.records if r.name == "yolov4_tiny.inference"]  # every glyph found
    assert not np.array_equal(cat, dog)  # two characters, two different glyphs
    ink = [(area.min(axis=-1) < 60).sum() for area in (cat, dog, car)]
    assert min(ink) > 30  # black strokes on the coloured label
    assert ink[2] > ink[0]  # two characters draw more than one
    font = drawing.load_font(20, "猫")
    assert not np.array_equal(_text_mask("猫", font), _text_mask("狗", font))
    assert not np.array_equal(_text_mask("猫", font), _text_mask("猫", dejavu))


def test_latin_labels_keep_dejavu_sans():
    assert label_font("person").name == "DejaVu Sans"
    assert label_font("Straße Ελλάδα кот").name == "DejaVu Sans"
    assert label_font("ねこ 고양이 猫").name == "Noto Sans CJK SC"


def _glyph_warnings(caplog) -> list[str]:
    """The warnings utils.inference.drawing logged (the characters no font draws)."""
    records = [r for r in caplog.records if r.name == "yolov4_tiny.inference"]
    return [r.getMessage() for r in records if r.levelno >= logging.WARNING]


def test_a_script_no_font_covers_is_drawn_with_a_warning_naming_the_glyphs(caplog):
    label_font.cache_clear()
    caplog.set_level(logging.WARNING, logger="yolov4_tiny")
    area = _label_area("ሰላም")  # Ethiopic: neither DejaVu Sans nor Noto Sans CJK has it
    [warning] = _glyph_warnings(caplog)
    assert re.search(r"U\+1230 'ሰ'.*U\+121D 'ም'", warning)
    assert (area.min(axis=-1) < 60).sum() > 0  # the score is still written
    _label_area("ሰላም")
    assert len(_glyph_warnings(caplog)) == 1  # warned once per name, not once per image
    draw_text(np.zeros((60, 200, 3), np.uint8), "कुत्ता")
    assert re.search(r"U\+0915 'क'", _glyph_warnings(caplog)[-1])


def test_panel_grid_puts_captioned_panels_in_rows():
    from utils.inference.drawing import normalize_map, panel_grid

    panels = [np.full((50, 100, 3), value, np.uint8) for value in (0, 100, 200, 250)]
    grid = panel_grid(panels, ["a", "b", "c", "a much longer caption than the panel is wide"], columns=3)
    # Each panel scaled to 256 wide (128 high) under its caption strip; 2 rows of 3 with 4-pixel gaps.
    assert grid.shape[1] == 3 * 256 + 2 * 4
    cell_h = (grid.shape[0] - 4) // 2
    strip = cell_h - 128
    assert 10 < strip < 40
    assert (grid[strip : strip + 128, 256 + 4 : 2 * 256 + 4] == 100).all()  # panel 2, row 1, column 2
    assert (grid[cell_h + 4 + strip + 5, :256] == 250).all()  # panel 4 starts the second row
    assert (grid[-1, -1] == 40).all()  # an empty cell
    assert (grid[:strip, :256] == 255).any()  # white caption text
    with pytest.raises(ValueError):
        panel_grid(panels, ["only one caption"])
    values, low, high = normalize_map(np.array([[1.0, 3.0], [2.0, 3.0]]))
    assert (low, high) == (1.0, 3.0) and values.tolist() == [[0.0, 1.0], [0.5, 1.0]]
    assert normalize_map(np.full((2, 2), 0.25))[0].tolist() == [[0.0, 0.0], [0.0, 0.0]]
