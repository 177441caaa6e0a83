"""Inference: the core (detector.py, letterbox.py, postprocess.py, folding.py, precision.py,
drawing.py, explain.py, tracking.py, video.py, slicing.py: tiles and test-time augmentation) and the
engine over it (engine/).

The engine's public names are importable from here, imported on first use, so that importing a
core module (as predict.py does before the model loads) imports no TensorFlow:

    from utils.inference import Predictor, load_detector
"""

from __future__ import annotations

# Each public name and the module that defines it: a name is imported with its own module only, so
# `from utils.inference import JsonRecords` imports no TensorFlow; Predictor and the loaders do on
# the TensorFlow backend of Keras (on another, KERAS_BACKEND=jax, detection imports none).
_ENGINE = "utils.inference.engine"
_HOMES = {
    "ImageFolder": f"{_ENGINE}.sinks",
    "JsonRecords": f"{_ENGINE}.sinks",
    "Sink": f"{_ENGINE}.sinks",
    "VideoFile": f"{_ENGINE}.sinks",
    "Window": f"{_ENGINE}.sinks",
    "make_sinks": f"{_ENGINE}.sinks",
    "Result": f"{_ENGINE}.results",
    "RunStats": f"{_ENGINE}.results",
    "Predictor": f"{_ENGINE}.predictor",
    "load_detector": f"{_ENGINE}.loader",
    "load_model": f"{_ENGINE}.loader",
    "open_source": "utils.inference.video",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)
