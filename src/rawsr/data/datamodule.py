"""The LightningDataModule: data sources on CPU workers, the imaging-process simulation on the device."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from rawsr.config import require, require_positive_int, require_scale
from rawsr.model import RawSRNet

#: Keys of a batch that is ready for the network.
DEGRADED_KEYS = ("lr_raw", "lr_ref", "hr_srgb")

#: The thread-count variables of the libraries that a worker may load after it starts (OpenMP, OpenBLAS, MKL, numexpr).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class WorkerThreads:
    """The ``worker_init_fn`` of the data module's loaders: caps the thread pools of each DataLoader worker process.

    Sets torch's threads (its OpenMP pool, MKL) to ``threads``, the :data:`THREAD_VARIABLES` of libraries that the
    worker loads later, and OpenCV's pool when it is loaded. Then, when ``seed_everything(workers=True)`` asked for
    it (``PL_SEED_WORKERS``), seeds the worker as Lightning's own ``worker_init_fn`` would, which a loader with a
    ``worker_init_fn`` of its own does not get.
    """

    def __init__(self, threads: int, rank: int = 0) -> None:
        self.threads, self.rank = threads, rank

    def __call__(self, worker_id: int) -> None:
        import sys

        torch.set_num_threads(self.threads)
        for name in THREAD_VARIABLES:
            os.environ[name] = str(self.threads)
        if "cv2" in sys.modules:
            sys.modules["cv2"].setNumThreads(self.threads)
        if int(os.environ.get("PL_SEED_WORKERS", "0")):
            from lightning.fabric.utilities.seed import pl_worker_init_function

            pl_worker_init_function(worker_id, rank=self.rank)


class RawSRDataModule(L.LightningDataModule):
    """Feeds the two-branch network with ``lr_raw``, ``lr_ref`` and ``hr_srgb`` batches.

    Sources are dataset factories (Hydra ``_partial_`` configs) called as ``factory(scale=..., crop=...)``.
    A source either yields HR linear crops with their camera (``hr_linear``, ``wb``, ``ccm``, ``index``), which
    :meth:`on_after_batch_transfer` degrades on the device with ``degradation``, or yields pairs that are
    already degraded (the released rawSR dataset), which pass through untouched.

    Training samples draw fresh degradation seeds from the global torch RNG (seeded by ``seed_everything``);
    validation and test samples use ``val_seed + index``, so the validation set is the same at every epoch,
    on every device count, and in ``rawsr.evaluate``.

    ``root`` and ``cache_dir`` are the dataset locations that the source configs interpolate (``${..root}``); the
    data module only records them (``python -m rawsr.train`` checks that they exist before anything starts).

    ``worker_threads`` caps the thread pools of each DataLoader worker (:class:`WorkerThreads`).
    """

    def __init__(
        self,
        train: Callable[..., Dataset],
        val: Callable[..., Dataset],
        scale: int,
        crop: int,
        batch_size: int = 6,
        val_batch_size: int = 1,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        val_seed: int = 20210201,
        worker_threads: int = 1,
        degradation: Callable[[dict, torch.Tensor], dict] | None = None,
        root: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        require_scale(scale, "data.scale")
        require_positive_int(crop, "data.crop", even=True)
        multiple = RawSRNet.SIZE_MULTIPLE
        require(crop % multiple == 0, "data.crop", f"a multiple of {multiple} (RawSRNet.SIZE_MULTIPLE)", crop)
        require_positive_int(batch_size, "data.batch_size")
        require_positive_int(val_batch_size, "data.val_batch_size")
        require(isinstance(num_workers, int) and num_workers >= 0, "data.num_workers", "an integer >= 0", num_workers)
        require_positive_int(worker_threads, "data.worker_threads")
        self.train_factory, self.val_factory = train, val
        self.scale, self.crop = scale, crop
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.val_seed = val_seed
        self.worker_threads = worker_threads
        self.degradation = degradation
        self.root, self.cache_dir = root, cache_dir
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self.train_factory(scale=self.scale, crop=self.crop)
        if self.val_set is None:
            self.val_set = self.val_factory(scale=self.scale, crop=self.crop)

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        rank = trainer.global_rank if trainer is not None else 0
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers,
            worker_init_fn=WorkerThreads(self.worker_threads, rank) if self.num_workers else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.val_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def degrade(self, batch: dict[str, Any], training: bool) -> dict[str, Any]:
        """Return a network-ready batch: simulate the camera on ``batch`` unless it is already degraded."""
        if all(key in batch for key in DEGRADED_KEYS):
            return batch
        if self.degradation is None:
            raise ValueError("this data source yields HR linear crops, but no degradation was configured")
        index = batch["index"]
        if training:
            seeds = torch.randint(2**62, index.shape, dtype=torch.int64)
        else:
            seeds = index.to("cpu", torch.int64) + self.val_seed
        out = self.degradation(batch, seeds)
        out["index"] = index
        return out

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        training = bool(trainer is not None and trainer.training)
        return self.degrade(batch, training=training)
