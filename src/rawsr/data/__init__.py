"""Data sources and the LightningDataModule that applies the imaging-process simulation.

``RawSRDataModule`` is imported lazily, so that tools which only need the sources (``rawsr.prepare`` and its
decoding workers) do not pay for importing Lightning.
"""

from typing import Any

__all__ = ["RawSRDataModule"]


def __getattr__(name: str) -> Any:
    if name == "RawSRDataModule":
        from rawsr.data.datamodule import RawSRDataModule

        return RawSRDataModule
    raise AttributeError(f"module 'rawsr.data' has no attribute {name!r}")
