"""results.csv and train_batch0.jpg (utils/training/callbacks.py) on their own; a real run writes
both in tests/test_train.py."""

from types import SimpleNamespace

import numpy as np
from PIL import Image

from utils.inference.drawing import class_colors
from utils.training.callbacks import RESULTS_COLUMNS, ResultsCSV, TrainBatchPlot, batch_grid, read_results


def _logs(loss, val_map=None):
    logs = {"loss": loss, "box_loss": loss / 4, "obj_loss": loss / 2, "cls_loss": loss / 4, "val_loss": None,
            "lr": 1.25e-3, "epoch_seconds": 12.5, "images_per_second": 80.0, "is_best": False}  # fmt: skip
    if val_map is not None:
        logs.update(val_map50=val_map, val_map50_95=val_map / 2, val_loss=loss * 1.1)
    return logs


def test_results_csv_has_a_row_per_epoch_and_its_columns(tmp_path):
    trainer = SimpleNamespace(save_dir=tmp_path / "run")
    writer = ResultsCSV()
    writer.on_epoch_end(trainer, 0, _logs(8.0))
    writer.on_epoch_end(trainer, 1, _logs(6.0, val_map=0.5))
    lines = (trainer.save_dir / "results.csv").read_text().splitlines()
    header = "epoch,box_loss,obj_loss,cls_loss,loss,val_loss,map50,map50_95,lr,epoch_seconds,images_per_second"
    assert lines[0] == header
    assert list(RESULTS_COLUMNS) == lines[0].split(",")
    assert lines[1] == "1,2,4,2,8,,,,0.00125,12.5,80"  # not evaluated: no val loss, no mAP
    assert lines[2] == "2,1.5,3,1.5,6,6.6,0.5,0.25,0.00125,12.5,80"
    assert len(lines) == 3


def test_results_csv_is_continued_on_resume_without_a_row_twice(tmp_path):
    """A run killed after epoch 3's row but before its checkpoint resumes at epoch 3: that row is
    replaced, the earlier ones stay, and epoch 4 follows."""
    trainer = SimpleNamespace(save_dir=tmp_path / "run")
    for epoch, loss in enumerate((8.0, 7.0, 6.0)):
        ResultsCSV().on_epoch_end(trainer, epoch, _logs(loss))
    resumed = ResultsCSV()  # a new process
    resumed.on_epoch_end(trainer, 2, _logs(5.0))
    resumed.on_epoch_end(trainer, 3, _logs(4.0))
    rows = read_results(trainer.save_dir / "results.csv")
    assert [(row["epoch"], row["loss"]) for row in rows] == [("1", "8"), ("2", "7"), ("3", "5"), ("4", "4")]
    assert not [p.name for p in trainer.save_dir.iterdir() if p.name != "results.csv"]  # no temporary file left


def _sample(fill, boxes, max_boxes=6, size=96):
    image = np.full((size, size, 3), fill, np.uint8)
    gt = np.full((max_boxes, 5), -1, np.float32)
    if boxes:
        gt[: len(boxes)] = boxes
    return image, gt


def test_batch_grid_draws_each_image_with_its_boxes_in_its_tile():
    """Five 96x96 samples: a 3x2 grid of 288x288 tiles (enlarged x3 to reach 256); the box of
    sample 4 (tile row 1, column 1) is outlined in its class colour where it is and nowhere else."""
    samples = [_sample(40 * i, []) for i in range(5)]
    samples[4] = _sample(200, [[30, 40, 70, 80, 1]])
    images, gts = np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples])
    grid = batch_grid(images, gts, ["circle", "square"])
    assert grid.shape == (2 * 288, 3 * 288, 3)
    tile = grid[288:576, 288:576].astype(int)
    plain = batch_grid(images, np.full_like(gts, -1), ["circle", "square"])[288:576, 288:576].astype(int)
    color = class_colors(2)[1]
    x1, y1, x2, y2 = 90, 120, 210, 240  # the box x3
    for y in (y1 + 60, y1 + 90):  # the left and right edges, below the label
        assert tuple(tile[y, x1]) == color and tuple(tile[y, x2 - 2]) == color
    assert tuple(tile[y2 - 2, x1 + 60]) == color  # the bottom edge
    assert (tile[y1 + 30 : y2 - 30, x1 + 30 : x2 - 30] == 200).all()  # inside: the image as it was
    changed = np.abs(tile - plain).sum(axis=2) > 0
    assert changed[y1 - 30 : y2, x1:x2].any() and not changed[y2 + 5 :].any() and not changed[:, x2 + 40 :].any()
    assert (grid[:287, :287] == 0).all() and (grid[287:289] == 255).all()  # sample 0 untouched; the frame
    assert (grid[290:, 578:] == 255).all()  # the sixth tile is empty


def test_train_batch_plot_writes_the_first_batch_and_keeps_it_on_resume(tmp_path):
    samples = [_sample(100, [[10, 10, 50, 60, 0]]), _sample(150, [[5, 20, 90, 90, 1]])]
    images, gts = np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples])
    asked = []

    def first_batch(count):
        asked.append(count)
        return images, gts

    trainer = SimpleNamespace(save_dir=tmp_path, start_epoch=0, class_names=["a", "b"], first_batch=first_batch)
    TrainBatchPlot().on_train_start(trainer)
    written = np.asarray(Image.open(tmp_path / "train_batch0.jpg").convert("RGB")).astype(int)
    expected = batch_grid(images, gts, ["a", "b"]).astype(int)
    assert written.shape == expected.shape == (288, 576, 3) and asked == [16]
    assert np.abs(written - expected).mean() < 3  # JPEG
    before = (tmp_path / "train_batch0.jpg").read_bytes()
    trainer.start_epoch = 5  # a resumed run: the first start's picture stays
    trainer.first_batch = None
    TrainBatchPlot().on_train_start(trainer)
    assert (tmp_path / "train_batch0.jpg").read_bytes() == before
