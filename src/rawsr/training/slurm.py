"""SLURM: the checkpoint Lightning writes on SLURM's early warning (SIGUSR1), taken at a step boundary; the batch
script a sweep through ``hydra/launcher=slurm`` would hand ``sbatch``, rendered without a cluster."""

from __future__ import annotations

import itertools
import signal
from collections.abc import Sequence
from types import FrameType
from typing import Any

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


# --------------------------------------------------------------------------------------------------------------------
# The batch script, without a cluster


def sbatch_script(launcher: Any, jobs: int = 1) -> str:
    """The batch script that hydra-submitit-launcher would submit for ``jobs`` sweep jobs (an array when more than
    one), given ``launcher``, a composed ``hydra.launcher`` config of the SLURM kind (``hydra/launcher=slurm``).

    The launcher is instantiated from the config and its parameters go to submitit's ``SlurmExecutor`` as the
    launcher passes them (shared keys translated by the executor, the others as they are); the executor writes the
    text it would submit. Nothing is submitted, and no ``srun`` is needed.
    """
    from hydra.utils import instantiate
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import SlurmExecutor

    class RenderingExecutor(SlurmExecutor):
        """submitit's SLURM executor on a machine without SLURM: it only renders."""

        @classmethod
        def affinity(cls) -> int:
            return 1

    from rawsr.config import ConfigError

    built = instantiate(launcher)
    if not isinstance(built, SlurmLauncher):
        raise ConfigError(f"hydra.launcher builds {type(built).__name__}, not SLURM's (give hydra/launcher=slurm)")
    params = {k: v for k, v in built.params.items() if v is not None}
    folder = params.pop("submitit_folder")
    executor = RenderingExecutor(folder, max_num_timeout=params.pop("max_num_timeout", 0))
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    converted = executor._convert_parameters({k: v for k, v in params.items() if k in shared})
    executor.update_parameters(**converted, **{k: v for k, v in params.items() if k not in shared})
    if jobs > 1:
        executor.parameters["map_count"] = jobs  # what the executor sets for an array
    return executor._make_submission_file_text(executor._submitit_command_str, "render")


def render_sbatch(overrides: Sequence[str] = ()) -> str:
    """The batch script of ``python -m rawsr.train -m hydra/launcher=slurm OVERRIDES`` (``hydra/launcher=slurm``
    is added when no launcher is given); a sweep (``key=a,b``) renders as the array of its jobs."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from rawsr.config import config_dir

    overrides = list(overrides)
    if not any(o.split("=", 1)[0].lstrip("+~") == "hydra/launcher" for o in overrides):
        overrides.insert(0, "hydra/launcher=slurm")
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [
        [f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [o.input_line]
        for o in parsed
    ]
    jobs = [list(job) for job in itertools.product(*choices)]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=jobs[0], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    return sbatch_script(cfg.hydra.launcher, jobs=len(jobs))
