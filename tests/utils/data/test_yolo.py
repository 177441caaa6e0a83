"""utils.data.yolo.write_yolo_data: records of another format written as a data.yaml set read back the same."""

import numpy as np

from utils.data.demo import CLUTTER_CLASSES, write_demo_dataset
from utils.data.sources import open_data


def test_write_yolo_data_round_trip(tmp_path):
    from utils.data.yolo import write_yolo_data

    voc = write_demo_dataset(tmp_path / "voc", splits={"train": 3, "val": 2}, image_size=(100, 160), preset="clutter")
    names = list(CLUTTER_CLASSES)
    source = open_data(voc)
    splits = {s: source.read([s], names).images for s in ("train", "val")}
    kept = {s: [r.without_difficult() for r in records] for s, records in splits.items()}
    yaml_path = write_yolo_data(tmp_path / "yolo", kept, names)

    yolo = open_data(yaml_path)
    assert yolo.kind == "yolo" and yolo.class_names == names
    for split, records in kept.items():
        back = {r.image_id: r for r in yolo.read([split], names).images}
        assert sorted(back) == sorted(r.image_id for r in records)
        for record in records:
            got = back[record.image_id]
            assert got.size == record.size
            np.testing.assert_array_equal(got.class_ids, record.class_ids)
            np.testing.assert_allclose(got.boxes, record.boxes, atol=1e-3)
            assert not got.difficult.any()
