"""Inference: the core (detector.py, letterbox.py, postprocess.py, folding.py, precision.py,
drawing.py, explain.py, tracking.py, video.py, slicing.py: tiles and test-time augmentation) and the
engine over it (engine/).

The engine's public names are importable from here, imported on first use, so that importing a
core module (as predict.py does before the model loads) imports no TensorFlow:

    from utils.inference import Predictor, load_detector
"""

from __future__ import annotations

__all__ = [
    "ImageFolder",
    "JsonRecords",
    "Predictor",
    "Result",
    "RunStats",
    "Sink",
    "VideoFile",
    "Window",
    "load_detector",
    "load_model",
    "make_sinks",
    "open_source",
]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from utils.inference import video
    from utils.inference.engine import loader, predictor, results, sinks

    for module in (predictor, results, sinks, loader, video):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")  # listed in __all__ but defined nowhere
