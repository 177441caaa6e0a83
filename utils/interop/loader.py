"""From a weights path to a model or a ready `Detector`, whatever the file is.

This is the one place that knows every kind of weights file, so the detector does not have to
know the backends (and nothing imports in a circle):

    .keras                   our Keras model (`load_model`), run by the Detector's own TF graph
    darknet .weights + .cfg  converted into our Keras model (utils/interop/darknet.py)
    .onnx / .tflite / SavedModel directory
                             exported by export.py, run by utils/interop/backends.py

    detector = load_detector("logs/best.keras", conf=0.5)
    [dets] = detector.detect([load_image("street.jpg")])
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import keras

from nets.model_data import load_class_names
from nets.yolo import YoloV4Tiny  # registers our layers for deserialisation
from utils.errors import YoloError
from utils.inference.detector import Detector
from utils.inference.precision import with_half_precision
from utils.interop.backends import infer_backend, load_backend


class ModelLoadError(YoloError, ValueError):
    """A weights file that is not a model of ours; the message names the file."""


def load_model(path: str | Path, half: bool = False) -> YoloV4Tiny:
    """Load a saved `nets.yolo.YoloV4Tiny` from a `.keras` file.

    half: rebuild it under `mixed_precision_policy()` (mixed_float16 on a GPU, mixed_bfloat16 on a
        CPU with AMX / AVX512-BF16); on other CPUs warn and stay float32.

    Raises ModelLoadError (naming the file) when the file is missing, not a Keras archive, or a
    Keras model that is not a YoloV4Tiny.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    if path.suffix.lower() in (".weights", ".cfg"):
        raise ModelLoadError(f"{path}: a darknet file; give its cfg too (cfg_path=, predict.py --cfg)")
    if path.suffix.lower() != ".keras" or not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path}: not a .keras model file (expected a YoloV4Tiny saved with model.save)")
    try:
        model = keras.saving.load_model(path, compile=False)
    except (ValueError, TypeError, KeyError, OSError, AttributeError, zipfile.BadZipFile) as err:
        raise ModelLoadError(f"{path}: cannot load as a YoloV4Tiny model ({type(err).__name__}: {err})") from None
    if not isinstance(model, YoloV4Tiny):
        raise ModelLoadError(f"{path}: a Keras {type(model).__name__}, not a YoloV4Tiny model of ours")
    return with_half_precision(model) if half else model


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
    cfg_path: str | Path | None = None,
    backend: str | None = None,
    threads: int | None = None,
    **kwargs,
) -> Detector:
    """A `Detector` over a `.keras` model of ours, darknet weights (with `cfg_path`), or a model
    exported by export.py: an .onnx file (ONNX Runtime), a .tflite file (LiteRT) or a SavedModel
    directory.

    classes_path: class names, one per line; overrides the names saved in the model.
    input_shape: network input (height, width); default the model's own size, else 416x416.
        Exported models run at the size they were exported at, or any multiple of 32 when
        exported with --dynamic.
    half: mixed precision (see `load_model`); .keras and darknet models only.
    cfg_path: with a darknet `.weights` file, its cfg; converted into our model by
        utils/interop/darknet.py (classes, anchors and scale_x_y from the cfg).
    backend: "keras", "onnx", "tflite" or "saved_model"; None: from the path
        (utils.interop.backends.infer_backend).
    threads: CPU threads of the ONNX Runtime / TFLite backends (default: the usable cores).
    kwargs: the other `Detector` arguments (conf, nms_iou, max_detections, batch_size, ...).
    Raises ModelLoadError when the file is missing or not one of our models.
    """
    if cfg_path is not None:
        from utils.interop.darknet import DarknetError, model_from_darknet

        names = load_class_names(classes_path) if classes_path is not None else None
        # The cfg's [net] size unless input_shape asks for another.
        size = None if input_shape is None else (*input_shape, 3)
        try:
            model, _ = model_from_darknet(cfg_path, path, class_names=names, input_shape=size)
        except (OSError, DarknetError) as err:
            raise ModelLoadError(str(err)) from None
        return Detector.from_model(with_half_precision(model) if half else model, input_shape=input_shape, **kwargs)
    try:
        backend = backend or infer_backend(path)
    except ValueError as err:
        raise ModelLoadError(str(err)) from None
    if backend == "keras":
        model = load_model(path, half=half)
        names = _class_names(classes_path, model.num_classes, path)
        return Detector.from_model(model, input_shape=input_shape, class_names=names or model.class_names, **kwargs)
    if half:
        raise ModelLoadError(f"{path}: --half applies to .keras models; export with --fp16 instead")
    return _load_exported(path, backend, threads, classes_path, input_shape, **kwargs)


def _load_exported(path, backend, threads, classes_path, input_shape, **kwargs) -> Detector:
    """A Detector over a model exported by export.py, decoded and NMS'd by the same code as the
    Keras model. Classes, anchors and input size come from the export metadata."""
    try:
        forward, meta = load_backend(path, backend, threads)
    except (ValueError, OSError) as err:
        raise ModelLoadError(str(err)) from None
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
        if kwargs.get("max_detections", 100) > most:
            raise ModelLoadError(
                f"{path}: exported with NMS keeping {most} detections per image, cannot give "
                f"--max-detections {kwargs['max_detections']}; re-export with export.py --max-detections"
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
    detector.backend = backend or meta["format"]
    detector.metadata = meta
    return detector
