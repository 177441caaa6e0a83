"""The detector's and the evaluation's defaults (utils/defaults.py) are the ones every script option
and every library function falls back to: one object each, not a copy that can drift."""

from __future__ import annotations

import argparse
import inspect

import export
import get_map
import predict
from utils import defaults
from utils.cli import add_detector_arguments
from utils.evaluation.metrics import EvaluationResult, coco_evaluate, evaluate_detections
from utils.evaluation.voc_eval import evaluate_split
from utils.inference.detector import Detector
from utils.interop.export import export_model
from utils.training.config import TrainConfig


def _default(function, name):
    return inspect.signature(function).parameters[name].default


def test_detection_defaults_are_the_same_in_the_options_and_the_library():
    parser = argparse.ArgumentParser()
    add_detector_arguments(parser)
    for args in (parser.parse_args(["--weights", "w.keras"]), predict.build_parser().parse_args(["--weights", "w"])):
        assert args.conf is defaults.CONF_THRESHOLD
        assert args.nms_iou is defaults.NMS_IOU
        assert args.merge_iou is defaults.MERGE_IOU
        assert args.max_detections is defaults.MAX_DETECTIONS
    assert get_map.parse_args(["--detections", "d.json"]).merge_iou is defaults.MERGE_IOU
    assert _default(Detector.__init__, "merge_iou") is defaults.MERGE_IOU
    assert _default(Detector.__init__, "conf") is defaults.CONF_THRESHOLD
    assert _default(Detector.__init__, "nms_iou") is defaults.NMS_IOU
    assert _default(Detector.__init__, "max_detections") is defaults.MAX_DETECTIONS
    assert _default(export_model, "max_detections") is defaults.MAX_DETECTIONS
    assert export.parse_args(["--weights", "w.keras", "--format", "onnx", "--output", "o"]).max_detections is (
        defaults.MAX_DETECTIONS
    )
    assert f"(default {defaults.CONF_THRESHOLD})" in parser.format_help()


def test_slice_overlap_default_is_the_same_in_the_options_and_the_library():
    from utils.inference.engine.loader import load_detector
    from utils.inference.slicing import MultiPassDetector, image_views, tile_windows

    parser = argparse.ArgumentParser()
    add_detector_arguments(parser)
    for args in (parser.parse_args(["--weights", "w"]), get_map.parse_args(["--weights", "w"])):
        assert args.overlap is defaults.SLICE_OVERLAP
    for function in (load_detector, MultiPassDetector.__init__, image_views, tile_windows):
        assert _default(function, "overlap") is defaults.SLICE_OVERLAP


def test_evaluation_defaults_are_the_same_in_get_map_the_trainer_and_the_metrics():
    args = get_map.parse_args(["--detections", "d.json"])
    assert args.conf is defaults.EVAL_CONF_THRESHOLD and TrainConfig().eval_conf is defaults.EVAL_CONF_THRESHOLD
    assert args.nms_iou is defaults.EVAL_NMS_IOU and TrainConfig().eval_nms_iou is defaults.EVAL_NMS_IOU
    assert args.max_detections is defaults.MAX_DETECTIONS
    assert args.min_overlap is defaults.MATCH_IOU
    assert args.score_threshold is defaults.PR_SCORE_THRESHOLD
    for function in (evaluate_detections, evaluate_split):
        assert _default(function, "iou_threshold") is defaults.MATCH_IOU
        assert _default(function, "score_threshold") is defaults.PR_SCORE_THRESHOLD
    assert _default(evaluate_split, "max_detections") is defaults.MAX_DETECTIONS
    assert _default(coco_evaluate, "max_detections") is defaults.MAX_DETECTIONS
    fields = EvaluationResult.__dataclass_fields__
    assert fields["iou_threshold"].default is defaults.MATCH_IOU
    assert fields["score_threshold"].default is defaults.PR_SCORE_THRESHOLD


def test_augmentation_defaults_are_the_same_in_train_py_and_the_data_set():
    from utils.data.dataset import YoloDataset

    config = TrainConfig()
    shared = {"mosaic_prob": defaults.MOSAIC_PROB, "mixup_prob": defaults.MIXUP_PROB, "jitter": defaults.JITTER}
    for name, value in shared.items():
        assert _default(YoloDataset.__init__, name) is value
    assert _default(YoloDataset.__init__, "scale_range") is defaults.SCALE_RANGE
    assert (config.mosaic, config.mixup, config.jitter) == tuple(shared.values())
    assert (config.scale_min, config.scale_max) == defaults.SCALE_RANGE


def test_the_loss_defaults_are_three_cells_a_box_weighted_for_them():
    """train.py's defaults (docs/recipe.md, "Three positives a box"): YOLOv5's two neighbouring cells
    per box, the box and class terms weighted by 0.33 so that tripling the positives keeps their
    gradients at darknet's size, and the model decoding centres with scale_x_y 2 to reach them."""
    from utils.training.trainer import NEIGHBOR_SCALE_X_Y

    config = TrainConfig()
    assert config.neighbor_cells is True and NEIGHBOR_SCALE_X_Y == 2.0
    assert (config.box_weight, config.obj_weight, config.cls_weight) == (0.33, 1.0, 0.33)
