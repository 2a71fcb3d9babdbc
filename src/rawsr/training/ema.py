"""An exponential moving average (EMA) of the weights, through Lightning's weight averaging.

:class:`ExponentialMovingAverage` is Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` (a
:class:`torch.optim.swa_utils.AveragedModel` of the whole module, updated after every optimiser step, swapped in for
validation) with this project's decay rule (:func:`ema_decay`) and four guards:

- the average lives on the training device (Lightning creates it while the module is still on the CPU);
- a checkpoint written after fitting (``last.ckpt`` by ``rawsr.train``) keeps the training weights in
  ``current_model_state``, so that ``resume=true`` continues from them (Lightning copies the average over them);
- a checkpoint written within an optimiser step, before this callback's turn (SLURM's requeue), holds that step's
  average;
- checkpoints loaded outside fitting (``test=true``) and validation outside fitting keep the checkpoint's weights.

A checkpoint written with the average on holds, under Lightning's layout, the averaged weights in ``state_dict``
(what :func:`rawsr.training.load_checkpoint`, and so ``rawsr.evaluate``, ``rawsr.predict`` and ``rawsr.export``,
read), the training weights in ``current_model_state`` and the average's count of updates in ``averaging_state``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from rawsr.config import ConfigError, is_number, require

#: The checkpoint key under which Lightning's weight averaging keeps the training weights (``state_dict`` then holds
#: the averaged ones).
TRAINING_WEIGHTS = "current_model_state"

#: The config key of the option (``callbacks/ema=on``).
KEY = "callbacks.ema"


def ema_decay(count: int, decay: float, warmup: bool) -> float:
    """The decay of the update that follows ``count >= 1`` averaged weights: ``decay``, or with ``warmup``
    ``min(decay, (1 + count) / (10 + count))``, which weighs the first weights of a run lightly."""
    return min(decay, (1 + count) / (10 + count)) if warmup else decay


def ema_update(decay: float, warmup: bool) -> Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor], Any], None]:
    """The ``multi_avg_fn`` of :class:`~torch.optim.swa_utils.AveragedModel` for :func:`ema_decay`:
    ``average <- decay_t * average + (1 - decay_t) * current`` for each pair of tensors (any shape, of one device
    and dtype); ``count`` is the number of updates averaged so far (the first update copies the weights). Integer
    buffers take the current value."""

    @torch.no_grad()
    def update(averages: Sequence[torch.Tensor], currents: Sequence[torch.Tensor], count: Any) -> None:
        weight = 1.0 - ema_decay(int(count), decay, warmup)
        for average, current in zip(averages, currents, strict=True):
            if average.is_floating_point() or average.is_complex():
                average.lerp_(current.to(average.dtype), weight)
            else:
                average.copy_(current)

    return update


class ExponentialMovingAverage(WeightAveraging):
    """Keeps an exponential moving average of the module's weights (parameters and floating-point buffers), updated
    after every optimiser step; validation, ``last.ckpt`` and the best checkpoints use the average, and after fitting
    the module holds it (Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging`).

    Args:
        decay: the decay of the average, in (0, 1); each update is ``decay_t * average + (1 - decay_t) * weights``.
        warmup: ``decay_t = min(decay, (1 + t) / (10 + t))`` after ``t`` updates (the first update copies the
            weights); ``False``: ``decay_t = decay`` from the second update on.
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True) -> None:
        require(is_number(decay) and 0 < decay < 1, f"{KEY}.decay", "a number in (0, 1)", decay)
        require(isinstance(warmup, bool), f"{KEY}.warmup", "true or false", warmup)
        super().__init__(use_buffers=True, multi_avg_fn=ema_update(float(decay), warmup))
        self.decay, self.warmup = float(decay), warmup
        self._trained: dict[str, torch.Tensor] | None = None  # the training weights once fitting ended

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == TrainerFn.FITTING:
            _refuse_weights_only_checkpoints(trainer)
            self._trained = None
            # Lightning builds the average on the module's device, and moves the module later (strategy setup).
            pl_module.to(trainer.strategy.root_device)
        super().setup(trainer, pl_module, stage)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trained = {name: value.detach().clone() for name, value in pl_module.state_dict().items()}
        super().on_train_end(trainer, pl_module)  # the module takes the average

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.training and self._trained is None:  # the update of this step, if its hook has not run yet
            super().on_train_batch_end(trainer, pl_module, None, None, 0)
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._trained is not None and TRAINING_WEIGHTS in checkpoint:
            checkpoint[TRAINING_WEIGHTS] = self._trained

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # resuming: the average, and the module back to training weights
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


def _refuse_weights_only_checkpoints(trainer: L.Trainer) -> None:
    """Checkpoints saved with ``save_weights_only`` skip the callbacks' hooks: they would hold the training weights
    where the average belongs."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "save_weights_only", False):
            where = getattr(callback, "dirpath", None)
            raise ConfigError(
                f"config key '{KEY}': checkpoints saved with save_weights_only=true (by {type(callback).__name__} "
                f"of {where}) would hold the training weights, not the average: set that callback's "
                "save_weights_only to false, or switch the average off"
            )
