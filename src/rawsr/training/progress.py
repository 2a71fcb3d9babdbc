"""The progress bar: rich on a terminal, plain text in log files."""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar


def progress_bar(refresh_rate: int = 1, file_refresh_rate: int = 50, stream: Any = None) -> ProgressBar:
    """A :class:`RichProgressBar` when ``stream`` (default stdout) is a terminal, else a :class:`TQDMProgressBar`
    that refreshes every ``file_refresh_rate`` steps, which keeps log files (SLURM, CI) readable."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        return RichProgressBar(refresh_rate=refresh_rate)
    return TQDMProgressBar(refresh_rate=file_refresh_rate)
