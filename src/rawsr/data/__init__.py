"""Data sources and the LightningDataModule that applies the imaging-process simulation."""

from rawsr.data.datamodule import RawSRDataModule

__all__ = ["RawSRDataModule"]
