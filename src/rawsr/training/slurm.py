"""SLURM preemption: the checkpoint Lightning writes on SLURM's early warning (SIGUSR1), taken at a step boundary."""

from __future__ import annotations

import signal
from types import FrameType

import lightning as L
from lightning.pytorch.callbacks import Callback

from rawsr.training.lightning_api import slurm_requeue_now


class DeferredSlurmRequeue(Callback):
    """Under SLURM, Lightning saves ``hpc_ckpt_N.ckpt`` and calls ``scontrol requeue`` from its SIGUSR1 handler,
    wherever the signal lands: inside an optimiser step the file would hold half-updated weights. This callback
    keeps the handler's work but moves it to the end of the training batch during which the signal arrived (all
    ranks at the same step: the flag is combined across ranks each batch, one small collective), where the
    checkpoint is as consistent as Lightning's step checkpoints. Outside SLURM it does nothing.
    """

    def __init__(self) -> None:
        self._signalled = False
        self._active = False

    def _flag(self, signum: int, frame: FrameType | None) -> None:
        self._signalled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._active = signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        if self._active:  # Lightning installed its requeue handler (SLURM detected, auto_requeue on)
            signal.signal(signal.SIGUSR1, self._flag)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if not self._active:
            return
        if trainer.strategy.reduce_boolean_decision(self._signalled, all=False):
            self._signalled = False
            slurm_requeue_now(trainer, signal.SIGUSR1)
