"""Where the Hydra configs live, and checks that turn bad config values into one clear message."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config value is missing or out of range; the message names the key and what was expected."""


def config_dir() -> Path:
    """Return the directory holding ``train.yaml`` and the config groups.

    From a clone (or an editable install) this is ``<repo>/configs``; from an installed wheel the
    same files are packaged as ``rawsr/configs``.
    """
    packaged = Path(str(resources.files("rawsr"))) / "configs"
    if (packaged / "train.yaml").is_file():
        return packaged
    clone = Path(__file__).resolve().parents[2] / "configs"
    if (clone / "train.yaml").is_file():
        return clone
    raise FileNotFoundError(f"rawsr configs not found in {packaged} or {clone}; reinstall the package")


def require(condition: bool, key: str, expected: str, value: Any) -> None:
    """Raise :class:`ConfigError` naming ``key`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"config key '{key}': expected {expected}, got {value!r}")


def require_choice(value: Any, key: str, choices: Iterable[Any]) -> None:
    choices = list(choices)
    require(value in choices, key, f"one of {choices}", value)


def require_positive_int(value: Any, key: str, *, even: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0 and (not even or value % 2 == 0)
    require(ok, key, "a positive even integer" if even else "a positive integer", value)


def instantiate(cfg: Any, /, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets a :class:`ConfigError` raised by the target through unwrapped,
    so that the user sees the message naming the key rather than Hydra's instantiation traceback."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(cfg, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None
