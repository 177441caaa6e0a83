"""The project's exceptions: one root, `YoloError`, that the scripts turn into a message and an
exit code; and the exit codes themselves (EXIT_*, one meaning each: docs/exit-codes.md).

Every error the project raises on purpose (a bad file, an option that cannot work, data that
cannot be used) derives from `YoloError` and says what is wrong, naming the file. The scripts catch
`YoloError` alone (utils/cli.py: `run_script`), print its message and exit with its `exit_code`;
anything else is a bug: its traceback is printed and the script exits with EXIT_BUG.

This module imports nothing, so every package can raise these without an import cycle or an
import cost: `nets/` (which imports nothing else of `utils/`) and the scripts' start-up path,
which must not import TensorFlow before it is needed. The subclasses that carry a specific
meaning sit next to the code that raises them (for example `utils.data.images.ImageLoadError`).
Where an error also was a `ValueError` before this hierarchy existed, it still is, so callers
that caught `ValueError` keep working.
"""

from __future__ import annotations

# What a script exits with. A script returns EXIT_PARTIAL itself; utils.cli.run_script maps the
# others (a YoloError's exit_code, a signal, an unexpected exception).
EXIT_OK = 0
EXIT_PARTIAL = 1  # done, but some inputs were left out (each named on stderr)
EXIT_UNUSABLE = 2  # bad options or input: refused with a message (argparse's usage errors too)
EXIT_NAN = 3  # training stopped: the loss became NaN (the last good checkpoint is kept)
EXIT_BUG = 70  # an unexpected error, a bug: its traceback is printed (sysexits.h's EX_SOFTWARE)
EXIT_SIGINT = 130  # interrupted by Ctrl-C (SIGINT): 128 + 2, as shells report a signal
EXIT_SIGTERM = 143  # terminated by SIGTERM (timeout, docker stop, a cluster's pre-emption): 128 + 15


class YoloError(Exception):
    """An error the project raises on purpose; its message is for the user.

    exit_code: what a script exits with when this error ends it (EXIT_UNUSABLE: the input is unusable).
    """

    exit_code = EXIT_UNUSABLE


class Interrupted(KeyboardInterrupt):
    """A signal handled like Ctrl-C (utils.cli.run_script raises it on SIGTERM). It unwinds the
    script as KeyboardInterrupt does, so every `finally` runs (temporary files removed, a video
    closed playable, --json completed), and the script exits with `exit_code`."""

    def __init__(self, signal_name: str, exit_code: int):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_code = exit_code
