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
