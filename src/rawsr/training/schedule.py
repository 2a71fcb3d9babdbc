"""Learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler

from rawsr.config import require, require_choice


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


#: How ``model.lr_scaling`` adapts the learning rate to the global batch (see :func:`lr_factor`).
LR_SCALINGS = ("none", "linear", "sqrt")


def lr_factor(scaling: str, global_batch: int, reference_batch: int) -> float:
    """The factor on the configured learning rate for a global batch of ``global_batch`` samples (the per-process
    ``data.batch_size`` times the processes) when the rate was tuned at ``reference_batch``: 1 for ``none``,
    ``global / reference`` for ``linear``, its square root for ``sqrt``."""
    require_choice(scaling, "model.lr_scaling", LR_SCALINGS)
    for value, key in ((global_batch, "global batch (data.batch_size x devices x num_nodes)"),
                       (reference_batch, "model.lr_reference_batch")):  # fmt: skip
        require(isinstance(value, int) and not isinstance(value, bool) and value > 0, key, "a positive integer", value)
    ratio = global_batch / reference_batch
    return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[scaling]
