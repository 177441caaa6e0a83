"""A run's --output folder: the lock, the earlier run, the temporary files (utils/training/run_folder.py).
train.py's end-to-end checks of the same are in tests/test_train.py."""

import logging
import os

import pytest

from utils.training.run_folder import LOCK_NAME, FolderLock, RunFolderError, claim_run_folder, earlier_run


def test_the_lock_keeps_a_second_holder_out_naming_the_first_then_goes(tmp_path):
    first = FolderLock(tmp_path / LOCK_NAME)
    assert first.acquire() is None
    with pytest.raises(RunFolderError, match=f"in use by another training run \\(process {os.getpid()} on "):
        FolderLock(tmp_path / LOCK_NAME).acquire()  # another open file: flock refuses it, in one process too
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_file_nobody_holds_is_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text("process 4194304 on elsewhere\n")  # what a killed run leaves
    lock = FolderLock(tmp_path / LOCK_NAME)
    assert lock.acquire() == "process 4194304 on elsewhere"
    assert (tmp_path / LOCK_NAME).read_text().startswith(f"process {os.getpid()} on ")
    lock.release()


def test_an_earlier_run_is_refused_kept_for_resume_and_removed_for_exist_ok(tmp_path, caplog):
    run = tmp_path / "run"
    (run / "tensorboard").mkdir(parents=True)
    made = ["best.keras", "ep010-loss1.234.keras", "settings.json", "loss.png", ".last.keras.partial-abcd1234.keras"]
    for name in [*made, "tensorboard/events.out.tfevents.1.host", "notes.txt"]:
        (run / name).write_text("x")
    assert [p.name for p in earlier_run(run)] == ["best.keras", "ep010-loss1.234.keras"]
    caplog.set_level(logging.INFO, logger="yolov4_tiny")
    with pytest.raises(RunFolderError, match="holds a training run \\(best.keras, ep010-loss1.234.keras\\)"):
        with claim_run_folder(run, resume=False, exist_ok=False):
            pass
    with claim_run_folder(run, resume=True, exist_ok=False):
        assert (run / "best.keras").is_file() and (run / LOCK_NAME).is_file()
    assert not (run / ".last.keras.partial-abcd1234.keras").exists()  # a killed write's leftover
    with claim_run_folder(run, resume=False, exist_ok=True):
        pass
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]  # the run's files gone, the user's kept
    assert any("removed the 5 files of the earlier run" in r.getMessage() for r in caplog.records)
