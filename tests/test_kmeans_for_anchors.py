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
