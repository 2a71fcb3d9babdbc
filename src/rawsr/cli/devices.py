"""The devices a ``device`` key names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rawsr.config import ConfigError

if TYPE_CHECKING:
    import torch


DEVICES = "auto, cpu, cuda or cuda:N"
"""The values every ``device`` key accepts."""


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
