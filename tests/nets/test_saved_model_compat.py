""".keras files written by earlier versions still load.

`tests/fixtures/saved_models/phi{0..4}/` hold what a `.keras` archive of a 3-class model held when
it was written (before the layout of the code changed): its `config.json` and `metadata.json`
verbatim, and the path and shape of every array in its `model.weights.h5`. Each test assembles
such an archive with fresh random arrays at those paths, loads it with plain
`keras.saving.load_model` after `import nets`, and checks every array landed in the model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "saved_models"
ROOT = Path(__file__).resolve().parents[2]


def assemble_archive(fixture: Path, out: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a .keras archive from `fixture`; returns the arrays written, by h5 path."""
    layout = json.loads((fixture / "weights_layout.json").read_text())
    rng = np.random.default_rng(seed)
    arrays = {path: rng.normal(size=shape).astype("float32") for path, shape in layout}
    weights = out.with_suffix(".weights.h5")
    with h5py.File(weights, "w") as h5:
        for path, value in arrays.items():
            h5.create_dataset(path, data=value)
    with zipfile.ZipFile(out, "w") as archive:
        archive.write(fixture / "metadata.json", "metadata.json")
        archive.write(fixture / "config.json", "config.json")
        archive.write(weights, "model.weights.h5")
    return arrays


@pytest.mark.parametrize("phi", range(5))
def test_archive_from_earlier_version_loads_with_its_weights(tmp_path, phi):
    fixture = FIXTURES / f"phi{phi}"
    archive = tmp_path / f"phi{phi}.keras"
    arrays = assemble_archive(fixture, archive)
    expected = json.loads((fixture / "config.json").read_text())["config"]

    # A fresh interpreter: only `import nets`, as a user's own script would do.
    script = f"""
import json, sys
import numpy as np
import keras
import nets
model = keras.saving.load_model({str(archive)!r}, safe_mode=True)
print(json.dumps({{"config": model.get_config(), "sums": sorted(float(np.sum(w)) for w in model.get_weights())}}))
"""
    env_python = sys.executable
    run = subprocess.run([env_python, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert loaded["config"] == expected
    # Every array of the archive is one of the model's weights (same count, same values).
    want = sorted(float(np.sum(a)) for a in arrays.values())
    np.testing.assert_allclose(loaded["sums"], want, rtol=1e-5, atol=1e-3)
