import numpy as np

import kmeans_for_anchors
from nets.model_data import load_anchors
from utils.data.anchors import iou_kmeans
from utils.data.demo import write_demo_dataset
from utils.data.voc import voc_split_to_lines


def test_iou_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    truth = np.array([[10, 20], [50, 40], [200, 120]], float)
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, (50, 2)) for c in truth])
    anchors, mean_iou = iou_kmeans(wh, 3, seed=1)
    np.testing.assert_allclose(anchors, truth, rtol=0.05)
    assert mean_iou > 0.9


def test_script_writes_anchors_plot_and_reports_mean_iou(tmp_path, capsys):
    root = write_demo_dataset(tmp_path / "voc", splits={"train": 12}, image_size=96, seed=0)
    lines = voc_split_to_lines(root, "train", ["circle", "square", "triangle"]).lines
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    out_file, plot_file = tmp_path / "anchors.txt", tmp_path / "kmeans.png"
    code = kmeans_for_anchors.main(
        ["--annotations", str(tmp_path / "train.txt"), "--input-size", "192", "-k", "4",
         "--output", str(out_file), "--plot", str(plot_file)]
    )  # fmt: skip
    assert code == 0 and plot_file.stat().st_size > 0
    anchors = load_anchors(out_file)
    assert anchors.shape == (4, 2)
    # Demo squares, circles and triangles have equal width and height, scaled x2 into 192.
    assert (anchors >= 40).all() and (anchors <= 144).all()
    out = capsys.readouterr().out
    ours = float(out.split("mean IoU: ")[1].split()[0])
    default = float(out.split("yolo_anchors.txt: ")[1].split()[0])
    assert ours > 0.8 and ours > default
    assert kmeans_for_anchors.main(["--annotations", str(tmp_path / "missing.txt")]) == 2


def test_a_class_list_that_does_not_match_the_data_is_named(tmp_path, capsys):
    """A VOC folder of other classes than the list (VOC's 20 by default) gave "need at least 6
    boxes for 6 anchors, got 0"; the error now names the classes found and the way out."""
    root = write_demo_dataset(tmp_path / "voc", splits={"train": 6}, image_size=96, seed=0)
    argv = ["--data", str(root), "--train-sets", "train", "--output", str(tmp_path / "a.txt")]
    assert kmeans_for_anchors.main([*argv, "--plot", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert "0 boxes for 6 anchors" in err and "'circle'" in err and "--classes" in err
    argv += ["--classes", str(root / "classes.txt"), "-k", "3", "--plot", str(tmp_path / "a.png")]
    assert kmeans_for_anchors.main(argv) == 0 and load_anchors(tmp_path / "a.txt").shape == (3, 2)
