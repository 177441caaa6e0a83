"""The library behind the scripts: data, training, inference, evaluation and interop.

Every package reports through Python's `logging`, under the `yolov4_tiny` logger
(`yolov4_tiny.training`, `yolov4_tiny.data`, `yolov4_tiny.inference`, `yolov4_tiny.interop`,
`yolov4_tiny.evaluation`). It has a NullHandler and nothing else, so a program that embeds the
library prints nothing of it until it configures logging; the scripts print it on stderr
(utils.cli.setup_logging, -v/-q).
"""

import logging

logging.getLogger("yolov4_tiny").addHandler(logging.NullHandler())
