"""The ONNX copies of `.keras` models that `load_detector` runs on CPUs: made once, then reused.

A `.keras` model loaded without a backend (`load_detector`, predict.py and get_map.py by default)
runs on ONNX Runtime on a CPU, which is faster there than the TensorFlow graph
(benchmarks/bench_inference.py). The ONNX file comes from utils/interop/export.py, the first time
a given file is run at a given input size, and lands here:

    $YOLO_CACHE_DIR                                   when set
    $XDG_CACHE_HOME/yolov4-tiny/onnx                  else, when XDG_CACHE_HOME is set
    ~/.cache/yolov4-tiny/onnx                         else (%LOCALAPPDATA%\\yolov4-tiny\\onnx on Windows)

named by a SHA-256 over the `.keras` file's bytes, the input size, the exporter's settings (an
int8 export's: its calibration images, by name, size and modification time, `files_fingerprint`) and
the versions of what writes the graph (`cache_key`): a changed file, another input size, or a new
tf2onnx / TensorFlow / Keras / `EXPORT_VERSION` gets a new export, never a stale one. Beside an
export, `<export>.runtime.json` (`verdict_path`) says which runtime ran it fastest here
(utils/interop/cpu_runtime.py). Nothing else is kept, so deleting the folder (or any file in it)
is always safe; the next run exports (or times) again.

A file appears whole or not at all: the export is written to a temporary file in the same folder
and renamed (`os.replace`), so a crash or a concurrent run never leaves half a model under the
final name (a killed export's temporary file is deleted a day later). A cached file that still
cannot be opened is removed (`discard`) and made again by the loader (utils/inference/engine/loader.py).

The folder holds at most $YOLO_CACHE_MAX_MB megabytes (MiB) of exports, DEFAULT_MAX_MB (2048,
about 80 exports of 24 MB) when unset: each new export removes the least recently used
ones (by the later of a file's access and modification times, as the file system keeps them)
until the rest fit, never the one just made. 0 keeps only the newest.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

from utils.errors import YoloError

CACHE_ENV = "YOLO_CACHE_DIR"
MAX_SIZE_ENV = "YOLO_CACHE_MAX_MB"
DEFAULT_MAX_MB = 2048
CACHE_NAME = "yolov4-tiny"
# Bump when the graph exported for the same .keras file and size changes (the exporter, its options).
EXPORT_VERSION = 1
# What the cached file is: utils/interop/export.py's ONNX fp32 raw heads, fixed input size, no NMS
# (the Detector's own decoding and NMS run on them; measured faster than the NMS inside, see
# benchmarks/bench_inference.py).
EXPORT_OPTIONS = {"format": "onnx", "precision": "fp32", "include_nms": False, "dynamic": False}
_VERSIONED = ("tf2onnx", "onnx", "tensorflow", "keras")
_READ_CHUNK = 1 << 20
# A temporary file this old is a killed export's, never a running one's.
STALE_SECONDS = 24 * 3600


class CacheError(YoloError, OSError):
    """The cache folder cannot be created or written; the message names it."""


def cache_dir() -> Path:
    """Where the ONNX copies live (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        base = Path(os.environ["XDG_CACHE_HOME"]).expanduser()
    elif os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    else:
        base = Path.home() / ".cache"
    return base / CACHE_NAME / "onnx"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def cache_key(keras_path: str | Path, input_hw: Sequence[int] | None, options: dict | None = None) -> str:
    """SHA-256 (hex) of the file's bytes and of everything else that shapes its export.

    input_hw: the (height, width) asked for; None: the model's own size (a fixed function of the
        file, so it needs no reading of the model here).
    options: what differs from EXPORT_OPTIONS (int8: {"precision": "int8", "calibration": ...}).
    """
    digest = hashlib.sha256()
    with open(keras_path, "rb") as file:
        while chunk := file.read(_READ_CHUNK):
            digest.update(chunk)
    settings = {
        "export_version": EXPORT_VERSION,
        "options": {**EXPORT_OPTIONS, **(options or {})},
        "input_hw": None if input_hw is None else [int(v) for v in input_hw],
        "versions": {package: _version(package) for package in _VERSIONED},
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def cached_path(keras_path: str | Path, input_hw: Sequence[int] | None, options: dict | None = None) -> Path:
    """Where the ONNX copy of `keras_path` at `input_hw` (exported with `options`, see `cache_key`)
    is (or would be) kept."""
    return cache_dir() / f"{cache_key(keras_path, input_hw, options)[:40]}.onnx"


def files_fingerprint(paths: Sequence[str | Path]) -> str:
    """SHA-256 (hex) of the files' resolved names, sizes and modification times, in order: changes
    when a file is replaced, added or removed, without reading them."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path).resolve()
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def max_cache_bytes() -> int:
    """The most bytes of exports the folder keeps: $YOLO_CACHE_MAX_MB MiB, else DEFAULT_MAX_MB.
    Raises CacheError when the variable is not a number >= 0."""
    text = os.environ.get(MAX_SIZE_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_MB << 20
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = -1.0
    if not 0 <= megabytes < float("inf"):
        raise CacheError(f"{MAX_SIZE_ENV}={text[:40]!r}: the ONNX cache's size must be a number of MB, 0 or more")
    return int(megabytes * (1 << 20))


def verdict_path(export: str | Path) -> Path:
    """Where utils/interop/cpu_runtime.py keeps which runtime runs `export` fastest here."""
    export = Path(export)
    return export.with_name(export.name + ".runtime.json")


def prune(folder: Path, limit: int, keep: Path | None = None) -> list[Path]:
    """Delete the least recently used exports in `folder` (see the module docstring) until the rest
    take at most `limit` bytes; `keep` is never deleted. Returns the files deleted. Temporary
    files are left to `store`; a file that cannot be deleted (gone meanwhile, not ours) is skipped."""
    exports = []
    for path in folder.glob("*.onnx"):
        if path.name.startswith("."):
            continue
        try:
            info = path.stat()
        except OSError:
            continue
        exports.append((max(info.st_atime, info.st_mtime), info.st_size, path))
    total = sum(size for _, size, _ in exports)
    deleted = []
    for _, size, path in sorted(exports):
        if total <= limit:
            break
        if path == keep:
            continue
        try:
            path.unlink()
        except OSError:
            continue
        verdict_path(path).unlink(missing_ok=True)
        total -= size
        deleted.append(path)
    return deleted


def store(final: Path, write: Callable[[Path], object]) -> Path:
    """Make the cached file `final` (a `cached_path`): `write(tmp)` writes it to a temporary
    `.onnx` path beside it, which is then renamed to `final`; then the folder is pruned to
    `max_cache_bytes()`. Returns `final`.

    Whatever `write` raises propagates (an OSError when the folder cannot be written), and its
    temporary files are removed. Raises CacheError when the folder cannot be created or
    YOLO_CACHE_MAX_MB is not a size.
    """
    limit = max_cache_bytes()
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        where = f"cannot create the ONNX cache {final.parent} ({err})"
        raise CacheError(f"{where}; set {CACHE_ENV} to a folder that can be written") from None
    _remove_stale_temporaries(final.parent)
    # A name of this process's own (files made with the user's umask, unlike mkstemp's 0600).
    tmp = final.with_name(f".{final.stem}.{os.getpid()}-{secrets.token_hex(4)}.onnx")
    sidecar = tmp.with_name(tmp.name + ".json")  # export_model's metadata file; the .onnx holds it too
    try:
        write(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
    prune(final.parent, limit, keep=final)
    return final


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files that a killed export left over a day ago (a running export's are newer)."""
    now = time.time()
    for leftover in folder.glob(".*.onnx*"):
        try:
            if now - leftover.stat().st_mtime > STALE_SECONDS:
                leftover.unlink()
        except OSError:  # gone meanwhile, or not ours to delete: leave it
            pass


def discard(path: str | Path) -> None:
    """Remove a cached file (one that cannot be opened), so the next `lookup` misses."""
    Path(path).unlink(missing_ok=True)
