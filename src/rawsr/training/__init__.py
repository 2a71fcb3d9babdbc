"""Training with Lightning: the LightningModule and the plug-ins a run at scale needs, one module per concern.

- :mod:`rawsr.training.module`: :class:`RawSRModule` (loss, optimiser, schedule, validation metrics).
- :mod:`rawsr.training.schedule`: :class:`PaperSchedule`, the released code's learning-rate schedule.
- :mod:`rawsr.training.checkpoints`: checkpoints written whole or not at all; :func:`load_checkpoint`.
- :mod:`rawsr.training.legacy`: :func:`upgrade_checkpoint`, checkpoints of release 0.1.0 under the current names.
- :mod:`rawsr.training.ema`: :class:`ExponentialMovingAverage` of the weights (``callbacks/ema=on``).
- :mod:`rawsr.training.resume`: random states in checkpoints and an exact mid-epoch resume.
- :mod:`rawsr.training.panels`: image panels for W&B and TensorBoard.
- :mod:`rawsr.training.progress`: the progress bar.
- :mod:`rawsr.training.slurm`: SLURM's requeue signal taken at a step boundary; the batch script, rendered.
- :mod:`rawsr.training.ddp`: DDP started from ``python -m rawsr.train``, also inside Hydra sweeps.
- :mod:`rawsr.training.loggers`: W&B without a key or network, resumable CSV.
- :mod:`rawsr.training.lightning_api`: every use of Lightning's private API, behind named functions.
"""

from rawsr.training.checkpoints import AtomicCheckpointIO, AtomicCheckpoints, load_checkpoint
from rawsr.training.ddp import HydraDDPStrategy, release_distributed
from rawsr.training.ema import ExponentialMovingAverage
from rawsr.training.legacy import upgrade_checkpoint
from rawsr.training.module import RawSRModule
from rawsr.training.panels import ImagePanels
from rawsr.training.progress import progress_bar
from rawsr.training.resume import ReproducibleResume
from rawsr.training.schedule import PaperSchedule
from rawsr.training.slurm import DeferredSlurmRequeue

__all__ = [
    "AtomicCheckpointIO",
    "AtomicCheckpoints",
    "DeferredSlurmRequeue",
    "ExponentialMovingAverage",
    "HydraDDPStrategy",
    "ImagePanels",
    "PaperSchedule",
    "RawSRModule",
    "ReproducibleResume",
    "load_checkpoint",
    "progress_bar",
    "release_distributed",
    "upgrade_checkpoint",
]
