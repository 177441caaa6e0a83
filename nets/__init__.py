"""The model: YOLOv4-tiny with pluggable attention.

Importing `nets` registers every custom layer with Keras, so a saved `.keras` model loads with
plain `keras.saving.load_model(path)` afterwards.
"""

from nets.yolo import YoloV4Tiny, yolo_body

__all__ = ["YoloV4Tiny", "yolo_body"]
