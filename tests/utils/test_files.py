"""Writing outputs without losing anything (utils/files.py)."""

import errno

import pytest

from utils.files import (
    PARTIAL_MARK,
    OutputError,
    atomic_write,
    check_writable_folder,
    is_within,
    remove_partial_files,
    unique_name,
)


def test_atomic_write_leaves_the_old_file_and_no_temporary_one_when_interrupted_or_full(tmp_path):
    target = tmp_path / "best.keras"
    target.write_text("old")

    def interrupted(temp):
        open(temp, "w").write("half")
        raise KeyboardInterrupt  # Ctrl-C, or SIGTERM through utils.cli.run_script

    def disk_full(temp):
        open(temp, "w").write("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted)
    with pytest.raises(OutputError, match="best.keras: cannot write \\(No space left on device\\)") as error:
        atomic_write(target, disk_full)
    assert isinstance(error.value, OSError) and error.value.exit_code == 2
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["best.keras"]


def test_remove_partial_files_removes_what_a_kill_left_and_nothing_else(tmp_path):
    left = [tmp_path / f".checkpoint.npz{PARTIAL_MARK}a1b2c3d4.npz", tmp_path / ".checkpoint.k3j_9xq2.npz"]
    kept = [tmp_path / "checkpoint.npz", tmp_path / ".gitignore", tmp_path / ".notes.abcdefgh.txt"]
    for path in left + kept:
        path.write_text("x")
    assert sorted(remove_partial_files(tmp_path, earlier_names=["checkpoint.npz"])) == sorted(left)
    assert sorted(tmp_path.iterdir()) == sorted(kept)


def test_an_output_folder_that_cannot_be_written_is_an_error_naming_it(tmp_path):
    (tmp_path / "file").write_text("x")
    check_writable_folder(tmp_path / "new" / "out")
    check_writable_folder(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # nothing made, the probe gone
    with pytest.raises(OutputError, match="--json .*file/out: cannot write there"):
        check_writable_folder(tmp_path / "file" / "out", "--json")


def test_is_within_and_unique_names(tmp_path):
    assert is_within(tmp_path / "a" / ".." / "b" / "x.jpg", tmp_path / "b")
    assert is_within(tmp_path, tmp_path) and not is_within(tmp_path / "bb", tmp_path / "b")
    taken = set()
    names = [unique_name(n, taken) for n in ("x.jpg", "x_1.jpg", "X.jpg", "x.jpg", "y.png")]
    assert names == ["x.jpg", "x_1.jpg", "X_2.jpg", "x_3.jpg", "y.png"]
