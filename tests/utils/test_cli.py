"""The command-line layer every script shares (utils/cli.py)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from utils.cli import (
    add_detector_arguments,
    add_input_size_argument,
    add_output_argument,
    run_script,
    warnings_as_notes,
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
    [["--conf", "1.5"], ["--nms-iou", "-0.1"], ["--max-detections", "0"], ["--batch-size", "0"]],
)
def test_detector_options_are_checked(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["--weights", "w.keras", *argv])
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_run_script_maps_the_project_errors_only(capsys):
    class Broken(YoloError):
        exit_code = 3

    def fails(error):
        def main(argv):
            raise error

        return main

    assert run_script(lambda argv: 0) == 0
    assert run_script(lambda argv: None) == 0
    assert run_script(fails(YoloError("data.txt: no such file"))) == 2
    assert capsys.readouterr().err == "error: data.txt: no such file\n"
    assert run_script(fails(Broken("loss became nan"))) == 3
    # Anything else is a bug: a traceback, not "error: ...".
    with pytest.raises(ValueError, match="a bug"):
        run_script(fails(ValueError("a bug")))
    with pytest.raises(KeyError):
        run_script(fails(KeyError("x")))


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


def test_warnings_as_notes_prints_one_line_each_then_restores(capsys):
    import warnings

    shown = warnings.showwarning
    with warnings_as_notes():
        warnings.simplefilter("always")
        warnings.warn("the export failed; running it with TensorFlow", UserWarning, stacklevel=1)
    assert capsys.readouterr().err == "note: the export failed; running it with TensorFlow\n"
    assert warnings.showwarning is shown


def test_backend_defaults_to_auto():
    assert _parser().parse_args(["--weights", "w.keras"]).backend == "auto"
    assert _parser().parse_args(["--weights", "w.keras", "--backend", "keras"]).backend == "keras"
