"""load_image: every image kind people have, as displayed, uint8 RGB; what is not an image file refused."""

import numpy as np
import pytest
from PIL import Image

from utils.data.images import ImageLoadError, image_batches, image_size, load_image


def _pattern(height=48, width=64):
    """Smooth 16x16 blocks (survive JPEG at quality 100 nearly unchanged), no symmetry."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((16, 16, 1), dtype=np.uint8))


def _save_jpeg(array, path, orientation=None):
    image = Image.fromarray(array)
    kwargs = {"quality": 100, "subsampling": 0}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    image.save(path, **kwargs)


def test_rgb_png_roundtrip(tmp_path):
    array = _pattern()
    Image.fromarray(array).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (48, 64, 3)
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_becomes_three_equal_channels(tmp_path, mode):
    gray = Image.fromarray(_pattern()[..., 0]).convert(mode)
    gray.save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert out.shape == (48, 64, 3)
    np.testing.assert_array_equal(out[..., 0], np.asarray(gray.convert("L")))
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_rgba_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[0, 0, 3] = 255  # opaque
    rgba[0, 1, 3] = 0  # transparent
    rgba[0, 2, 3] = 128  # half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    out = load_image(tmp_path / "t.png")
    np.testing.assert_array_equal(out[0, 0], (10, 200, 30))
    np.testing.assert_array_equal(out[0, 1], (255, 255, 255))
    np.testing.assert_allclose(out[0, 2], (132, 227, 142), atol=2)


def test_palette_with_and_without_transparency(tmp_path):
    array = _pattern()
    palette = Image.fromarray(array).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), np.asarray(palette.convert("RGB")))
    palette.save(tmp_path / "pt.png", transparency=int(np.asarray(palette)[0, 0]))
    out = load_image(tmp_path / "pt.png")
    np.testing.assert_array_equal(out[0, 0], (255, 255, 255))


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk(tmp_path, suffix):
    array = _pattern()
    options = {"quality": 100} if suffix == ".jpg" else {}
    Image.fromarray(array).convert("CMYK").save(tmp_path / f"c{suffix}", **options)
    out = load_image(tmp_path / f"c{suffix}")
    assert out.shape == (48, 64, 3)
    assert np.abs(out.astype(int) - array).mean() < 3


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 30000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    out = load_image(tmp_path / "d.png")
    np.testing.assert_array_equal(out[0, :, 0], [0, 100, 255, 117])
    np.testing.assert_array_equal(out[..., 0], out[..., 1])


@pytest.mark.parametrize(
    "orientation,stored", [(6, lambda a: np.rot90(a, 1)), (3, lambda a: a[::-1, ::-1]), (8, lambda a: np.rot90(a, -1))]
)
def test_exif_rotated_jpeg_is_returned_as_displayed(tmp_path, orientation, stored):
    upright = _pattern()
    _save_jpeg(np.ascontiguousarray(stored(upright)), tmp_path / "r.jpg", orientation)
    out = load_image(tmp_path / "r.jpg")
    assert out.shape == upright.shape
    assert np.abs(out.astype(int) - upright).mean() < 2
    # The header-only size is the displayed one too (anchor k-means scales boxes by it).
    assert image_size(tmp_path / "r.jpg") == upright.shape[:2]


def test_corrupt_and_non_images_raise_naming_the_file(tmp_path):
    _save_jpeg(_pattern(), tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "notes.jpg").write_text("not an image")
    for name in ("truncated.jpg", "notes.jpg", "missing.png"):
        with pytest.raises(ImageLoadError, match=name):
            load_image(tmp_path / name)
    for name in ("notes.jpg", "missing.png"):
        with pytest.raises(ImageLoadError, match=name):
            image_size(tmp_path / name)
    assert issubclass(ImageLoadError, ValueError)


def test_a_named_pipe_is_refused_naming_it_never_waited_on(tmp_path):
    """A FIFO in an image list (predict.py's sources, a YOLO .txt listing, annotation lines) is an
    ImageLoadError naming it, for the one loader, the header reader and the data check, at once.
    Before, opening it waited for a writer forever; here a writer is let in after 10 s so that a
    regression fails instead of hanging the test run."""
    import os
    import threading

    from utils.data.check import inspect_image

    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    _save_jpeg(_pattern(), tmp_path / "real.jpg")

    def attempt(read):
        outcome = {}

        def run():
            try:
                outcome["value"] = read(fifo)
            except ImageLoadError as err:
                outcome["error"] = err

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(10)
        blocked = worker.is_alive()
        if blocked:  # let the regression's open() return: a writer that closes at once
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            worker.join(10)
        return blocked, outcome

    for read in (load_image, image_size):
        blocked, outcome = attempt(read)
        assert not blocked, f"{read.__name__} waited on a named pipe"
        assert "named pipe" in str(outcome.get("error")) and str(fifo) in str(outcome["error"])
    blocked, outcome = attempt(inspect_image)
    assert not blocked and str(fifo) in outcome["value"].error
    [batch] = image_batches([fifo, tmp_path / "real.jpg"], 2)
    assert batch.items == [tmp_path / "real.jpg"] and str(fifo) in str(batch.failures[0][1])
