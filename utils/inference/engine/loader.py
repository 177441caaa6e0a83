"""From a weights path to a model or a ready `Detector`, whatever the file is: the entry point of
inference.

This is the one place that knows every kind of weights file, so the detector does not have to
know the backends. It sits above utils/interop (the formats and runtimes: darknet conversion,
export, the backends, the ONNX cache), which builds on the inference core (letterbox, decoding,
NMS, folding) and never on this module, so imports go one way. The files it reads:

    .keras                   our Keras model (`load_model`); on a CPU run by ONNX Runtime on its
                             ONNX export (made once, kept in utils/interop/cache.py's folder),
                             on a GPU (or with backend="keras", or in mixed precision:
                             bfloat16 by default on AMX CPUs) by the Detector's own TF graph
    darknet .weights + .cfg  converted into our Keras model (utils/interop/darknet.py)
    .onnx / .tflite / SavedModel directory / OpenVINO .xml
                             exported by export.py, run by utils/interop/backends.py

    detector = load_detector("logs/best.keras", conf=0.5)
    [dets] = detector.detect([load_image("street.jpg")])
"""

from __future__ import annotations

import importlib.util
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path

import keras

from nets.attention import AttentionError, import_attention_module
from nets.model_data import check_input_hw, load_class_names
from nets.yolo import YoloV4Tiny  # registers our layers for deserialisation
from utils.defaults import MAX_DETECTIONS, MERGE_IOU, SLICE_OVERLAP
from utils.errors import YoloError
from utils.inference.detector import Detector, on_tensorflow
from utils.inference.precision import (
    PrecisionError,
    cpu_has_fast_int8,
    gpu_count,
    resolve_inference_precision,
    with_precision,
)
from utils.inference.slicing import MultiPassDetector, check_pass_options, with_passes
from utils.interop.backends import BACKENDS, MissingRuntimeError, import_openvino, infer_backend, load_backend
from utils.interop.cpu_runtime import check_runtime_env

AUTO = "auto"  # the default backend: from the path, and ONNX Runtime for .keras models on CPUs
logger = logging.getLogger("yolov4_tiny.inference")


class ModelLoadError(YoloError, ValueError):
    """A weights file that is not a model of ours; the message names the file."""


def load_model(path: str | Path, precision: str = "float32", attention_module: str | None = None) -> YoloV4Tiny:
    """Load a saved `nets.yolo.YoloV4Tiny` from a `.keras` file.

    precision: "float32", or "bfloat16" / "float16" to rebuild it under that mixed-precision policy
        (utils.inference.precision.with_precision; resolve "auto" and --half first with
        `resolve_inference_precision`).
    attention_module: the module (dotted name or .py path) of a user attention block, imported
        first; loading itself imports nothing (safe mode).

    Raises ModelLoadError (naming the file) when the file is missing, not a Keras archive, a Keras
    model that is not a YoloV4Tiny, or holds a user block whose module is not imported (naming it).
    """
    _import_attention(attention_module)
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    if path.suffix.lower() in (".weights", ".cfg"):
        raise ModelLoadError(f"{path}: a darknet file; give its cfg too (cfg_path=, predict.py --cfg)")
    if path.suffix.lower() != ".keras" or not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path}: not a .keras model file (expected a YoloV4Tiny saved with model.save)")
    try:
        model = keras.saving.load_model(path, compile=False)
    except AttentionError as err:  # YoloV4Tiny.from_config: a user block not imported (names its module)
        raise ModelLoadError(f"{path}: {err}") from None
    except (ValueError, TypeError, KeyError, OSError, AttributeError, zipfile.BadZipFile) as err:
        raise ModelLoadError(f"{path}: cannot load as a YoloV4Tiny model ({type(err).__name__}: {err})") from None
    if not isinstance(model, YoloV4Tiny):
        raise ModelLoadError(f"{path}: a Keras {type(model).__name__}, not a YoloV4Tiny model of ours")
    return with_precision(model, precision)


def _import_attention(attention_module: str | None) -> None:
    if attention_module is not None:
        try:
            import_attention_module(attention_module)
        except AttentionError as err:
            raise ModelLoadError(str(err)) from None


def _class_names(classes_path: str | Path | None, num_classes: int, weights: str | Path) -> list[str] | None:
    """Names from `classes_path` (None: keep the model's own); their count must match the model."""
    if classes_path is None:
        return None
    names = load_class_names(classes_path)
    if len(names) != num_classes:
        raise ModelLoadError(f"{classes_path}: {len(names)} class names, but {weights} has {num_classes} classes")
    return names


def load_detector(
    path: str | Path,
    *,
    classes_path: str | Path | None = None,
    input_shape: Sequence[int] | None = None,
    half: bool = False,
    precision: str = "auto",
    cfg_path: str | Path | None = None,
    backend: str | None = None,
    threads: int | None = None,
    attention_module: str | None = None,
    slice: int | None = None,
    overlap: float = SLICE_OVERLAP,
    augment: bool = False,
    calib_data: str | Path | None = None,
    **kwargs,
) -> Detector | MultiPassDetector:
    """A `Detector` over a `.keras` model of ours, darknet weights (with `cfg_path`), or a model
    exported by export.py: an .onnx file (ONNX Runtime), a .tflite file (LiteRT), a SavedModel
    directory or an OpenVINO IR .xml file (OpenVINO, optional: `pip install openvino`).

    classes_path: class names, one per line; overrides the names saved in the model.
    input_shape: network input (height, width); default the model's own size, else 416x416.
        Exported models run at the size they were exported at, or any multiple of 32 when
        exported with --dynamic.
    precision: "auto" (bfloat16 on a CPU with AMX or AVX512-BF16, else float32), "float32",
        "bfloat16" or "float16" (utils/inference/precision.py); half: the half precision that is
        faster here (float16 on a GPU, bfloat16 on AMX CPUs, else float32 with a warning). Mixed
        precision applies to .keras and darknet models (they then run on TensorFlow;
        TensorFlowRequired on another Keras backend); an exported model runs in the precision it
        was exported in (export.py --fp16): "auto" and "float32" leave it so, half or another
        precision is a ModelLoadError.
        `detector.precision` says which one runs.
    cfg_path: with a darknet `.weights` file, its cfg; converted into our model by
        utils/interop/darknet.py (classes, anchors and scale_x_y from the cfg).
    backend: "auto" (or None), "keras", "onnx", "tflite", "saved_model" or "openvino". "auto": from the path
        (utils.interop.backends.infer_backend), and a `.keras` model runs on ONNX Runtime when
        `onnx_runtime_preferred()` (a CPU, no GPU visible to TensorFlow) in float32: its
        ONNX export is made once and cached (utils/interop/cache.py). When that export or
        ONNX Runtime fails, a warning (the `yolov4_tiny.inference` logger) says why and TensorFlow runs it.
        "keras": always TensorFlow. On another Keras backend (KERAS_BACKEND=jax) a `.keras` model
        runs on that backend, TensorFlow not imported (see utils/inference/detector.py).
    threads: CPU threads of the ONNX Runtime / TFLite / OpenVINO backends (default: the usable cores).
    attention_module: see `load_model` (a .keras model with a user attention block).
    calib_data: calibration images for int8, a VOCdevkit or VOC folder (its ImageSets/Main/train.txt
        images, at most 100, as export.py --int8 --calib-data takes them): with precision "auto" and
        backend "auto", a `.keras` model on a CPU with int8 dot products (VNNI,
        utils.inference.precision.cpu_has_fast_int8) runs its int8 ONNX export, calibrated on
        them, made once and cached, on the CPU runtime timed faster; elsewhere they go unused,
        with a logged warning saying why.
    slice, overlap, augment: sliced inference over tiles of `slice` pixels sharing `overlap`, and
        test-time augmentation: the detector is then wrapped in a
        `utils.inference.slicing.MultiPassDetector` (its `detect` merges the passes; every other
        attribute is the wrapped detector's).
    kwargs: the other `Detector` arguments (conf, nms_iou, max_detections, batch_size, ...).
    Returns the detector, with `backend` set to the runtime that runs it ("keras", "onnx",
    "tflite", "saved_model", "openvino"); for a cached ONNX export, `onnx_path` is that file.
    Raises ModelLoadError when the file is missing or not one of our models, SlicingError for a
    tile under 32 pixels or an overlap outside [0, 1) (before loading), MissingRuntimeError
    for an OpenVINO IR when OpenVINO is not installed.
    """
    check_pass_options(slice, overlap)
    check_runtime_env()  # $YOLO_CPU_RUNTIME: a typo is said whichever path runs
    detector = _load_single_pass(path, classes_path, input_shape, (precision, half, calib_data), cfg_path, backend,
                                 threads, attention_module, **kwargs)  # fmt: skip
    return with_passes(detector, slice, overlap, augment)


def _load_single_pass(
    path, classes_path, input_shape, asked, cfg_path, backend, threads, attention_module, **kwargs
) -> Detector:
    """`load_detector` without slicing and augmentation; `asked`: its (precision, half, calib_data)."""
    _import_attention(attention_module)
    detector = _load_in_precision(path, classes_path, input_shape, asked, cfg_path, backend, threads, **kwargs)
    detector.precision = getattr(detector, "precision", "float32")
    return detector


def _load_in_precision(path, classes_path, input_shape, asked, cfg_path, backend, threads, **kwargs) -> Detector:
    *asked, calib_data = asked

    def resolved() -> str:  # for the models we build: .keras and darknet
        try:
            return resolve_inference_precision(*asked)
        except PrecisionError as err:
            raise ModelLoadError(f"{path}: {err}") from None

    if calib_data is not None and (cfg_path is not None or backend not in (None, AUTO) or not _is_keras_file(path)):
        logger.warning(
            f"--calib-data {calib_data}: unused; it calibrates the int8 export that --backend auto makes of a "
            ".keras model (export.py --int8 --calib-data exports one)"
        )
        calib_data = None

    if cfg_path is not None:
        precision = resolved()
        from utils.interop.darknet import DarknetError, model_from_darknet

        names = load_class_names(classes_path) if classes_path is not None else None
        # The cfg's [net] size unless input_shape asks for another.
        size = None if input_shape is None else (*input_shape, 3)
        try:
            model, _ = model_from_darknet(cfg_path, path, class_names=names, input_shape=size)
        except (OSError, DarknetError) as err:
            raise ModelLoadError(str(err)) from None
        detector = Detector.from_model(with_precision(model, precision), input_shape=input_shape, **kwargs)
        detector.backend, detector.precision = "keras", precision
        return detector
    if backend not in (None, AUTO, *BACKENDS):
        raise ModelLoadError(f"unknown backend {backend!r}; choose one of {', '.join((AUTO, *BACKENDS))}")
    auto = backend in (None, AUTO)
    try:
        backend = infer_backend(path) if auto else backend
    except ValueError as err:
        raise ModelLoadError(str(err)) from None
    logger.debug(f"{path}: backend {backend}" + (" (from the path)" if auto else ""))
    if backend in CPU_RUNTIMES and infer_backend(path) == "keras":  # a runtime forced on its cached export
        precision, half = asked
        if half or precision not in ("auto", "float32"):
            raise ModelLoadError(
                f"{path}: --backend {backend} runs a .keras model's float32 ONNX export; --half and --precision "
                f"{precision} run on TensorFlow (--backend auto or keras)"
            )
        if not on_tensorflow():
            raise ModelLoadError(f"{path}: --backend {backend} runs its ONNX export, and exporting needs TensorFlow")
        if backend == "openvino":
            import_openvino()  # not installed: MissingRuntimeError now, before an export
        return _load_keras_on_cpu_runtime(path, threads, classes_path, input_shape, runtime=backend, **kwargs)
    if backend == "keras":
        precision = resolved()
        if calib_data is not None and _int8_here(calib_data, asked):
            return _load_keras_on_cpu_runtime(path, threads, classes_path, input_shape, calib_data=calib_data, **kwargs)
        if auto and precision == "float32" and onnx_runtime_preferred():
            return _load_keras_on_cpu_runtime(path, threads, classes_path, input_shape, **kwargs)
        detector = _keras_detector(load_model(path, precision), path, classes_path, input_shape, **kwargs)
        detector.precision = precision
        return detector
    precision, half = asked
    if half or precision not in ("auto", "float32"):
        raise ModelLoadError(
            f"{path}: --half and --precision {precision} apply to .keras models; an exported model runs in the "
            "precision it was exported in (export.py --fp16)"
        )
    return _load_exported(path, backend, threads, classes_path, input_shape, **kwargs)


def onnx_runtime_preferred() -> bool:
    """Whether `.keras` models run on ONNX Runtime by default: Keras runs on TensorFlow (the
    export needs it; other Keras backends run the model themselves), ONNX Runtime and the exporter
    (tf2onnx, onnx) are installed and TensorFlow sees no GPU (GPUs keep TensorFlow).

    On CPUs ONNX Runtime ran the same network faster than the TensorFlow graph
    (benchmarks/bench_inference.py prints both, and docs/benchmarks.md the figures).
    """
    if not on_tensorflow() or any(importlib.util.find_spec(n) is None for n in ("onnxruntime", "tf2onnx", "onnx")):
        return False
    import tensorflow as tf

    return not tf.config.list_physical_devices("GPU")


def _is_keras_file(path) -> bool:
    try:
        return infer_backend(path) == "keras"
    except ValueError:  # not a model file: said where the backend is chosen
        return False


def _int8_here(calib_data, asked) -> bool:
    """Whether a `.keras` model given calibration images runs int8 here: --precision auto (no
    --half), ONNX Runtime preferred (a CPU) and int8 dot products on it; a warning says why not."""
    precision, half = asked
    if precision != "auto" or half:
        why = "--half" if half else f"--precision {precision}"
        logger.warning(f"--calib-data {calib_data}: unused; {why} rules out int8 (--precision auto picks it)")
        return False
    cpu_runtime = onnx_runtime_preferred()
    if not cpu_runtime or not cpu_has_fast_int8():
        logger.warning(
            f"--calib-data {calib_data}: unused; int8 runs on ONNX Runtime on a CPU with int8 dot products "
            "(AVX512-VNNI, AVX-VNNI or AMX-INT8; without them its int8 kernels can saturate), and this machine "
            + ("has none" if cpu_runtime else "has a GPU or no ONNX Runtime")
        )
        return False
    return True


def _keras_detector(model, path, classes_path, input_shape, **kwargs) -> Detector:
    """The TensorFlow detector over a loaded Keras model of ours."""
    names = _class_names(classes_path, model.num_classes, path)
    detector = Detector.from_model(model, input_shape=input_shape, class_names=names or model.class_names, **kwargs)
    detector.backend = "keras"
    return detector


def _load_keras_on_cpu_runtime(
    path, threads, classes_path, input_shape, runtime=None, calib_data=None, **kwargs
) -> Detector:
    """A `.keras` model run on its cached ONNX export (utils/interop/cache.py), exported now when
    there is none, by ONNX Runtime or OpenVINO: `runtime`, else the faster of the two here
    (utils/interop/cpu_runtime.py). The export is export.py's fp32 ONNX of the raw heads (with
    `calib_data`: its int8 one, calibrated on those images), so the Detector decodes and NMS's them
    with its own code, as it does the Keras model's.

    Falls back to TensorFlow, with a logged warning saying why, when exporting fails or ONNX
    Runtime cannot open the export (a cached file that cannot be opened is made again first);
    with `runtime` forced, that is a ModelLoadError instead.
    """
    from utils.interop import cache
    from utils.interop.cpu_runtime import choose_runtime
    from utils.interop.export import ExportError, calibration_image_paths, export_model

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    hw = None if input_shape is None else tuple(int(v) for v in check_input_hw(input_shape))
    model = problem = None
    options, int8 = None, {}
    if calib_data is not None:
        try:
            images = calibration_image_paths(calib_data)
        except ExportError as err:
            raise ModelLoadError(str(err)) from None
        options = {"precision": "int8", "calibration": cache.files_fingerprint(images)}
        int8 = {"precision": "int8", "calib_data": calib_data}
    onnx_path = cache.cached_path(path, hw, options)
    for _ in range(2):  # a cached file that will not open is exported again, once
        if not onnx_path.is_file():
            if model is None:
                model = load_model(path)  # not our model: ModelLoadError, as ever
                _class_names(classes_path, model.num_classes, path)  # wrong names: said before exporting

            def write(out, model=model):
                export_model(model, "onnx", out, input_hw=hw, **int8)

            logger.debug(f"{path}: exporting it to ONNX for ONNX Runtime, cached as {onnx_path}")
            try:
                cache.store(onnx_path, write)
            except Exception as err:  # tf2onnx documents no error classes: any failure means TensorFlow
                problem = f"exporting it to ONNX failed ({type(err).__name__}: {err})"
                break
        if runtime == "openvino":
            try:
                forward, meta = load_backend(onnx_path, "openvino", threads)
            except (ValueError, OSError) as err:
                raise ModelLoadError(f"{path}: OpenVINO cannot run its ONNX export {onnx_path} ({err})") from None
            choice = None
        else:
            try:
                forward, meta = load_backend(onnx_path, "onnx", threads)
            except (ValueError, OSError) as err:
                cache.discard(onnx_path)
                problem = f"ONNX Runtime cannot run its ONNX export ({err})"
                continue
            choice = None
            if runtime is None:  # the faster of ONNX Runtime and OpenVINO here
                try:
                    choice = choose_runtime(onnx_path, forward, tuple(meta["input_shape"]), threads)
                except ValueError as err:  # $YOLO_CPU_RUNTIME: an unknown value, or OpenVINO that cannot run it
                    raise ModelLoadError(f"{path}: {err}") from None
                forward = choice.forward
        chosen = runtime or choice.runtime
        detector = _exported_detector(path, forward, meta, chosen, classes_path, input_shape, **kwargs)
        detector.onnx_path, detector.runtime_choice = onnx_path, choice
        logger.debug(f"{path}: runs on {RUNTIMES[chosen]}, on its ONNX export {onnx_path}")
        return detector
    if runtime is not None:
        raise ModelLoadError(f"{path}: {problem}")
    logger.warning(f"{path}: {problem}; running it with TensorFlow instead")
    return _keras_detector(load_model(path) if model is None else model, path, classes_path, input_shape, **kwargs)


def _load_exported(path, backend, threads, classes_path, input_shape, **kwargs) -> Detector:
    """A Detector over a model exported by export.py, decoded and NMS'd by the same code as the
    Keras model. Classes, anchors and input size come from the export metadata."""
    try:
        forward, meta = load_backend(path, backend, threads)
    except (ValueError, OSError) as err:
        raise ModelLoadError(str(err)) from None
    except MissingRuntimeError:  # an optional runtime (OpenVINO): its message says how to install it
        raise
    except ImportError as err:  # its runtime is not installed (a SavedModel without TensorFlow)
        raise ModelLoadError(f"{path}: the {backend} backend needs {err.name or 'a module'} ({err})") from None
    return _exported_detector(path, forward, meta, backend, classes_path, input_shape, **kwargs)


def _exported_detector(path, forward, meta, backend, classes_path, input_shape, **kwargs) -> Detector:
    """The Detector over a loaded backend's raw forward, from its export metadata."""
    exported_hw = tuple(int(v) for v in meta["input_shape"])
    if meta.get("dynamic") and input_shape is not None:
        exported_hw = tuple(int(v) for v in input_shape)  # any multiple of 32 (the Detector checks it)
    if input_shape is not None and tuple(int(v) for v in input_shape) != exported_hw:
        raise ModelLoadError(
            f"{path}: exported for a {exported_hw[0]}x{exported_hw[1]} input, cannot run at "
            f"{tuple(input_shape)}; re-export it with export.py --input-size"
        )
    names = _class_names(classes_path, meta["num_classes"], path)
    nms_forward = None
    if getattr(forward, "has_nms", False):
        nms_forward = forward.detect
        most = int(meta["max_detections"])
        if kwargs.get("max_detections", MAX_DETECTIONS) > most:
            raise ModelLoadError(
                f"{path}: exported with NMS keeping {most} detections per image, cannot give "
                f"--max-detections {kwargs['max_detections']}; re-export with export.py --max-detections"
            )
        exported_merge = float(meta.get("merge_iou", 1.0))  # exports before the box merge have none
        if kwargs.get("merge_iou", MERGE_IOU) != exported_merge:
            logger.warning(
                f"{path}: its NMS is inside the model, exported "
                + (f"merging boxes at IoU {exported_merge:g}" if exported_merge < 1.0 else "without box merging")
                + f"; --merge-iou {kwargs.get('merge_iou', MERGE_IOU):g} does not apply to it (export.py again to "
                "change it, or export without --include-nms)"
            )
    detector = Detector(
        forward,
        num_classes=meta["num_classes"],
        anchors=meta["anchors"],
        anchors_mask=meta["anchors_mask"],
        scale_x_y=meta["scale_x_y"],
        input_shape=exported_hw,
        class_names=names or meta.get("class_names"),
        graph_forward=forward.graph_forward,
        nms_forward=nms_forward,
        **kwargs,
    )
    detector.backend = backend
    detector.metadata = meta
    detector.precision = EXPORTED_PRECISIONS.get(meta.get("precision"), "float32")
    return detector


RUNTIMES = {
    "keras": "TensorFlow",
    "saved_model": "TensorFlow",
    "onnx": "ONNX Runtime",
    "tflite": "LiteRT",
    "openvino": "OpenVINO",
}
# An export's precision (export.py's metadata) as describe_runtime names it.
EXPORTED_PRECISIONS = {"fp32": "float32", "fp16": "float16 weights", "int8": "int8"}
# The runtimes that run on the CPU whatever TensorFlow sees.
CPU_BACKENDS = ("onnx", "tflite", "openvino")
# Those that run a .keras model's cached ONNX export (the default path on a CPU picks the faster).
CPU_RUNTIMES = ("onnx", "openvino")


def describe_runtime(detector: Detector) -> str:
    """What runs `detector`, where, in which precision: "ONNX Runtime on CPU, float32"; a Keras
    model on another Keras backend than TensorFlow: "Keras (jax) on CPU, float32". The precision
    is the one that runs (`detector.precision`): where --half found no faster half precision, float32.
    Where the default path timed ONNX Runtime against OpenVINO, their medians follow."""
    backend = getattr(detector, "backend", "keras")
    runtime = RUNTIMES.get(backend, backend)
    gpus = gpu_count()
    if not on_tensorflow():
        runtime = f"Keras ({keras.backend.backend()})" if backend == "keras" else runtime
    device = "CPU" if backend in CPU_BACKENDS or not gpus else f"GPU ({gpus})"
    said = f"{runtime} on {device}, {getattr(detector, 'precision', 'float32')}"
    calibration = (getattr(detector, "metadata", None) or {}).get("calibration")
    if calibration:  # an int8 export: what it was calibrated on
        said += f" (calibrated on {calibration['images']} images of {calibration['data']})"
    choice = getattr(detector, "runtime_choice", None)
    if choice is not None and choice.onnx_ms is not None and choice.openvino_ms is not None:
        said += f" (timed here: ONNX Runtime {choice.onnx_ms:.1f} ms, OpenVINO {choice.openvino_ms:.1f} ms)"
    return said
