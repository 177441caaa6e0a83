"""Detection on Keras' JAX and torch backends without TensorFlow: predict.py, get_map.py and a
`Detector` run in a subprocess with KERAS_BACKEND=jax (or torch) in which `import tensorflow` fails,
and give what the TensorFlow backend gives (this process): scores within 1e-4, boxes within 0.01 px.
A backend that is not installed is skipped (torch is not in requirements-dev.txt: see there)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import get_map
import predict
from nets.yolo import YoloV4Tiny
from tests.layer_checks import randomise_batch_norms
from utils.data.demo import DEMO_CLASSES, write_demo_dataset
from utils.data.images import load_image
from utils.inference.engine.loader import load_detector

ROOT = Path(__file__).resolve().parents[1]
SCORE_TOLERANCE = 1e-4
BOX_TOLERANCE = 0.01
INPUT = "96"

# Run first in the subprocess: any import of TensorFlow raises ImportError, as where it is not installed.
# (Its spec is found, so that a library that only looks for it, as torch._dynamo does, carries on.)
NO_TENSORFLOW = """
import importlib.machinery
import sys

class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec):
        raise ImportError(f"No module named {spec.name!r} (this run has no TensorFlow)", name=spec.name)

    def exec_module(self, module):
        pass

sys.meta_path.insert(0, NoTensorFlow())
"""

BACKEND_RUN = (
    NO_TENSORFLOW
    + """
import os

import numpy as np
import keras
import export
import get_map
import predict
from utils.data.images import load_image
from utils.inference.engine.loader import load_detector

assert keras.backend.backend() == os.environ["KERAS_BACKEND"], keras.backend.backend()
weights, data, out = sys.argv[1:4]
images = f"{data}/JPEGImages"
run = ["--weights", weights, "--input-size", "96", "-q"]
assert predict.main([*run, "--source", images, "--output", f"{out}/boxes", "--json", f"{out}/run.json"]) == 0
assert predict.main([*run, "--mode", "heatmap", "--source", images, "--output", f"{out}/heatmap"]) == 0
assert predict.main([*run, "--mode", "cam", "--source", images, "--output", f"{out}/cam"]) == 2
assert predict.main([*run, "--half", "--source", images, "--output", f"{out}/half"]) == 2
assert export.main(["--weights", weights, "--format", "onnx", "--output", f"{out}/model.onnx", "-q"]) == 2
evaluate = ["--weights", weights, "--data", data, "--split", "test", "--input-size", "96", "--no-plots", "-q"]
assert get_map.main([*evaluate, "--out", f"{out}/map"]) == 0
detector = load_detector(weights, input_shape=(96, 96))
pictures = [load_image(f"{images}/{name}") for name in sorted(os.listdir(images))]
batch, _ = detector.preprocess(pictures)
found = detector.detect(pictures)
np.savez(
    f"{out}/detector.npz",
    *detector.raw_outputs(batch),
    **{f"{k}{i}": getattr(d, k) for i, d in enumerate(found) for k in ("boxes", "scores", "class_ids")},
)
assert "tensorflow" not in sys.modules
print("ran without TensorFlow")
"""
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A demo VOC set of 4 test images and a 3-class model whose heads spread scores over (0, 1)
    (random batch-norms, head kernels x 8): about 60 detections an image at conf 0.5."""
    folder = tmp_path_factory.mktemp("backends")
    data = write_demo_dataset(folder / "demo", splits={"test": 4}, image_size=(80, 120))
    keras.utils.set_random_seed(1)
    model = randomise_batch_norms(YoloV4Tiny(3, class_names=list(DEMO_CLASSES), input_shape=(None, None, 3)))
    for name in ("conv_29", "conv_36"):
        layer = model.get_layer(name)
        layer.kernel.assign(keras.ops.convert_to_numpy(layer.kernel) * 8.0)
    weights = folder / "spread.keras"
    model.save(weights)
    return weights, data, folder


@pytest.fixture(scope="module", params=["jax", "torch"])
def backend_run(request, setup):
    """The subprocess's outputs folder, after it ran on the backend (once for the module and backend)."""
    backend = request.param
    pytest.importorskip(backend, reason=f"{backend} is not installed: Keras' {backend} backend is not checked")
    weights, data, folder = setup
    out = folder / f"{backend}_out"
    out.mkdir()
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", BACKEND_RUN, str(weights), str(data), str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0 and "ran without TensorFlow" in done.stdout, done.stderr[-4000:]
    return out, done.stderr


def _assert_same_detections(got: list, want: list, where: str, box_tolerance: float = BOX_TOLERANCE) -> None:
    """Two lists of (class_id, score, box) hold the same detections, in any order of equal scores."""
    assert len(got) == len(want), f"{where}: {len(got)} detections, TensorFlow {len(want)}"
    unused = list(range(len(want)))
    for class_id, score, box in got:
        match = next(
            (
                j
                for j in unused
                if want[j][0] == class_id
                and abs(want[j][1] - score) <= SCORE_TOLERANCE
                and np.abs(np.subtract(want[j][2], box)).max() <= box_tolerance
            ),
            None,
        )
        assert match is not None, f"{where}: {class_id, score, box} is not among TensorFlow's detections"
        unused.remove(match)


@pytest.mark.slow
def test_predict_json_equals_tensorflows(setup, backend_run, tmp_path):
    weights, data, _ = setup
    out, _ = backend_run
    argv = ["--weights", str(weights), "--input-size", INPUT, "-q", "--backend", "keras"]
    argv += ["--source", str(data / "JPEGImages"), "--output", str(tmp_path / "boxes")]
    argv += ["--json", str(tmp_path / "tf.json")]
    assert predict.main(argv) == 0
    records = json.loads((out / "run.json").read_text())
    tf_records = json.loads((tmp_path / "tf.json").read_text())
    assert [r["image"] for r in records] == [r["image"] for r in tf_records] and len(tf_records) == 4
    assert sum(len(r["detections"]) for r in tf_records) > 100
    for got, want in zip(records, tf_records, strict=True):
        # The records round boxes to 0.01: a difference under 0.01 can round to one step of 0.01.
        _assert_same_detections(*(
            [(d["class_id"], d["score"], d["box"]) for d in records["detections"]] for records in (got, want)
        ), where=want["image"], box_tolerance=BOX_TOLERANCE + 1e-6)  # fmt: skip
    assert sorted(p.name for p in (out / "boxes").iterdir()) == sorted(p.name for p in (tmp_path / "boxes").iterdir())
    assert len(list((out / "heatmap").iterdir())) == 4


@pytest.mark.slow
def test_detector_equals_tensorflows(setup, backend_run):
    """The raw heads (the forward) and the detections of `Detector.detect`, unrounded."""
    weights, data, _ = setup
    out, _ = backend_run
    detector = load_detector(weights, input_shape=(96, 96), backend="keras")
    pictures = [load_image(p) for p in sorted((data / "JPEGImages").iterdir())]
    batch, _ = detector.preprocess(pictures)
    saved = np.load(out / "detector.npz")
    for i, head in enumerate(detector.raw_outputs(batch)):
        np.testing.assert_allclose(saved[f"arr_{i}"], head, rtol=1e-4, atol=1e-4)
    for i, dets in enumerate(detector.detect(pictures)):
        got = list(zip(saved[f"class_ids{i}"], saved[f"scores{i}"], saved[f"boxes{i}"], strict=True))
        _assert_same_detections(got, list(zip(dets.class_ids, dets.scores, dets.boxes, strict=True)), f"image {i}")


@pytest.mark.slow
def test_get_map_equals_tensorflows(setup, backend_run, tmp_path):
    weights, data, _ = setup
    out, _ = backend_run
    argv = ["--weights", str(weights), "--data", str(data), "--split", "test", "--input-size", INPUT, "--no-plots"]
    assert get_map.main([*argv, "-q", "--backend", "keras", "--out", str(tmp_path / "map")]) == 0
    got = json.loads((out / "map" / "results.json").read_text())
    want = json.loads((tmp_path / "map" / "results.json").read_text())
    assert got["images_evaluated"] == want["images_evaluated"] == 4
    assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-4)
    for name, entry in want["per_class"].items():
        assert got["per_class"][name]["ap"] == pytest.approx(entry["ap"], abs=1e-4), name
        assert got["per_class"][name]["det"] == entry["det"], name


@pytest.mark.slow
def test_what_needs_tensorflow_says_so(backend_run):
    """--mode cam, --half and export.py exit 2 with the project's message, not an ImportError traceback."""
    _, stderr = backend_run
    assert stderr.count("needs TensorFlow") == 3, stderr[-3000:]
    assert "Traceback" not in stderr
