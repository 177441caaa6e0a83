"""utils.interop.backends on a tiny hand-made ONNX model: metadata that does not describe the
model's heads is refused when it loads, and ONNX Runtime writes no telemetry files."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.utils.interop.test_metadata import valid_metadata
from utils.interop.backends import TELEMETRY_VARIABLE, load_backend
from utils.interop.metadata import MetadataError, metadata_path, write_metadata

ROOT = Path(__file__).resolve().parents[3]


def tiny_onnx_model(path: Path, channels: int, input_hw=(64, 64)) -> Path:
    """An ONNX model with export.py's input and output names whose heads are constant zeros of
    `channels` channels (3 * (5 + classes) for a model of ours)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    height, width = input_hw
    nodes, outputs = [], []
    for name, stride in (("p5", 32), ("p4", 16)):
        shape = [1, height // stride, width // stride, channels]
        value = numpy_helper.from_array(np.zeros(shape, np.float32))
        nodes.append(helper.make_node("Constant", [], [name], value=value))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    image = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, height, width, 3])
    graph = helper.make_graph(nodes, "tiny", [image], outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_metadata_whose_class_count_is_not_the_models_is_refused_on_load(tmp_path):
    model = tiny_onnx_model(tmp_path / "m.onnx", channels=3 * (5 + 3))
    write_metadata(metadata_path(model), valid_metadata(num_classes=3))
    forward, _ = load_backend(model)
    assert [h.shape[-1] for h in forward(np.zeros((1, 64, 64, 3), np.float32))] == [24, 24]
    metadata = valid_metadata(num_classes=4)  # consistent in itself: 27-channel heads, 4 names
    write_metadata(metadata_path(model), metadata)
    with pytest.raises(MetadataError, match=r"m.onnx: its export metadata says 4 classes .*27 channels.*has 24"):
        load_backend(model)


_OPEN_A_SESSION = """
import sys
import numpy as np
from utils.interop.backends import load_backend
forward, _ = load_backend(sys.argv[1])
forward(np.zeros((1, 64, 64, 3), np.float32))
print("ran")
"""


def test_onnx_runtime_writes_no_telemetry_files(tmp_path):
    """ONNX Runtime 1.29+ writes ~/.cache/Microsoft/DeveloperTools/.onnxruntime/deviceid when it is
    imported, unless told not to before; a fresh process with a home of its own shows it."""
    model = tiny_onnx_model(tmp_path / "m.onnx", channels=24)
    write_metadata(metadata_path(model), valid_metadata(num_classes=3))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", TELEMETRY_VARIABLE)}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_A_SESSION, str(model)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0 and "ran" in done.stdout, done.stderr[-2000:]
    assert not (home / ".cache" / "Microsoft").exists(), sorted(str(p) for p in home.rglob("*"))
