"""utils/training/checkpoint.py: what a saved .keras holds."""

import keras

from nets.yolo import YoloV4Tiny
from utils.training.checkpoint import batch_norm_layers, save_model


def test_save_model_writes_every_batch_norm_unsynchronised_nested_ones_too(tmp_path):
    """Under a strategy the trainer synchronises every batch norm, Coordinate Attention's nested ones
    included; the .keras it saves holds plain ones (inference needs no replica context), and the
    model in training keeps its synchronised ones."""
    model = YoloV4Tiny(num_classes=2, attention="ca", input_shape=(64, 64, 3))
    layers = batch_norm_layers(model)
    nested = [layer for layer in layers if layer not in model.layers]
    assert nested, "phi 4 has batch norms inside its attention blocks"
    for layer in layers:
        layer.synchronized = True
    save_model(model, tmp_path / "m.keras")
    assert all(layer.synchronized for layer in layers)
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert len(batch_norm_layers(loaded)) == len(layers)
    assert not any(layer.synchronized for layer in batch_norm_layers(loaded))


def test_resuming_another_runs_checkpoint_names_what_differs(tmp_path):
    """--resume of a run whose checkpoint was written under other settings (here float16 training,
    whose loss scale adds optimizer variables, against this machine's float32) says which settings."""
    import pytest

    from utils.training.checkpoint import CheckpointError, History, read_checkpoint, write_checkpoint

    model = YoloV4Tiny(num_classes=2, input_shape=(64, 64, 3))
    optimizer = keras.optimizers.SGD()
    saved = {"attention": "none", "classes": ["a", "b"], "input_hw": [64, 64], "precision": "float16"}
    path = tmp_path / "checkpoint.npz"
    write_checkpoint(path, model, optimizer, epochs_done=1, history=History.empty(), best=0.0, identity=saved)
    here = {key: value for key, value in saved.items() if key != "precision"}
    with pytest.raises(CheckpointError, match="another run: precision 'float16' there, 'default' here"):
        read_checkpoint(path, model, optimizer, here)
