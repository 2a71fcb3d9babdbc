"""Multi-process training started from ``python -m rawsr.train``, also inside Hydra sweeps, with validation that
sees each image exactly once."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import lightning as L
import torch
from torch.utils.data import DistributedSampler

from rawsr.config import ConfigError
from rawsr.training.lightning_api import ScriptLauncher, ScriptLauncherDDPStrategy, rebuild_dataloader

#: Command-line options that say where the configs are; the worker processes need them too.
_CONFIG_OPTIONS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
#: Hydra overrides that belong to the sweep, not to the job a worker process joins.
_SWEEP_KEYS = ("hydra.mode", "hydra.run", "hydra.sweep", "hydra.sweeper", "hydra/sweeper", "hydra.launcher")
_SWEEP_KEYS += ("hydra/launcher", "hydra.output_subdir", "hydra.job.name")
#: Environment variables the DDP launcher sets in the launching process.
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _hydra_value(value: Any) -> str:
    """Format ``value`` for a Hydra command-line override (quoted unless it is a plain word or path)."""
    text = str(value)
    if re.fullmatch(r"[\w./:@+-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _config_location_args(argv: list[str]) -> list[str]:
    """The config-location options of a command line (``--config-dir DIR``, ``-cn=NAME``, ...), in order."""
    kept, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in _CONFIG_OPTIONS and i + 1 < len(argv):
            kept += argv[i : i + 2]
            i += 1
        elif arg.split("=", 1)[0] in _CONFIG_OPTIONS and "=" in arg:
            kept.append(arg)
        i += 1
    return kept


def hydra_child_command(pinned: Mapping[str, Any] | None = None) -> tuple[list[str], str]:
    """The command (and working directory) that starts one more process of the current Hydra job.

    It is a single run (never a sweep) of the same program with the job's own overrides, writing into the job's
    folder (``hydra.run.dir``) without a second ``.hydra`` folder, plus ``pinned`` overrides (values such as a
    timestamped ``run_name`` that the workers must share with the launching process). Lightning's own command
    repeats the whole command line, so a worker of a multirun job would start the sweep again in new folders.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    import __main__

    hydra_cfg = HydraConfig.get()
    if getattr(__main__, "__spec__", None) is None:
        command = [sys.executable, os.path.abspath(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command += _config_location_args(sys.argv[1:])
    task = list(hydra_cfg.overrides.task)
    command += task
    given = {_override_key(o) for o in task}
    command += [f"{key}={_hydra_value(value)}" for key, value in (pinned or {}).items() if key not in given]
    command += [o for o in hydra_cfg.overrides.hydra if not _override_key(o).startswith(_SWEEP_KEYS)]
    command += [f"hydra.run.dir={_hydra_value(hydra_cfg.runtime.output_dir)}", "hydra.output_subdir=null"]
    command += ["hydra.mode=RUN"]
    return command, get_original_cwd()


class _HydraJobLauncher(ScriptLauncher):
    """Lightning's script launcher, with worker commands from :func:`hydra_child_command` when Hydra runs the job,
    and a :meth:`release` that waits for the workers and undoes the launcher's environment variables."""

    def __init__(self, *args: Any, pinned: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pinned = dict(pinned or {})
        self._saved_env: dict[str, str | None] | None = None

    def start_workers(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        self._saved_env = {key: os.environ.get(key) for key in _DDP_ENV}
        if not HydraConfig.initialized():
            super().start_workers()
            return
        self.check_can_start_workers()
        os.environ.update(self.worker_environment())
        command, cwd = hydra_child_command(self.pinned)
        self.workers = [
            subprocess.Popen(command, env={**os.environ, "LOCAL_RANK": str(rank)}, cwd=cwd)
            for rank in range(1, self.processes_per_node)
        ]

    def release(self, timeout: float = 120.0) -> None:
        for proc in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        if self._saved_env is not None:
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._saved_env = None


class HydraDDPStrategy(ScriptLauncherDDPStrategy):
    """Lightning's DDP (one process per device) for ``python -m rawsr.train``.

    - Worker processes run the launching process's Hydra job as a single run in the job's own folder (see
      :func:`hydra_child_command`): a multirun sweep with DDP does not start the sweep again per worker.
    - Validation and test give each image to exactly one rank (Lightning's distributed sampler repeats images
      to even out the ranks, which biases the averaged metrics when the count is not a multiple of the ranks).

    Args:
        pinned: overrides passed to the worker processes, resolved in the launching process (e.g. ``run_name``).
        unrepeated_eval: use the non-repeating sampler for validation and test.
        timeout_s: seconds a collective (and the start of the process group) waits for the other ranks before it
            fails: what bounds a run whose peer hangs without dying (a dead peer fails the collectives at once).
        **kwargs: :class:`lightning.pytorch.strategies.DDPStrategy` arguments (``process_group_backend``,
            ``find_unused_parameters``, ...).
    """

    def __init__(
        self,
        pinned: Mapping[str, Any] | None = None,
        unrepeated_eval: bool = True,
        timeout_s: float = 1800.0,
        **kwargs: Any,
    ) -> None:
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
            raise ConfigError(f"config key 'trainer.strategy.timeout_s': expected a positive number, got {timeout_s!r}")
        super().__init__(timeout=timedelta(seconds=timeout_s), **kwargs)
        self.pinned = {str(k): v for k, v in (pinned or {}).items()}
        self.unrepeated_eval = unrepeated_eval

    def script_launcher(self) -> ScriptLauncher:
        return _HydraJobLauncher(self.cluster_environment, self.num_processes, self.num_nodes, pinned=self.pinned)

    def process_dataloader(self, dataloader: object) -> object:
        sampler = getattr(dataloader, "sampler", None)
        if self.unrepeated_eval and type(sampler) is DistributedSampler and not sampler.shuffle:
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            unrepeated = UnrepeatedDistributedSampler(
                sampler.dataset, num_replicas=sampler.num_replicas, rank=sampler.rank, shuffle=False
            )
            dataloader = rebuild_dataloader(dataloader, unrepeated)
        return super().process_dataloader(dataloader)


def release_distributed(trainer: L.Trainer) -> None:
    """End the job's process group and undo the launcher's environment, so that the next job of a sweep in this
    process starts its own group and workers. Call it on every rank once the job's last trainer call returned."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    launcher = getattr(trainer.strategy, "launcher", None)
    if isinstance(launcher, _HydraJobLauncher):
        launcher.release()
