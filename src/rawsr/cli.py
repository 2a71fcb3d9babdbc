"""What the four entry points (``rawsr.train``, ``rawsr.evaluate``, ``rawsr.predict``, ``rawsr.prepare``) share:
device resolution, the one-line report of a user error, and exit codes.

Exit codes: 0 done; 1 done, but some inputs were skipped; 2 a user error (a bad config value or path, named in one
line); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from rawsr.config import ConfigError

if TYPE_CHECKING:
    import torch

EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEVICES = "auto, cpu, cuda or cuda:N"
"""The values every ``device`` key accepts."""
#: Config keys under ``data`` that name a dataset location and must exist before anything heavy starts.
PATH_KEYS = ("root", "cache_dir", "input_dir")


def resolve_device(name: Any, key: str = "device") -> torch.device:
    """The device a ``device`` config key names: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or
    ``cuda:N``.

    Raises:
        ConfigError: naming ``key`` for any other value, or for a CUDA device this machine does not have.
    """
    import torch

    text = str(name)
    index = text.removeprefix("cuda:")
    if text not in ("auto", "cpu", "cuda") and not (text.startswith("cuda:") and index.isdigit()):
        raise ConfigError(f"config key '{key}': expected {DEVICES}, got {name!r}")
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (text != "cuda" and int(index) >= count):
            raise ConfigError(f"config key '{key}': {text} asked for, but this machine has {count} CUDA device(s)")
    return torch.device(text)


def run_entry(function: Callable[[], int | None], log: logging.Logger) -> int:
    """Run an entry point's work and turn what ends it into an exit code.

    ``function`` returns its own code (``None`` means 0). A :class:`rawsr.config.ConfigError` (or a value left at
    ``???``) is logged as one line and gives 2; Ctrl-C gives one line and 130.
    """
    try:
        return function() or EXIT_OK
    except (ConfigError, MissingMandatoryValue) as error:
        log.error("%s", error)
        return EXIT_USAGE
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED


def check_data_paths(data: DictConfig, prefix: str = "data") -> None:
    """Refuse a dataset path that is unset (``???``) or missing, naming the config key and the path."""
    for key in data:
        value_key = f"{prefix}.{key}"
        if OmegaConf.is_missing(data, key):
            if key in PATH_KEYS:
                raise ConfigError(f"config key '{value_key}' is not set: give the dataset path, e.g. {value_key}=/data")
            continue
        value = data[key]
        if isinstance(value, DictConfig):
            check_data_paths(value, value_key)
        elif key in PATH_KEYS and value is not None and not Path(str(value)).exists():
            raise ConfigError(f"config key '{value_key}': the path {value} does not exist")


# --------------------------------------------------------------------------------------------------------------------
# Run folders: a start that fails leaves nothing behind


#: What Hydra writes into a run folder before the job starts: its record of the config (the log files aside).
START_RECORDS = (".hydra",)


def shown_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies inside it, else as given."""
    absolute = Path(path).absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def detach_file_logs(folder: Path) -> list[logging.FileHandler]:
    """Close and remove the root logger's file handlers that write inside ``folder``; return them."""
    root, detached = logging.getLogger(), []
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == folder.absolute():
            root.removeHandler(handler)
            handler.close()
            detached.append(handler)
    return detached


def move_file_logs(old: Path, new: Path) -> None:
    """Make the root logger's file handlers that write inside ``old`` append to files of the same name in ``new``."""
    for handler in detach_file_logs(old):
        moved = logging.FileHandler(new / Path(handler.baseFilename).name, mode="a", encoding=handler.encoding)
        moved.setFormatter(handler.formatter)
        moved.setLevel(handler.level)
        logging.getLogger().addHandler(moved)


def holds_only_a_start(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but what a start writes before any work (:data:`START_RECORDS`, ``*.log``
    files and empty folders): no checkpoint, metrics or logger run."""

    def unused(path: Path) -> bool:
        return path.suffix == ".log" if path.is_file() else path.is_dir() and all(map(unused, path.iterdir()))

    return folder.is_dir() and all(p.name in START_RECORDS or unused(p) for p in folder.iterdir())


def remove_unused_run_folder(folder: str | Path, log: logging.Logger | None) -> bool:
    """Remove the run folder of a start that did no work (:func:`holds_only_a_start`), first closing the log files
    inside it, and say so on ``log`` (``None``: silently); a folder a run has written to (checkpoints, metrics: a
    resumed run) stays. Returns whether it went."""
    folder = Path(folder)
    if not holds_only_a_start(folder):
        return False
    detach_file_logs(folder)
    shutil.rmtree(folder, ignore_errors=True)
    if log is not None:
        log.info("removed the run folder %s: the run did not start", shown_path(folder))
    return True
