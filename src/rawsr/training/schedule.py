"""Learning-rate schedules."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LRScheduler


class PaperSchedule(LRScheduler):
    """The released code's per-epoch schedule: ``max(lr0 * decay**e, final_lr)`` for ``e < decay_epochs``, then
    ``final_lr``. With ``lr0 = 2e-4``, ``decay = 0.96``, ``decay_epochs = 20`` and ``final_lr = 1e-5`` this is the
    paper's recipe (step it once per epoch)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        decay: float = 0.96,
        decay_epochs: int = 20,
        final_lr: float = 1e-5,
        last_epoch: int = -1,
    ) -> None:
        self.decay, self.decay_epochs, self.final_lr = decay, decay_epochs, final_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        epoch = self.last_epoch
        if epoch >= self.decay_epochs:
            return [self.final_lr for _ in self.base_lrs]
        return [max(base * self.decay**epoch, self.final_lr) for base in self.base_lrs]
