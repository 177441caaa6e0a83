""".keras files written by earlier versions still load.

`tests/fixtures/saved_models/phi{0..4}/` hold what a `.keras` archive of a 3-class model held when
it was written (before the layout of the code changed): its `config.json` and `metadata.json`
verbatim, and the path and shape of every array in its `model.weights.h5`. Such an archive is
assembled for each with fresh random arrays at those paths; one fresh interpreter loads them all
with plain `keras.saving.load_model` after `import nets`, and each test checks its arrays landed
in the model.
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


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Each phi's archive assembled, then all loaded in one fresh interpreter that only imports
    `nets`, as a user's own script would: {phi: (arrays written, loaded config, loaded weight sums)}."""
    tmp = tmp_path_factory.mktemp("archives")
    archives = {phi: tmp / f"phi{phi}.keras" for phi in range(5)}
    arrays = {phi: assemble_archive(FIXTURES / f"phi{phi}", path) for phi, path in archives.items()}
    script = f"""
import json
import numpy as np
import keras
import nets
for phi, path in {[(phi, str(path)) for phi, path in archives.items()]!r}:
    model = keras.saving.load_model(path, safe_mode=True)
    sums = sorted(float(np.sum(w)) for w in model.get_weights())
    print(json.dumps({{"phi": phi, "config": model.get_config(), "sums": sums}}))
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"phi"')]
    return {r["phi"]: (arrays[r["phi"]], r["config"], r["sums"]) for r in records}


@pytest.mark.parametrize("phi", range(5))
def test_archive_from_earlier_version_loads_with_its_weights(loaded, phi):
    arrays, config, sums = loaded[phi]
    assert config == json.loads((FIXTURES / f"phi{phi}" / "config.json").read_text())["config"]
    # Every array of the archive is one of the model's weights (same count, same values).
    want = sorted(float(np.sum(a)) for a in arrays.values())
    np.testing.assert_allclose(sums, want, rtol=1e-5, atol=1e-3)
