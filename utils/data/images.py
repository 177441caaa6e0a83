"""Reading images the way people have them, into one array layout: uint8 RGB, (H, W, 3).

What `load_image` accepts and what it does with it:

* RGB, grayscale (L, 1-bit), CMYK, YCbCr, LAB, HSV: converted to RGB.
* 16-bit images (PNG "I;16", 32-bit integer "I", float "F"): scaled from their 16-bit range to
  8 bits (value / 257), not clipped at 255 (which would turn most of the image white).
* Transparency (RGBA, LA, PA, palette images with a transparent colour): composited on a
  **white** background, as image viewers and browsers show them on a page. The network never sees
  the alpha channel; white keeps logos and cut-outs looking like the picture a person sees.
* EXIF orientation (phone photos): applied with `PIL.ImageOps.exif_transpose`, so the array is
  the image **as it is displayed**, and every box computed on it is in the displayed frame.
* Anything that cannot be decoded (missing file, truncated or corrupt data, not an image):
  `ImageLoadError`, a `ValueError` whose message names the file.
* Anything that is not a regular file (a named pipe, a socket, a device, a folder):
  `ImageLoadError` before it is opened; opening a named pipe would wait for a writer forever.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.errors import YoloError

# Background for transparent pixels (see the module docstring).
TRANSPARENT_BACKGROUND = (255, 255, 255)
# Image files the project reads, the most common first (the order VOC folders are searched in).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm")
# Annotated copies of an image keep its format when it is one of these; anything else is written as PNG.
KEEP_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

T = TypeVar("T")

_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class ImageLoadError(YoloError, ValueError):
    """An image file that cannot be read; the message names the file."""


def is_image_path(path: str | Path) -> bool:
    """True when the file name has a common image suffix (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def check_regular_file(path: str | Path) -> None:
    """ImageLoadError naming `path` unless it is a regular file (or a link to one), checked without
    opening it: a named pipe in an image list would block the reader forever."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: no such file") from None
    except OSError as err:
        raise ImageLoadError(f"{path}: cannot read ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode) else "not a regular file"
        raise ImageLoadError(f"{path}: {kind}, not an image file")


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        # 16-bit PNGs open as "I;16" (or "I"); scale 0..65535 to 0..255 instead of clipping.
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*TRANSPARENT_BACKGROUND, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as displayed (EXIF orientation applied).

    Args:
        path: image file.

    Returns:
        uint8 array, shape (H, W, 3), RGB, C-contiguous; H and W as the image is displayed.

    Raises:
        ImageLoadError: the file is missing, unreadable, truncated or not an image.
    """
    path = Path(path)
    check_regular_file(path)
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so truncated files fail here and not later
            image = ImageOps.exif_transpose(image)
            array = _to_rgb(image)
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not an image (or a format Pillow cannot read)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageLoadError(f"{path}: cannot decode image ({err})") from None
    if array.ndim != 3 or array.shape[-1] != 3 or array.size == 0:
        raise ImageLoadError(f"{path}: decoded to an unusable array of shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.uint8)



# EXIF orientations that turn the image a quarter (width and height swap when displayed).
_QUARTER_TURNS = (5, 6, 7, 8)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image as `load_image` returns it (EXIF orientation applied), read
    from the file's header without decoding the pixels. Raises ImageLoadError naming the file."""
    check_regular_file(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not an image (or a format Pillow cannot read)") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageLoadError(f"{path}: cannot read the image header ({err})") from None
    return (width, height) if orientation in _QUARTER_TURNS else (height, width)

@dataclass
class ImageBatch:
    """One chunk of `image_batches`: the items whose image loaded, their images, and the failures."""

    items: list = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    failures: list[tuple[object, ImageLoadError]] = field(default_factory=list)


def image_batches(
    items: Sequence[T], batch_size: int, path_of: Callable[[T], str | Path | None] = lambda item: item
) -> Iterator[ImageBatch]:
    """Load the images of `items` a chunk of `batch_size` at a time, for a detector.

    Every script that detects on many files goes through this: an image that cannot be read is a
    failure of its chunk (with the `ImageLoadError` naming the file) and the rest go on.

    Args:
        items: anything that names an image (paths, image ids, annotation records).
        batch_size: items per chunk.
        path_of: the image path of an item; None when there is no file for it.
    """
    for start in range(0, len(items), batch_size):
        batch = ImageBatch()
        for item in items[start : start + batch_size]:
            path = path_of(item)
            try:
                if path is None:
                    raise ImageLoadError(f"{item}: no image file")
                batch.images.append(load_image(path))
                batch.items.append(item)
            except ImageLoadError as err:
                batch.failures.append((item, err))
        yield batch
