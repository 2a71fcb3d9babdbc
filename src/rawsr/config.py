"""Where the Hydra configs live, and checks that turn bad config values into one clear message."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

SCALES = (2, 3, 4)
"""The super-resolution factors rawsr builds networks, data and simulations for (the paper's are 2 and 4; 3 uses
this project's generalised geometry for the colour branch's last deconvolution, see
:func:`rawsr.model.blocks.deconv_geometry`)."""


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


def require_even_int(value: Any, key: str, low: int = 0) -> int:
    """Return ``value`` if it is an even integer ``>= low``, else raise naming ``key``."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and value % 2 == 0
    require(ok, key, f"an even integer >= {low}", value)
    return value


def require_scale(value: Any, key: str) -> int:
    """Return ``value`` if it is one of :data:`SCALES`, else raise naming ``key``."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value in SCALES
    require(ok, key, f"a super-resolution factor in {list(SCALES)}", value)
    return value


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def require_number(value: Any, key: str, low: float | None = None, high: float | None = None) -> float:
    """Return ``value`` as a float, or raise naming ``key`` unless it is a finite number in [low, high]."""
    ok = is_number(value) and (low is None or value >= low) and (high is None or value <= high)
    bounds = f" in [{'-inf' if low is None else low}, {'inf' if high is None else high}]"
    require(ok, key, "a number" + bounds, value)
    return float(value)


def require_range(value: Any, key: str, low: float | None = None, high: float | None = None) -> tuple[float, float]:
    """Parse ``[lo, hi]`` (or one number, meaning ``[v, v]``) with ``low <= lo <= hi <= high``.

    Raises :class:`rawsr.config.ConfigError` naming ``key`` otherwise.
    """
    pair = [value, value] if is_number(value) else value
    ok = isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2
    ok = ok and all(is_number(v) for v in pair) and pair[0] <= pair[1]
    ok = ok and (low is None or pair[0] >= low) and (high is None or pair[1] <= high)
    lo_text = "" if low is None else f"{low} <= "
    hi_text = "" if high is None else f" <= {high}"
    require(ok, key, f"[low, high] with {lo_text}low <= high{hi_text}", value)
    return float(pair[0]), float(pair[1])


def require_keys(cfg: Any, key: str, allowed: Sequence[str]) -> dict:
    """Check that ``cfg`` is a mapping whose keys are all in ``allowed``; return it as a plain dict."""
    require(isinstance(cfg, Mapping), key, "a mapping", cfg)
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        require(False, f"{key}.{unknown[0]}", f"a key among {sorted(allowed)}", unknown[0])
    return dict(cfg)


def require_bool(value: Any, key: str) -> bool:
    require(isinstance(value, bool), key, "true or false", value)
    return value


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
