"""Issue 25's acceptance: a block defined in a file outside the project trains, saves, reloads and
predicts, with one command each (train.py, then predict.py, each a fresh process)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import predict
from utils.data.demo import write_demo_dataset

ROOT = Path(__file__).resolve().parents[1]

# Outside the project, importing nothing of it: only the contract (nets/attention.py) matters.
BLOCK = '''
from keras import layers, ops


class ChannelGate(layers.Layer):
    """x * sigmoid(dense(mean over H and W)): one weight per channel."""

    def __init__(self, hidden_ratio: float = 0.25, **kwargs):
        super().__init__(**kwargs)
        self.hidden_ratio = hidden_ratio

    def build(self, input_shape):
        channels = input_shape[-1]
        self.hidden = layers.Dense(max(1, int(channels * self.hidden_ratio)), activation="relu")
        self.out = layers.Dense(channels, activation="sigmoid")
        self.hidden.build((None, channels))
        self.out.build((None, max(1, int(channels * self.hidden_ratio))))

    def attention_weights(self, x):
        return {"channel": self.out(self.hidden(ops.mean(x, axis=(1, 2))))}

    def call(self, x):
        return x * self.attention_weights(x)["channel"][:, None, None, :]

    def get_config(self):
        return {**super().get_config(), "hidden_ratio": self.hidden_ratio}
'''


def _script(name, *argv, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / name), *map(str, argv)], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(the user's folder, the run's folder): `train.py --attention blocks.py:ChannelGate` run there."""
    user = tmp_path_factory.mktemp("user")
    (user / "blocks.py").write_text(textwrap.dedent(BLOCK))
    # seed 15: the two images hold all three classes between them (train.py refuses a class without objects)
    data = write_demo_dataset(user / "data", splits={"train": 2}, image_size=64, seed=15)
    result = _script(
        "train.py", "--attention", "blocks.py:ChannelGate", "--data", data, "--classes", data / "classes.txt",
        "--input-size", "64", "--epochs", "1", "--batch-size", "1", "--eval-period", "0", "--save-period", "0",
        "--output", user / "run", cwd=user,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return user, user / "run"


def test_a_block_in_a_file_outside_the_project_trains_and_is_recorded(trained):
    user, run = trained
    settings = json.loads((run / "settings.json").read_text())
    assert settings["attention"] == f"{(user / 'blocks.py').resolve()}:ChannelGate" and settings["phi"] is None
    assert (run / "last.keras").is_file()


def test_it_reloads_and_predicts_in_a_fresh_process_given_its_module(trained):
    user, run = trained
    image = next((user / "data").rglob("*.jpg"))
    result = _script(
        "predict.py", "--weights", run / "last.keras", "--attention-module", "blocks.py", "--source", image,
        "--input-size", "64", "--backend", "keras", "--conf", "0", "--output", user / "out", "--json", user / "d.json",
        cwd=user,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    [record] = json.loads((user / "d.json").read_text())
    assert record["detections"]  # --conf 0: every candidate box up to --max-detections


def test_without_its_module_the_load_says_which_module_to_import(trained):
    user, run = trained
    result = _script("predict.py", "--weights", run / "last.keras", "--backend", "keras", "--source", "x.jpg", cwd=user)
    assert result.returncode == 2
    assert f"{(user / 'blocks.py').resolve()}" in result.stderr and "--attention-module" in result.stderr


def test_train_refuses_a_block_that_breaks_the_contract_before_training(tmp_path, capsys):
    import train

    (tmp_path / "bad.py").write_text("from keras import layers\n\nclass Half(layers.Layer):\n"
                                     "    def call(self, x):\n        return x[..., ::2]\n")  # fmt: skip
    argv = ["--attention", f"{tmp_path / 'bad.py'}:Half", "--data", str(tmp_path / "nowhere"), "--output",
            str(tmp_path / "run"), "--epochs", "1"]  # fmt: skip
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert "'Half'" in err or "(Half)" in err
    assert "output shape" in err and "differs from its input shape" in err
    assert not (tmp_path / "run").exists()  # refused before the data, the folder or the model


def test_attention_mode_draws_the_user_blocks(trained, tmp_path):
    user, run = trained
    image = next((user / "data").rglob("*.jpg"))
    argv = ["--weights", str(run / "last.keras"), "--attention-module", str(user / "blocks.py"), "--mode", "attention"]
    out = tmp_path / "attention"
    assert predict.main([*argv, "--source", str(image), "--input-size", "64", "--output", str(out),
                         "--json", str(tmp_path / "a.json")]) == 0  # fmt: skip
    assert list(out.glob("*_attention.*"))
    [record] = json.loads((tmp_path / "a.json").read_text())
    assert len(record["panels"]) == 3


def test_it_exports_in_a_fresh_process_given_its_module(trained):
    user, run = trained
    out = user / "exported"
    argv = ["--weights", run / "last.keras", "--format", "saved_model", "--input-size", "64", "--output", out]
    result = _script("export.py", *argv, "--attention-module", "blocks.py", cwd=user)
    assert result.returncode == 0, result.stderr[-3000:]
    metadata = json.loads((out / "assets" / "yolo_export.json").read_text())
    assert metadata["attention"].endswith("blocks.py:ChannelGate")
    assert metadata["attention_at"] == ["feat1", "feat2", "p5_upsample"] and metadata["fusion"] == "concat"
    # Without it, the load names the module to import, as predict.py's does.
    result = _script("export.py", *argv[:-1], user / "never", cwd=user)
    assert result.returncode == 2 and "--attention-module" in result.stderr and not (user / "never").exists()
