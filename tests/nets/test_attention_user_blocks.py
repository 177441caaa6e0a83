"""User attention blocks (nets/attention.py): MODULE:CLASS and @register_attention, the start-up
contract check naming each failure, and a saved model that names the module to import."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from nets import attention as registry
from nets.attention import (
    AttentionError,
    BlockContractError,
    import_attention_module,
    resolve_attention,
)
from nets.yolo import YoloV4Tiny
from utils.inference.engine.loader import ModelLoadError, load_model

HEADER = """
import keras
from keras import layers, ops
from nets.attention import register_attention
"""

GOOD = '''
class Gate(layers.Layer):
    """x * sigmoid(dense(mean over H, W)): one weight per channel."""

    def __init__(self, bias: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.bias = bias

    def build(self, input_shape):
        self.dense = layers.Dense(input_shape[-1], activation="sigmoid")
        self.dense.build((None, input_shape[-1]))

    def attention_weights(self, x):
        return {"channel": self.dense(ops.mean(x, axis=(1, 2)) + self.bias)}

    def call(self, x):
        return x * self.attention_weights(x)["channel"][:, None, None, :]

    def get_config(self):
        return {**super().get_config(), "bias": self.bias}
'''

# Each breaks one clause of the contract; the check must name it.
BROKEN = {
    "not_a_layer": ("class Block:\n    pass\n", "is not a keras.layers.Layer subclass"),
    "halves_channels": (
        "class Block(layers.Layer):\n    def call(self, x):\n        return x[..., ::2]\n",
        "output shape (2, 6, 4, 16) differs from its input shape (2, 6, 4, 32)",
    ),
    "needs_channels": (
        "class Block(layers.Layer):\n"
        "    def __init__(self, channels, **kwargs):\n"
        "        super().__init__(**kwargs)\n"
        "        self.channels = channels\n"
        "    def call(self, x):\n        return x\n",
        "cannot be made with no arguments",
    ),
    "config_lacks_an_argument": (
        "class Block(layers.Layer):\n"
        "    def __init__(self, scale=2.0, **kwargs):\n"
        "        super().__init__(**kwargs)\n"
        "        self.scale = scale\n"
        "    def call(self, x):\n        return x * self.scale\n"
        "    def get_config(self):\n        return super().get_config()\n",
        "get_config() lacks the constructor argument(s) scale",
    ),
    "config_from_build": (  # C saved in the config though the constructor does not take it
        "class Block(layers.Layer):\n"
        "    def build(self, input_shape):\n        self.channels = input_shape[-1]\n"
        "    def call(self, x):\n        return x\n"
        "    def get_config(self):\n        return {**super().get_config(), 'channels': self.channels}\n",
        "from_config(get_config()) does not rebuild it",
    ),
}


def _write(folder, name, body):
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(HEADER) + body)
    return path


@pytest.fixture
def clean_registry():
    """Whatever a test registers is gone afterwards (the tables are restored in place: others hold them)."""
    tables = (registry.ATTENTION_BLOCKS, registry.ATTENTION_MODULES, registry._FILE_MODULES)
    saved = [dict(table) for table in tables]
    yield
    for table, contents in zip(tables, saved, strict=True):
        table.clear()
        table.update(contents)


def test_a_file_block_by_path_and_class_builds_a_model_that_records_its_module(tmp_path, clean_registry):
    path = _write(tmp_path, "blocks", GOOD)
    key = resolve_attention(attention=f"{path}:Gate")
    assert key == f"{path.resolve()}:Gate"
    model = YoloV4Tiny(2, attention=key, input_shape=(64, 64, 3))
    assert model.name == "yolov4_tiny_gate"
    assert type(model.get_layer("attention_feat1")).__name__ == "Gate"
    assert model.get_config()["attention_module"] == str(path.resolve())
    assert "attention_module" not in YoloV4Tiny(2, attention="se", input_shape=(64, 64, 3)).get_config()


def test_a_module_on_the_path_by_name(tmp_path, monkeypatch, clean_registry):
    _write(tmp_path, "my_blocks_on_path", GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_attention(attention="my_blocks_on_path:Gate") == "my_blocks_on_path:Gate"
    assert registry.attention_module("my_blocks_on_path:Gate") == "my_blocks_on_path"


def test_register_attention_names_a_block_once_its_module_is_imported(tmp_path, clean_registry):
    path = _write(tmp_path, "decorated", GOOD.replace("class Gate", '@register_attention("MyGate")\nclass Gate'))
    with pytest.raises(AttentionError, match="Unknown attention 'mygate'"):
        resolve_attention(attention="mygate")
    import_attention_module(str(path))
    assert resolve_attention(attention="MyGate") == "mygate"
    assert registry.attention_module("mygate") == str(path.resolve())
    with pytest.raises(AttentionError, match="built in"):
        registry.register_attention("se")


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_start_up_check_names_the_block_and_what_it_gets_wrong(case, tmp_path, clean_registry):
    body, problem = BROKEN[case]
    path = _write(tmp_path, case, body)
    with pytest.raises(BlockContractError) as err:
        resolve_attention(attention=f"{path}:Block")
    assert "Block" in str(err.value) and problem in str(err.value)


def test_a_module_that_does_not_import_or_lacks_the_class_is_named(tmp_path, clean_registry):
    with pytest.raises(AttentionError, match="no_such_module_xyz"):
        resolve_attention(attention="no_such_module_xyz:Block")
    with pytest.raises(AttentionError, match="no such file"):
        resolve_attention(attention=f"{tmp_path / 'absent.py'}:Block")
    path = _write(tmp_path, "blocks", GOOD)
    with pytest.raises(AttentionError, match="has no 'Other'"):
        resolve_attention(attention=f"{path}:Other")


def _forget(key, path):
    """As in a fresh process that never imported the block's module."""
    del registry.ATTENTION_BLOCKS[key]
    registry._FILE_MODULES.pop(str(path.resolve()), None)


@pytest.mark.parametrize("decorated", [False, True], ids=["module_class", "register_attention"])
def test_a_saved_model_names_the_module_to_import_and_loads_once_it_is(decorated, tmp_path, clean_registry):
    body = GOOD.replace("class Gate", '@register_attention("savedgate")\nclass Gate') if decorated else GOOD
    path = _write(tmp_path, "saved_blocks", body)
    if decorated:
        import_attention_module(str(path))
    key = resolve_attention(attention="savedgate" if decorated else f"{path}:Gate")
    model = YoloV4Tiny(2, attention=key, input_shape=(64, 64, 3))
    saved = tmp_path / "model.keras"
    model.save(saved)
    _forget(key, path)

    with pytest.raises(ModelLoadError) as err:
        load_model(saved)
    message = str(err.value)
    assert str(saved) in message and str(path.resolve()) in message and "--attention-module" in message

    loaded = load_model(saved, attention_module=str(path))
    x = np.random.default_rng(0).uniform(size=(1, 64, 64, 3)).astype("float32")
    for got, want in zip(loaded(x), model(x), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
