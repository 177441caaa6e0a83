"""The prediction engine, above utils/interop (the formats and runtimes) and utils/data (the image
loader): loader.py (`load_detector`, `load_model`: any weights file -> a Detector), predictor.py
(`Predictor`: sources -> detector -> results -> sinks), results.py (`Result` and its JSON record),
sinks.py (picture folders, video files, windows, JSON records), pictures.py (heatmap, attention
and Grad-CAM pictures). Importing this package imports nothing (no TensorFlow)."""
