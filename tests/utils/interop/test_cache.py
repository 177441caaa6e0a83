"""The default runtime of .keras models on CPUs: ONNX Runtime on their export, made once and kept
by content (utils/interop/cache.py), and the fallback to TensorFlow (utils/inference/engine/loader.py).

Most tests replace the exporter with one that counts its calls (and writes a given file, or
fails), so they check the cache's logic without a real export; the slow ones export for real once
and check that ONNX Runtime then detects what TensorFlow detects."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from nets.yolo import YoloV4Tiny
from tests.export_helpers import CONF, INPUT_HW, make_detecting_model
from utils.data.demo import write_demo_dataset
from utils.data.images import load_image
from utils.data.voc import find_image, read_image_set
from utils.inference.engine import loader
from utils.inference.engine.loader import load_detector
from utils.inference.letterbox import letterbox
from utils.interop import cache, export


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test starts with an empty cache of its own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def on_a_cpu(monkeypatch):
    """The machine counts as one where ONNX Runtime runs .keras models (also where a GPU is seen)."""
    monkeypatch.setattr(loader, "onnx_runtime_preferred", lambda: True)


def counting_exporter(monkeypatch, writes: bytes | None = None) -> list:
    """Replace export.py's exporter (which the loader calls) by one that records its calls and
    writes `writes` to the file asked for, or fails like a tf2onnx conversion when None."""
    calls = []

    def fake_export(model, fmt, out, **kwargs):
        calls.append({"format": fmt, "out": Path(out), **kwargs})
        if writes is None:
            raise RuntimeError("tf2onnx could not convert it")
        Path(out).write_bytes(writes)
        Path(out).with_name(Path(out).name + ".json").write_text("{}")  # as export_model does

    monkeypatch.setattr(export, "export_model", fake_export)
    return calls


# ------------------------------------------------------------------------------ the cache itself
def test_cache_folder_is_the_variable_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "mine"))
    assert cache.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "yolov4-tiny" / "onnx"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "yolov4-tiny" / "onnx"


def test_cache_key_is_the_content_the_input_size_and_the_exporter(monkeypatch, tmp_path):
    first, copy = tmp_path / "a.keras", tmp_path / "b.keras"
    first.write_bytes(b"model one")
    copy.write_bytes(b"model one")
    before = cache.cached_path(first, None)
    assert cache.cached_path(copy, None) == before  # the same bytes elsewhere: the same export
    sizes = {cache.cached_path(first, hw) for hw in (None, (64, 64), (64, 96))}
    assert len(sizes) == 3
    version = cache.EXPORT_VERSION
    monkeypatch.setattr(cache, "EXPORT_VERSION", version + 1)
    assert cache.cached_path(first, None) != before  # a changed exporter never reuses an old export
    monkeypatch.setattr(cache, "EXPORT_VERSION", version)
    assert cache.cached_path(first, None) == before
    first.write_bytes(b"model two")
    assert cache.cached_path(first, None) != before
    assert before.parent == cache.cache_dir() and before.suffix == ".onnx"


def test_store_leaves_a_whole_file_or_nothing(tmp_path):
    final = tmp_path / "cache" / "key.onnx"
    final.parent.mkdir()
    killed, running = final.parent / ".old.123-ab.onnx", final.parent / ".other.456-cd.onnx"
    killed.write_bytes(b"left by a killed export")
    running.write_bytes(b"being written")
    os.utime(killed, (1e9, 1e9))  # long ago

    def crash(out):  # killed half-way through writing
        out.write_bytes(b"half a mod")
        out.with_name(out.name + ".json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.store(final, crash)
    assert list(final.parent.iterdir()) == [running]  # the stale one removed, a fresh one kept
    running.unlink()

    def whole(out):
        out.write_bytes(b"a whole model")
        out.with_name(out.name + ".json").write_text("{}")

    assert cache.store(final, whole) == final
    assert [p.name for p in final.parent.iterdir()] == ["key.onnx"]  # no temporary file, no sidecar
    assert final.read_bytes() == b"a whole model"


def test_the_cache_is_pruned_least_recently_used_first_over_its_size(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    folder.mkdir()
    kib = 1024
    oldest, used, older = (folder / f"{name}.onnx" for name in ("oldest", "used", "older"))
    for age, path in enumerate((older, used, oldest), 1):
        path.write_bytes(b"x" * kib)
        os.utime(path, (1e9 + 1000 - age, 1e9 + 1000 - age))  # written long ago, oldest first
    os.utime(used, (2e9, 1e9))  # read long after it was written: recently used
    temporary = folder / ".running.1-ab.onnx"
    temporary.write_bytes(b"x" * kib)  # another run's export in progress: not the cache's to prune
    monkeypatch.setenv("YOLO_CACHE_MAX_MB", str(2.5 * kib / (1 << 20)))  # room for two files

    def write(out):
        out.write_bytes(b"n" * kib)

    cache.store(folder / "new.onnx", write)
    assert sorted(p.name for p in folder.iterdir()) == [".running.1-ab.onnx", "new.onnx", "used.onnx"]
    monkeypatch.setenv(cache.MAX_SIZE_ENV, "0")  # the one just made always stays
    cache.store(folder / "newer.onnx", write)
    assert sorted(p.name for p in folder.iterdir()) == [".running.1-ab.onnx", "newer.onnx"]
    monkeypatch.setenv(cache.MAX_SIZE_ENV, "lots")
    with pytest.raises(cache.CacheError, match="YOLO_CACHE_MAX_MB='lots'"):
        cache.store(folder / "newest.onnx", write)
    assert not (folder / "newest.onnx").exists()
    monkeypatch.delenv(cache.MAX_SIZE_ENV)
    assert cache.max_cache_bytes() == cache.DEFAULT_MAX_MB << 20 == 2 << 30


# ------------------------------------------------------------------ the loader's choice of runtime
@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "small.keras"
    YoloV4Tiny(2, class_names=["cat", "dog"]).save(path)
    return path


def test_failed_export_falls_back_to_tensorflow_with_a_warning(small_model, on_a_cpu, monkeypatch, own_cache, caplog):
    calls = counting_exporter(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="yolov4_tiny"):
        detector = load_detector(small_model, input_shape=(64, 64))
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.name == "yolov4_tiny.inference" and warning.getMessage() == (
        f"{small_model}: exporting it to ONNX failed (RuntimeError: tf2onnx could not convert it); "
        "running it with TensorFlow instead"
    )
    assert detector.backend == "keras" and detector.graph_forward
    assert [call["format"] for call in calls] == ["onnx"] and calls[0]["input_hw"] == (64, 64)
    assert list(own_cache.iterdir()) == []  # nothing half-written left behind


def test_a_cached_file_that_will_not_open_is_exported_again(small_model, on_a_cpu, monkeypatch, own_cache, caplog):
    broken = cache.cached_path(small_model, (64, 64))
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"a truncated model")
    calls = counting_exporter(monkeypatch, writes=b"still no model")  # the new export is broken too
    with caplog.at_level(logging.WARNING, logger="yolov4_tiny"):
        detector = load_detector(small_model, input_shape=(64, 64))
    assert "ONNX Runtime cannot run its ONNX export" in caplog.text
    assert len(calls) == 1  # the broken file was replaced by a new export, once
    assert detector.backend == "keras" and not broken.exists()


def test_backend_keras_mixed_precision_and_gpus_keep_tensorflow(small_model, monkeypatch, own_cache, caplog):
    calls = counting_exporter(monkeypatch)
    real_preference = loader.onnx_runtime_preferred
    monkeypatch.setattr(loader, "onnx_runtime_preferred", lambda: True)
    with caplog.at_level(logging.WARNING, logger="yolov4_tiny"):
        assert load_detector(small_model, input_shape=(64, 64), backend="keras").backend == "keras"
        assert load_detector(small_model, input_shape=(64, 64), precision="bfloat16").backend == "keras"
        monkeypatch.setattr(loader, "onnx_runtime_preferred", lambda: False)  # e.g. a GPU is visible
        assert load_detector(small_model, input_shape=(64, 64)).backend == "keras"
    # (bfloat16 may warn of its own: the CPU may compute it emulated)
    fallbacks = [r for r in caplog.records if "running it with TensorFlow instead" in r.getMessage()]
    assert fallbacks == [] and calls == [] and not own_cache.exists()
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"] if kind == "GPU" else [])
    assert not real_preference()


def test_without_onnx_runtime_tensorflow_runs_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name))
    assert not loader.onnx_runtime_preferred()


def test_wrong_class_names_are_said_before_any_export(small_model, on_a_cpu, monkeypatch, tmp_path):
    calls = counting_exporter(monkeypatch)
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    with pytest.raises(loader.ModelLoadError, match="3 class names"):
        load_detector(small_model, classes_path=tmp_path / "three.txt")
    assert calls == []


# ------------------------------------------------------------- a real export, run by ONNX Runtime
@pytest.fixture(scope="module")
def detecting(tmp_path_factory):
    """A 3-class model that detects a few shapes on demo images, saved as .keras, with those images."""
    root = write_demo_dataset(tmp_path_factory.mktemp("voc"), splits={"test": 8}, image_size=160)
    images = [load_image(find_image(root, i)) for i in read_image_set(root, "test")]
    inputs = np.stack([letterbox(image, INPUT_HW)[0] for image in images]).astype(np.float32) / 255.0
    path = tmp_path_factory.mktemp("model") / "detecting.keras"
    make_detecting_model(inputs).save(path)
    return path, images


@pytest.fixture(scope="module")
def exported(detecting, tmp_path_factory):
    """The default path run for real once: (ONNX Runtime detector, the bytes of its cached export)."""
    path, _ = detecting
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(cache.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
        patch.setattr(loader, "onnx_runtime_preferred", lambda: True)
        detector = load_detector(path, conf=CONF, input_shape=INPUT_HW)
    return detector, detector.onnx_path.read_bytes()


@pytest.mark.slow
def test_onnx_runtime_gives_the_detections_of_tensorflow(detecting, exported):
    path, images = detecting
    onnx, _ = exported
    tensorflow = load_detector(path, conf=CONF, input_shape=INPUT_HW, backend="keras")
    assert onnx.backend == "onnx" and not onnx.graph_forward and tensorflow.backend == "keras"
    assert onnx.input_shape == tensorflow.input_shape == INPUT_HW
    assert onnx.class_names == tensorflow.class_names == ["circle", "square", "triangle"]
    got, want = onnx.detect(images), tensorflow.detect(images)
    assert sum(len(d) for d in want) >= len(images)  # a few detections per image: a real comparison
    for g, w in zip(got, want, strict=True):
        assert len(g) == len(w)
        np.testing.assert_array_equal(g.class_ids, w.class_ids)
        np.testing.assert_allclose(g.scores, w.scores, atol=1e-5)
        np.testing.assert_allclose(g.boxes, w.boxes, atol=1e-3)  # pixels


@pytest.mark.slow
def test_exported_once_then_reused_until_the_file_changes(detecting, exported, on_a_cpu, monkeypatch, tmp_path):
    path, images = detecting
    reference = exported[0].detect(images[:2])
    model = tmp_path / "model.keras"
    model.write_bytes(path.read_bytes())
    calls = counting_exporter(monkeypatch, writes=exported[1])

    first = load_detector(model, conf=CONF, input_shape=INPUT_HW)
    assert len(calls) == 1 and first.backend == "onnx" and first.onnx_path.is_file()
    stamp = first.onnx_path.stat().st_mtime_ns
    second = load_detector(model, conf=CONF, input_shape=INPUT_HW)  # a hit: no export, the same file untouched
    assert len(calls) == 1 and second.onnx_path == first.onnx_path
    assert second.onnx_path.stat().st_mtime_ns == stamp
    assert [len(d) for d in second.detect(images[:2])] == [len(d) for d in reference]

    first.onnx_path.write_bytes(exported[1][: len(exported[1]) // 2])  # corrupted on disk
    repaired = load_detector(model, conf=CONF, input_shape=INPUT_HW)
    assert len(calls) == 2 and repaired.backend == "onnx" and repaired.onnx_path == first.onnx_path
    assert first.onnx_path.read_bytes() == exported[1]

    model.write_bytes(path.read_bytes() + b"\0")  # new content (a zip tolerates trailing bytes)
    changed = load_detector(model, conf=CONF, input_shape=INPUT_HW)
    assert len(calls) == 3 and changed.backend == "onnx" and changed.onnx_path != first.onnx_path
    assert sorted(os.listdir(first.onnx_path.parent)) == sorted([first.onnx_path.name, changed.onnx_path.name])
