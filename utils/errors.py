"""The project's exceptions: one root, `YoloError`, that the scripts turn into a message and an exit code.

Every error the project raises on purpose (a bad file, an option that cannot work, data that
cannot be used) derives from `YoloError` and says what is wrong, naming the file. The scripts catch
`YoloError` alone (utils/cli.py: `run_script`), print its message and exit with its `exit_code`;
anything else is a bug and stays a traceback.

This module imports nothing, so every package can raise these without an import cycle or an
import cost: `nets/` (which imports nothing else of `utils/`) and the scripts' start-up path,
which must not import TensorFlow before it is needed. The subclasses that carry a specific
meaning sit next to the code that raises them (for example `utils.data.images.ImageLoadError`).
Where an error also was a `ValueError` before this hierarchy existed, it still is, so callers
that caught `ValueError` keep working.
"""

from __future__ import annotations


class YoloError(Exception):
    """An error the project raises on purpose; its message is for the user.

    exit_code: what a script exits with when this error ends it (2: the input is unusable).
    """

    exit_code = 2

