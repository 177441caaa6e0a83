"""The export tests' shared fixtures (test_export.py, test_openvino.py): a small demo VOC set, the
reference Keras detector that detects on its test images, and that model saved as a .keras file.
Module-scoped: each test module gets its own."""

import pytest

from tests.export_helpers import detecting_keras_detector
from utils.data.demo import write_demo_dataset
from utils.data.images import load_image
from utils.data.voc import find_image, read_image_set


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("voc"), splits={"train": 12, "test": 10}, image_size=160)


@pytest.fixture(scope="module")
def demo_images(demo_root):
    ids = read_image_set(demo_root, "test")
    return ids, [load_image(find_image(demo_root, i)) for i in ids]


@pytest.fixture(scope="module")
def keras_detector(demo_images):
    return detecting_keras_detector(demo_images[1])


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("exported")


@pytest.fixture(scope="module")
def keras_file(keras_detector, out_dir):
    path = out_dir / "model.keras"
    keras_detector[0].model.save(path)
    return path
