"""The detector's defaults, defined once: what a script's option, the Detector, the exporter and
the evaluation take when nothing is given. Every other place imports them.

Two settings, for two uses:

* detection (predict.py, `utils.inference.detector.Detector`, `utils.inference.engine.loader.load_detector`,
  export.py --include-nms): boxes scored above CONF_THRESHOLD, per-class NMS at NMS_IOU, at most
  MAX_DETECTIONS an image, each kept box then averaged with the candidates of its class that
  overlap it by more than MERGE_IOU (weighted by score x IoU; evaluation too);
  with sliced inference (--slice, utils/inference/slicing.py) neighbouring tiles share
  SLICE_OVERLAP of a tile;
* evaluation (get_map.py, the trainer's val mAP): every box above EVAL_CONF_THRESHOLD is scored
  (mAP integrates over the whole precision-recall curve), NMS at EVAL_NMS_IOU; a detection
  matches a ground truth at IoU >= MATCH_IOU, and precision, recall and F1 are read at
  PR_SCORE_THRESHOLD;
* training augmentation (train.py's flags, `utils.data.dataset.YoloDataset`): MOSAIC_PROB,
  MIXUP_PROB, JITTER and SCALE_RANGE: every sample a mosaic (bubbliiiing: half), and lighter
  than his recipe (mixup 0.5, jitter 0.3, scale 0.25-2), which loosened the boxes in short runs
  (docs/recipe.md).

The input size is a fact of the model: nets.model_data.DEFAULT_INPUT_SHAPE.

This module imports nothing, so utils/cli.py shows the values in --help without TensorFlow.
"""

from __future__ import annotations

CONF_THRESHOLD = 0.5  # objectness x class score above which a detection is kept
NMS_IOU = 0.3  # per-class NMS: a box overlapping a better one of its class by more than this is dropped
MAX_DETECTIONS = 100  # most detections per image (after NMS)
MERGE_IOU = 0.5  # a kept box becomes the mean of its class's candidates overlapping it by more (1: off)
SLICE_OVERLAP = 0.2  # sliced inference (--slice): fraction of a tile shared with each neighbour

EVAL_CONF_THRESHOLD = 0.001  # mAP: score (nearly) every box, so the curve reaches full recall
EVAL_NMS_IOU = 0.5  # mAP: NMS IoU of the scored detections
MATCH_IOU = 0.5  # a detection counts as a hit at IoU >= this (VOC's mAP@0.5)
PR_SCORE_THRESHOLD = 0.5  # where precision, recall, F1, TP and FP are read off the curve

MOSAIC_PROB = 1.0  # probability of a mosaic sample (in the first --mosaic-ratio of the epochs)
MIXUP_PROB = 0.0  # probability of mixup on a mosaic sample
JITTER = 0.0  # aspect-ratio jitter of a placed image (0: shapes kept)
SCALE_RANGE = (0.5, 1.5)  # a non-mosaic sample's longer side, as a fraction of the input's
OBJ_BALANCE = (0.4, 1.0)  # objectness weight per head, P5 then P4 (YOLOv5's, bubbliiiing's; darknet: 1, 1)

# --precision of train.py, predict.py and get_map.py. auto: what is fastest on the machine
# (utils/inference/precision.py for inference, utils/training/config.py for training).
PRECISIONS = ("auto", "float32", "float16", "bfloat16")
