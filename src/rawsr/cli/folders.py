"""Paths the entry points check before any work (dataset locations, output and run folders), and run folders that
a failed start leaves behind."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rawsr.cli.exits import EXIT_USAGE
from rawsr.config import ConfigError

if TYPE_CHECKING:
    pass


#: Config keys under ``data`` that name a dataset location and must exist before anything heavy starts.
PATH_KEYS = ("root", "cache_dir", "input_dir")


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


def check_output_folder(path: str | os.PathLike, key: str) -> Path:
    """Refuse an output folder that is a file, that cannot be created (a file or a folder without write permission
    on the way) or that cannot be written, naming ``key`` and the path; return it.

    Raises:
        ConfigError: naming ``key`` and the path.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"config key '{key}': expected a folder, but {path} is a file")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"config key '{key}': no write permission in the folder {path}")
        return path
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"config key '{key}': cannot create the folder {path}: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"config key '{key}': cannot create the folder {path}: no write permission in {ancestor}")
    return path


class RunFolderCheck(Callback):
    """A Hydra callback (``hydra.callbacks``) that checks the run folder before Hydra creates it, so that a folder
    that cannot be made ends the command with one line and exit status 2 instead of Hydra's traceback.

    ``key`` is the config key the message names (``output_dir`` for predict, whose run folder is its output folder).
    """

    def __init__(self, key: str = "hydra.run.dir") -> None:
        self.key = key

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir", self.key)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir", "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, folder_key: str, key: str) -> None:
        try:
            folder = OmegaConf.select(config, folder_key)
        except Exception:  # a value Hydra itself will report
            return
        if folder is None:
            return
        try:
            check_output_folder(str(folder), key)
        except ConfigError as error:
            print(error, file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
