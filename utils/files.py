"""Writing outputs without losing anything: files are never left half-written, an output folder is
checked before the work starts, and one run never writes two outputs under one name.

    atomic_write            write to a temporary file beside the target, then rename it onto the target
    remove_partial_files    the temporary files that a process killed mid-write (SIGKILL, power loss) left
    check_writable_folder   write a probe where an output folder is (or would be made): a read-only or full
                            disk, or a path through a file, is an OutputError before the work starts
    is_within               whether a path lies in a folder (links resolved): an output folder holding an input
    unique_name             a file name this run has not used yet: x.jpg, then x_1.jpg, x_2.jpg

Imports nothing of the project but utils/errors.py, so every package can use it.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from utils.errors import YoloError

# atomic_write's temporary files are named ".<target name>.partial-<random><suffix>".
PARTIAL_MARK = ".partial-"


class OutputError(YoloError, OSError):
    """An output that cannot be written (a read-only or full disk, a path through a file), or one
    that would destroy an input or another run's files; the message names the path. Also an
    OSError, so callers that caught the OSError of a failed write keep working."""


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call write(temp_path) and move the result onto `path` in one step (os.replace).

    A failure or an interruption (Ctrl-C, SIGTERM through utils.cli.run_script) during `write`
    leaves the previous file intact and removes the temporary file; a kill that cannot be
    handled (SIGKILL) leaves it, named with PARTIAL_MARK, for `remove_partial_files`. The temporary
    file keeps the target's suffix (Keras and PIL pick the format from it) and sits in the same
    folder, so the rename never crosses file systems. An OSError (a full disk) is an OutputError
    naming `path`.
    """
    path = Path(path)
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{PARTIAL_MARK}", suffix=path.suffix)
    except OSError as err:
        raise OutputError(f"{path}: cannot write ({err.strerror or err})") from err
    os.close(fd)
    try:
        write(temp)
        os.chmod(temp, 0o644)  # mkstemp makes 0600 files
        os.replace(temp, path)
    except OutputError:
        raise
    except OSError as err:
        raise OutputError(f"{path}: cannot write ({err.strerror or err})") from err
    finally:
        if os.path.exists(temp):
            os.remove(temp)


# Before PARTIAL_MARK, atomic_write named its temporary files ".<stem>.<8 random characters><suffix>".
_EARLIER_PARTIAL = re.compile(r"^\.(?P<stem>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]+)$")


def remove_partial_files(folder: str | Path, earlier_names: Iterable[str] = ()) -> list[Path]:
    """Remove the temporary files of atomic_write that a killed process left in `folder` (not its
    subfolders); returns them. `earlier_names`: targets whose temporary files of an earlier version
    (before PARTIAL_MARK) are removed too, e.g. "checkpoint.npz". Call it only where no other
    process writes (a run's locked folder)."""
    folder = Path(folder)
    earlier = set(earlier_names)
    removed = []
    for path in folder.glob(".*"):
        match = _EARLIER_PARTIAL.match(path.name)
        earlier_partial = match is not None and match["stem"] + match["suffix"] in earlier
        if path.is_file() and (PARTIAL_MARK in path.name or earlier_partial):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def check_writable_folder(folder: str | Path, what: str = "--output") -> None:
    """Check that files can be written in `folder`, before the work that writes them: write, then
    remove, a small probe file in it or, when it does not exist yet, in its nearest existing
    ancestor (so nothing is left behind when the run stops before writing).

    Raises OutputError naming `what` and the folder: a read-only or full disk, a path through a file."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file, not a folder")
        fd, probe = tempfile.mkstemp(dir=existing, prefix=f".write-probe{PARTIAL_MARK}")
        try:
            os.write(fd, b"\0" * 4096)  # a full disk refuses data, not always an empty file
            os.fsync(fd)
        finally:
            os.close(fd)
            os.remove(probe)
    except OSError as err:
        raise OutputError(f"{what} {folder}: cannot write there ({err.strerror or err})") from err


def is_within(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` is `folder` or lies somewhere inside it, symbolic links resolved."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or `stem_1.suffix`, `stem_2.suffix`, ... the first not in `taken` (compared without
    case, as macOS and Windows compare names); the name returned is added to `taken`."""
    stem, suffix = os.path.splitext(name)
    candidate, n = name, 0
    while candidate.casefold() in taken:
        n += 1
        candidate = f"{stem}_{n}{suffix}"
    taken.add(candidate.casefold())
    return candidate
