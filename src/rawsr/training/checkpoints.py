"""Checkpoints written whole or not at all, and read back with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from rawsr.training.legacy import upgrade_checkpoint
from rawsr.training.module import RawSRModule
from rawsr.writers import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside its destination, syncs it to disk and renames it over the
    destination (:func:`rawsr.writers.atomic_write`), so that readers and ``resume=true`` see the previous file or
    the new one, never a truncated one.

    Lightning's own writer stages the bytes in the system temporary folder and moves them: when that folder is on
    another file system than the run (a local ``/tmp``, runs on a network share), the move is a copy into the
    destination that a kill can cut short. Remote URLs (``s3://`` ...) are left to Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.part"):  # left by a writer that was killed
            stale.unlink(missing_ok=True)
        atomic_write(path, lambda file: torch.save(checkpoint, file))


class AtomicCheckpoints(Callback):
    """Installs :class:`AtomicCheckpointIO` as the trainer's checkpoint writer (unless one was configured)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        io = trainer.strategy.checkpoint_io
        if type(io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        elif not isinstance(io, AtomicCheckpointIO):
            rank_zero_warn(
                f"callbacks.atomic_checkpoints: keeping the configured checkpoint writer {type(io).__name__}"
            )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", key: str = "ckpt_path") -> RawSRModule:
    """Load a :class:`RawSRModule` from a checkpoint written by ``rawsr.train``, with ``weights_only=True``.

    The weights are the checkpoint's ``state_dict``: for a run with the moving average of the weights
    (``callbacks/ema=on``), the averaged weights (the training weights beside them are not read).

    Raises ``FileNotFoundError`` or ``ValueError`` when the file is missing or not a rawsr checkpoint, with one
    message naming the config key ``key`` and the path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config key '{key}': no checkpoint file at {path}")
    checkpoint = _read_checkpoint(path, map_location, key)
    not_rawsr = f"config key '{key}': {path} is not a rawsr checkpoint"
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ValueError(f"{not_rawsr} (it holds no state_dict and hyper_parameters)")
    upgrade_checkpoint(checkpoint)
    hparams = dict(checkpoint["hyper_parameters"])
    if "net" not in hparams or "tile" not in hparams:
        raise ValueError(f"{not_rawsr} (its hyper_parameters lack the network's: net, tile)")
    module = RawSRModule(**{k: v for k, v in hparams.items() if k in _MODULE_ARGS})
    try:
        module.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError:
        raise ValueError(f"config key '{key}': the weights in {path} do not fit its network hyper-parameters") from None
    return module.eval()


def _read_checkpoint(path: Path, map_location: str | torch.device, key: str) -> Any:
    """``torch.load`` with ``weights_only=True``; a file it cannot read is refused in one line, naming ``key``."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # text, another format, a truncated file: torch's messages ("101") say nothing useful
        foreign = isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in str(error)
        reason = "it holds Python objects other than tensors and plain values" if foreign else ""
        reason = reason or "not a file written by torch.save, or one cut short"
    raise ValueError(f"config key '{key}': {path} is not a rawsr checkpoint ({reason})")


_MODULE_ARGS = ("net", "tile", "optimizer", "scheduler", "linear_loss_weight", "val_blend", "degradation")
