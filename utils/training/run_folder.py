"""A training run's --output folder: one run at a time in it, and a run never mixed into another's files.

`claim_run_folder` wraps a run (Trainer.run, on the chief):

* **a lock**: `train.lock` in the folder, held with `flock` for as long as the run lasts and holding
  the run's process id and host. A second run into the folder is refused, naming that process; the
  kernel drops the lock of a process that died, so a lock file left by a killed run is taken over.
* **an earlier run is never overwritten by accident**: a folder that holds one (checkpoint.npz,
  weights, results: RUN_MARKERS) is refused unless the run continues it (--resume) or replaces it
  (--exist-ok: its files, RUN_OUTPUTS, are removed first; any other file stays).
* **no temporary file survives**: those a killed run's atomic writes left are removed
  (utils.files.remove_partial_files) before the run writes anything.

Why refuse instead of picking the next free name (ultralytics' logs/exp, logs/exp2): the folder a
run writes is the folder its caller reads (`--weights logs/voc/best.keras`, the ablation runner, a
`--resume` later); a run that moved itself elsewhere would leave them reading the earlier run.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from utils.errors import YoloError
from utils.files import check_writable_folder, remove_partial_files
from utils.training.callbacks import RESULTS_NAME, TRAIN_BATCH_NAME
from utils.training.checkpoint import CHECKPOINT_NAME

try:  # POSIX; elsewhere there is no lock (the other checks still hold)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

logger = logging.getLogger("yolov4_tiny.training")

LOCK_NAME = "train.lock"
# A held lock is tried again this many times, this far apart, before it counts as another run's.
HELD_TRIES, HELD_WAIT_S = 5, 0.05
# Files that mean the folder holds a run: what an epoch leaves (settings.json and train_batch0.jpg,
# written at the start, are rewritten by the next run with nothing lost).
RUN_MARKERS = (CHECKPOINT_NAME, "last.keras", "best.keras", RESULTS_NAME, "history.json")
NUMBERED_WEIGHTS = "ep[0-9][0-9][0-9]*.keras"  # callbacks.CheckpointWriter's ep<NNN>-loss<L>.keras
# Every file a run writes (utils.training.callbacks): what --exist-ok removes.
RUN_OUTPUTS = (*RUN_MARKERS, "settings.json", TRAIN_BATCH_NAME, "loss.png", "map.png")
TENSORBOARD_DIR, TENSORBOARD_EVENTS = "tensorboard", "events.out.tfevents.*"


class RunFolderError(YoloError):
    """An --output a run cannot use: another run is writing it, or it holds an earlier run and
    neither --resume nor --exist-ok was given. Exit code 2."""


def earlier_run(folder: Path) -> list[Path]:
    """The files in `folder` that show it holds a run (RUN_MARKERS, numbered weights), sorted."""
    found = [folder / name for name in RUN_MARKERS if (folder / name).is_file()]
    return sorted(found + list(folder.glob(NUMBERED_WEIGHTS)))


def remove_run_outputs(folder: Path) -> list[Path]:
    """Remove every file a run writes in `folder` (RUN_OUTPUTS, numbered weights, TensorBoard
    events); nothing else. Returns what was removed."""
    board = folder / TENSORBOARD_DIR
    removed = [folder / name for name in RUN_OUTPUTS if (folder / name).is_file()]
    removed += list(folder.glob(NUMBERED_WEIGHTS)) + list(board.glob(TENSORBOARD_EVENTS))
    for path in removed:
        path.unlink()
    if board.is_dir() and not any(board.iterdir()):
        board.rmdir()
    return removed


class FolderLock:
    """`path` (a lock file) held with flock while the lock is held; the file says who holds it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock; returns who held the file before when it was left by a process that is
        gone (its text: "process PID on HOST"), else None. Raises RunFolderError naming the holder
        when a live process holds it."""
        if fcntl is None:
            return None
        tries = 0
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held
                holder = _read(fd) or "another process"
                os.close(fd)
                tries += 1
                if tries < HELD_TRIES:  # perhaps `training_in` looking, for an instant
                    time.sleep(HELD_WAIT_S)
                    continue
                raise RunFolderError(
                    f"--output {self.path.parent} is in use by another training run ({holder}; lock file "
                    f"{self.path}): wait for it to end, or choose another --output"
                ) from None
            try:  # its holder may have removed the file (and made a new one) between our open and flock
                current = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        previous = _read(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return previous or None

    def release(self) -> None:
        """Remove the lock file and let the lock go (removed first, while still held: see acquire)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def training_in(folder: str | Path) -> str | None:
    """Who is training in `folder` now ("process PID on HOST"), from its held lock; None when no
    live process holds it (no lock file, or one a process that is gone left). It holds a shared
    lock on the file for an instant, which `FolderLock.acquire` waits out."""
    path = Path(folder) / LOCK_NAME
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # held
            return _read(fd) or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read(fd: int) -> str:
    return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()


@contextmanager
def claim_run_folder(folder: str | Path, *, resume: bool, exist_ok: bool) -> Iterator[None]:
    """Hold `folder` for one run (see the module docstring); the lock goes however the run ends.
    What it took over or removed is logged (INFO, the `yolov4_tiny.training` logger).

    Raises RunFolderError: another run holds the folder, or it holds an earlier run and neither
    `resume` nor `exist_ok` is set; OutputError (utils.files): it cannot be written."""
    folder = Path(folder)
    check_writable_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(folder / LOCK_NAME)
    previous = lock.acquire()
    try:
        if previous:
            logger.info(f"note: took over {lock.path}, left by {previous}, which no longer holds it")
        found = earlier_run(folder)
        if found and not resume:
            if not exist_ok:
                names = ", ".join(path.name for path in found[:4]) + (", ..." if len(found) > 4 else "")
                raise RunFolderError(
                    f"--output {folder} holds a training run ({names}): continue it with --resume, start "
                    "again there with --exist-ok (its files are removed first), or choose another --output"
                )
            removed = remove_run_outputs(folder)
            logger.info(f"--exist-ok: removed the {len(removed)} files of the earlier run in {folder}")
        partial = remove_partial_files(folder, earlier_names=RUN_OUTPUTS)
        if partial:
            logger.info(f"removed {len(partial)} temporary file(s) a killed run left in {folder}")
        yield
    finally:
        lock.release()
