"""The command-line layer every script shares (utils/cli.py)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from utils import errors
from utils.cli import (
    add_detector_arguments,
    add_input_size_argument,
    add_output_argument,
    add_verbosity_arguments,
    run_script,
    setup_logging,
)
from utils.errors import YoloError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tool")
    add_detector_arguments(parser)
    add_output_argument(parser, "out_dir", "output folder")
    return parser


@pytest.mark.parametrize("given", [["416"], ["320x416"], ["320,416"], ["320", "416"]])
def test_input_size_forms(given):
    parser = argparse.ArgumentParser()
    add_input_size_argument(parser)
    want = (416, 416) if given == ["416"] else (320, 416)
    assert parser.parse_args(["--input-size", *given]).input_size == want
    assert parser.parse_args([]).input_size is None


@pytest.mark.parametrize("bad", [["100"], ["320x"], ["a,b"], ["0"], ["32", "32", "32"]])
def test_bad_input_size_is_a_usage_error(bad, capsys):
    parser = argparse.ArgumentParser()
    add_input_size_argument(parser)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--input-size", *bad])
    assert exit_info.value.code == 2
    assert "multiples of 32" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--output", "--out", "--save-dir", "--output-dir"])
def test_output_flag_and_its_hidden_aliases(flag, capsys):
    parser = _parser()
    args = parser.parse_args(["--weights", "w.keras", flag, "somewhere"])
    assert str(args.output) == "somewhere"
    assert str(parser.parse_args(["--weights", "w.keras"]).output) == "out_dir"
    parser.print_help()
    shown = capsys.readouterr().out
    assert "--output" in shown and "--save-dir" not in shown and "--out " not in shown


@pytest.mark.parametrize(
    "argv",
    [["--conf", "1.5"], ["--nms-iou", "-0.1"], ["--merge-iou", "1.5"], ["--max-detections", "0"],
     ["--batch-size", "0"]],
)
def test_detector_options_are_checked(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["--weights", "w.keras", *argv])
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_merge_and_calibration_options_reach_the_detector():
    """predict.py's and get_map.py's --merge-iou and --calib-data are load_detector's merge_iou and
    calib_data (utils/inference/engine/loader.py does what they say)."""
    from pathlib import Path

    from utils.cli import detector_kwargs

    kwargs = detector_kwargs(_parser().parse_args(["--weights", "w.keras", "--merge-iou", "1", "--calib-data", "voc"]))
    assert (kwargs["merge_iou"], kwargs["calib_data"]) == (1.0, Path("voc"))
    kwargs = detector_kwargs(_parser().parse_args(["--weights", "w.keras"]))
    assert (kwargs["merge_iou"], kwargs["calib_data"]) == (0.5, None)


def _raises(error):
    def main(argv):
        raise error

    return main


def _sigterm(argv):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler raises at the next bytecode, long before this ends


class _NaN(YoloError):
    exit_code = errors.EXIT_NAN


# Every outcome of the exit-code table (docs/exit-codes.md): (how main ends, the code, what stderr says).
OUTCOMES = {
    "success": (lambda argv: None, errors.EXIT_OK, ""),
    "partial": (lambda argv: errors.EXIT_PARTIAL, 1, ""),
    "unusable": (_raises(YoloError("data.txt: no such file")), 2, "error: data.txt: no such file\n"),
    "nan": (_raises(_NaN("loss became nan")), 3, "error: loss became nan\n"),
    "bug": (_raises(ValueError("a bug")), 70, "ValueError: a bug"),
    "sigint": (_raises(KeyboardInterrupt()), 130, "interrupted\n"),
    "sigterm": (_sigterm, 143, "terminated (SIGTERM)\n"),
}


@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_run_script_gives_each_outcome_its_exit_code(outcome, capsys):
    """One code per outcome (issue 22): an unexpected exception keeps its traceback but exits 70,
    not Python's 1, which means "some inputs left out"; SIGTERM unwinds like Ctrl-C and gives 143."""
    main, code, err = OUTCOMES[outcome]
    before = signal.getsignal(signal.SIGTERM)
    assert run_script(main) == code
    printed = capsys.readouterr().err
    assert (err in printed) if outcome == "bug" else printed == err
    if outcome == "bug":
        assert "Traceback (most recent call last)" in printed and "exit code 70" in printed
    assert signal.getsignal(signal.SIGTERM) is before  # the script's handler is gone afterwards


def test_documented_exit_code_table_matches_utils_errors():
    """The table of docs/exit-codes.md lists exactly the codes of utils/errors.py, each once."""
    page = (ROOT / "docs" / "exit-codes.md").read_text(encoding="utf-8")
    section = page.split("\n| code | meaning |\n", 1)[1].split("\n\n", 1)[0]
    listed = [int(m) for m in re.findall(r"^\| *`?(\d+)`? *\|", section, flags=re.M)]
    defined = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    assert sorted(listed) == sorted(defined) and len(set(listed)) == len(listed)
    assert {code for _, code, _ in OUTCOMES.values()} == defined


@pytest.mark.parametrize("script", ["predict", "export", "convert_darknet"])
def test_help_does_not_import_tensorflow(script):
    """--help and the argument checks answer at once: TensorFlow loads only when a model is needed."""
    code = (
        f"import sys, {script}\n"
        f"try:\n    {script}.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('TF', 'tensorflow' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "--output" in run.stdout
    assert run.stdout.strip().endswith("TF False")


def _log_every_level(name: str = "yolov4_tiny.training") -> None:
    logger = logging.getLogger(name)
    logger.debug("the resolved settings")
    logger.info("epoch 1: loss 0.5")
    logger.warning("image.jpg: not an image; skipped")
    logger.error("nothing left to train on")


@pytest.mark.parametrize(
    "flags, shown",
    [
        ([], ["epoch 1: loss 0.5", "warning: image.jpg: not an image; skipped", "error: nothing left to train on"]),
        (["-q"], ["warning: image.jpg: not an image; skipped", "error: nothing left to train on"]),
        (
            ["--verbose"],
            [
                "debug: the resolved settings",
                "epoch 1: loss 0.5",
                "warning: image.jpg: not an image; skipped",
                "error: nothing left to train on",
            ],
        ),
    ],
)
def test_setup_logging_prints_the_library_lines_the_verbosity_asks_for(flags, shown, capsys):
    parser = argparse.ArgumentParser()
    add_verbosity_arguments(parser)
    setup_logging(parser.parse_args(flags))
    _log_every_level()
    captured = capsys.readouterr()
    assert captured.err.splitlines() == shown and captured.out == ""


def test_verbose_and_quiet_exclude_each_other(capsys):
    parser = argparse.ArgumentParser()
    add_verbosity_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["-v", "-q"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_setup_logging_twice_prints_each_line_once_and_not_through_the_root_logger(capsys):
    root_lines = []

    class RootLines(logging.Handler):
        def emit(self, record):
            root_lines.append(record.getMessage())

    root_handler = RootLines()
    logging.getLogger().addHandler(root_handler)  # as a program's logging.basicConfig() would
    try:
        setup_logging()
        setup_logging(logging.INFO)  # a second main() in the same process
        logging.getLogger("yolov4_tiny.data").info("read 4 images")
    finally:
        logging.getLogger().removeHandler(root_handler)
    assert capsys.readouterr().err == "read 4 images\n" and root_lines == []


def test_backend_defaults_to_auto():
    assert _parser().parse_args(["--weights", "w.keras"]).backend == "auto"
    assert _parser().parse_args(["--weights", "w.keras", "--backend", "keras"]).backend == "keras"


def _quiet_import(tmp_path, env_level: str | None) -> subprocess.CompletedProcess:
    """A stand-in `tensorflow` that writes start-up noise and one real line to file descriptor 2
    (as TensorFlow's C++ libraries do), imported after `quiet_tensorflow()`."""
    fake = tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import os\n"
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')\n"
        "os.write(2, b'I0000 cudart_stub.cc:31] Could not find cuda drivers on your machine\\n')\n"
        "os.write(2, b'a line of its own\\n')\n"
    )
    code = (
        "import os; from utils.cli import quiet_tensorflow; quiet_tensorflow(); import tensorflow; "
        "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], tensorflow.__spec__.loader.__class__.__name__)"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join((str(tmp_path / "fake"), str(ROOT)))
    if env_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = env_level
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_quiet_tensorflow_drops_its_startup_lines_and_keeps_the_rest(tmp_path):
    result = _quiet_import(tmp_path, None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "SourceFileLoader"]  # the module keeps its own loader
    assert result.stderr == "a line of its own\n"


def test_quiet_tensorflow_leaves_a_users_log_level_alone(tmp_path):
    result = _quiet_import(tmp_path, "0")  # the user wants TensorFlow's INFO lines
    assert result.stdout.split()[0] == "0"
    assert "cudart_stub" in result.stderr and "a line of its own" in result.stderr


def test_attention_at_help_names_every_insertion_point_with_its_shape():
    """utils/cli.py writes the points out (no TensorFlow for --help): they must stay nets.yolo's."""
    from nets.yolo import DEFAULT_POINTS, INSERTION_POINTS
    from utils.cli import ATTENTION_AT_HELP

    named = re.findall(r"(\w+) \((\d+x\d+x\d+)", ATTENTION_AT_HELP)
    assert [name for name, _ in named] == list(INSERTION_POINTS)
    for name, shape in named:
        assert shape in INSERTION_POINTS[name], name
    assert f"Default: {','.join(DEFAULT_POINTS)}" in ATTENTION_AT_HELP
