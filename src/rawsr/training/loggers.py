"""Experiment loggers: Weights & Biases that works with no network or API key, keeps one W&B run per run folder
across resumes, and files each run under its experiment (``group``), ablation (``job_type``) and tags, so that one
dashboard compares the experiments and their ablations. CSV and TensorBoard are Lightning's own loggers."""

from __future__ import annotations

import csv
import logging
import netrc
import os
import secrets
import string
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from rawsr.config import require_choice
from rawsr.training.lightning_api import started_experiment

log = logging.getLogger(__name__)

WANDB_MODES = ("auto", "online", "offline", "disabled")
#: File in the run folder that keeps the W&B run id, so that ``resume=true`` continues the same W&B run.
RUN_ID_FILE = "wandb-run-id"


def wandb_credentials() -> str | None:
    """Where a W&B API key is configured (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE`` or the netrc file
    named by ``NETRC``, default ``~/.netrc``, with an entry for the W&B host), or ``None``."""
    for variable in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        if os.environ.get(variable):
            return variable
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc
    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return str(path) if entry and entry[2] else None


def resolve_wandb_mode(mode: str = "auto") -> tuple[str, str]:
    """Return ``(mode, reason)`` with mode ``online``, ``offline`` or ``disabled``.

    ``auto`` follows ``WANDB_MODE`` when it is set, else goes online when an API key is configured (see
    :func:`wandb_credentials`) and offline when none is: W&B itself would stop with an error instead.
    """
    require_choice(mode, "logger.wandb.mode", WANDB_MODES)
    if mode != "auto":
        return mode, f"logger.wandb.mode={mode}"
    variable = os.environ.get("WANDB_MODE")
    if variable:
        return {"dryrun": "offline", "run": "online"}.get(variable, variable), f"WANDB_MODE={variable}"
    source = wandb_credentials()
    if source:
        return "online", f"W&B API key from {source}"
    return "offline", "no W&B API key is configured (WANDB_API_KEY, ~/.netrc)"


def run_id(folder: str | Path) -> str:
    """The W&B run id kept in ``folder/wandb-run-id``; rank 0 creates it (and the file) on the folder's first run."""
    path = Path(folder) / RUN_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    # W&B's id alphabet, from the OS's entropy: draws nothing from the seeded random streams
    new = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    if rank_zero_only.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new + "\n")
    return new


class RunFolderWandbLogger(WandbLogger):
    """:class:`WandbLogger` that, when its run starts offline, logs once where the run is and how to upload it."""

    def __init__(self, *args: Any, offline_reason: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._offline_reason = offline_reason

    @property
    def experiment(self) -> Any:
        run = super().experiment
        if self._offline_reason is not None and rank_zero_only.rank == 0:
            folder = run.settings.sync_dir
            log.warning(
                "%s: W&B logs offline to %s. Upload it later with:\n    wandb sync %s",
                self._offline_reason,
                folder,
                folder,
            )
            self._offline_reason = None
        return run


def _job_number() -> int | None:
    """The job's number inside a Hydra multirun sweep, else ``None``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return int(hydra_cfg.job.num) if hydra_cfg.mode == RunMode.MULTIRUN else None


def wandb_logger(
    save_dir: str,
    project: str = "rawsr",
    group: str | None = None,
    job_type: str | None = None,
    tags: Sequence[str] = (),
    ablation: str | None = None,
    name: str | None = None,
    mode: str = "auto",
    log_model: bool | str = False,
    entity: str | None = None,
    notes: str | None = None,
) -> WandbLogger:
    """A W&B logger for the run folder ``save_dir`` (config ``logger=wandb``).

    Args:
        save_dir: the run folder; W&B writes under ``save_dir/wandb`` and the run id is kept in
            ``save_dir/wandb-run-id``, so that a resumed run logs into the same W&B run (``resume="allow"``).
        project, entity, notes: W&B's.
        group: runs compared together (the experiment's ``run_name``).
        job_type: the ablation (``ablation_name``), to split a group by ablation.
        tags: the run's tags; ``ablation`` is added to them.
        name: display name; default ``<group>-<job_type>``, plus ``-<job number>`` inside a multirun sweep.
        mode: ``auto`` (see :func:`resolve_wandb_mode`), ``online``, ``offline`` or ``disabled``.
        log_model: upload checkpoints as artifacts (online only: switched off, with a warning, when offline).
    """
    mode, reason = resolve_wandb_mode(mode)
    if mode != "online" and log_model:
        rank_zero_only(log.warning)(
            "logger.wandb.log_model: checkpoints are not uploaded by a W&B run in %s mode", mode
        )
        log_model = False
    all_tags = list(dict.fromkeys([*(str(t) for t in tags), *([str(ablation)] if ablation else [])]))
    if name is None:
        name = "-".join(str(part) for part in (group, job_type, _job_number()) if part is not None) or None
    return RunFolderWandbLogger(
        name=name,
        save_dir=save_dir,
        id=run_id(save_dir),
        project=project,
        log_model=log_model,
        offline_reason=reason if mode == "offline" else None,
        mode=mode,
        group=group,
        job_type=job_type,
        tags=all_tags,
        entity=entity,
        notes=notes,
    )


def log_run_config(loggers: Iterable[Logger], cfg: DictConfig) -> None:
    """Log the run's whole resolved config (``OmegaConf.to_container(cfg, resolve=True)``) to every logger."""
    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(config)


class RunConfigLogger(Callback):
    """Logs the run's config (:func:`log_run_config`) when fitting starts, once data and model are set up: a start
    that fails on them leaves no logger output (``csv/``, ``wandb/``) in the run folder."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        log_run_config(trainer.loggers, self.cfg)


def finish_loggers(loggers: Iterable[Logger], failed: bool = False) -> None:
    """Close the W&B run of this job, so that the next job of a sweep starts its own run."""
    if not any(isinstance(logger, WandbLogger) for logger in loggers):
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSV logger, except that a run resumed into its folder appends to ``metrics.csv``.

    Lightning's writer deletes an existing ``metrics.csv`` when it starts, so a resumed run would lose the rows of
    its first epochs. This logger puts them back, with their header, before the resumed run logs anything.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        started = started_experiment(self)
        if started is not None:
            return started
        path = Path(self.log_dir) / "metrics.csv"
        header, rows = [], []
        if path.is_file():
            with open(path, newline="") as handle:
                reader = csv.DictReader(handle)
                header, rows = list(reader.fieldnames or []), list(reader)
        experiment = super().experiment  # removes metrics.csv
        if header:
            with open(path, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=header)
                writer.writeheader()
                writer.writerows(rows)
            experiment.metrics_keys = sorted(header)
        return experiment
