"""A data set with Chinese class names, in folders and files with spaces, trains, predicts and evaluates end to end."""

import json

import keras
import pytest

import get_map
import predict
import train
from tests.data_formats import CLASSES, write_coco

pytestmark = pytest.mark.slow


def test_chinese_class_names_and_paths_with_spaces_train_predict_and_evaluate(tmp_path, capsys):
    data = write_coco(tmp_path / "我的 数据" / "coco 格式")  # class names from its categories, no --classes
    run = tmp_path / "训练 输出"
    # The train JSON alone: a data set without a val set (the run skips validation, which halves its time).
    code = train.main([
        "--data", str(data / "annotations" / "instances_train.json"), "--input-size", "64", "--epochs", "1",
        "--batch-size", "2", "--freeze-batch-size", "2", "--output", str(run), "--save-period", "0", "--mosaic", "0",
        "--mixup", "0",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    settings = (run / "settings.json").read_text("utf-8")
    assert '"小 狗"' in settings and json.loads(settings)["class_names"] == CLASSES
    assert keras.saving.load_model(run / "best.keras").class_names == CLASSES

    out, dets = tmp_path / "预测 图", tmp_path / "预测 结果.json"
    code = predict.main(["--weights", str(run / "best.keras"), "--mode", "dir_predict", "--source", str(data / "val"),
                         "--output", str(out), "--json", str(dets), "--conf", "0.001"])  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["验证 5.jpg", "验证 6.jpg"]
    records = json.loads(dets.read_text("utf-8"))
    names = {d["class_name"] for r in records for d in r["detections"]}
    assert names and names <= set(CLASSES)

    results = tmp_path / "评估 结果"
    code = get_map.main(["--weights", str(run / "best.keras"), "--data", str(data), "--split", "val",
                         "--input-size", "64", "--output", str(results)])  # fmt: skip
    assert code == 0
    report = json.loads((results / "results.json").read_text("utf-8"))
    assert list(report["per_class"]) == CLASSES and report["images_evaluated"] == 2
    assert (results / "pr_curves").is_dir()
