"""A test-only callback for multi-process runs: each rank records what it did in files named by its rank.

Added to a run with ``+callbacks.probe._target_=rank_probe.RankProbe +callbacks.probe.folder=DIR`` (``tests/`` on
``PYTHONPATH``): ``DIR/rank<R>.pt`` holds the rank's final weights, ``DIR/rank<R>.json`` its global step and the
dataset indices of the validation images it scored, per validation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class RankProbe(Callback):
    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.validations: list[list[int]] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validations.append([])

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        if not trainer.sanity_checking:
            self.validations[-1] += [int(i) for i in batch["index"]]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        torch.save({k: v.detach().cpu() for k, v in pl_module.state_dict().items()}, self.folder / f"rank{rank}.pt")
        record = {
            "global_step": trainer.global_step,
            "world_size": trainer.world_size,
            "validations": self.validations,
            "val_images": len(trainer.datamodule.val_set),
        }
        (self.folder / f"rank{rank}.json").write_text(json.dumps(record))
