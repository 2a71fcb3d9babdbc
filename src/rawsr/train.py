"""``python -m rawsr.train``: compose the configs, build data, model and trainer, fit, and report.

With no overrides it trains a narrow network on the embedded demo data on CPU in about two minutes.
``python -m rawsr.train experiment=x4_blind data.root=/path/to/Blind_x4`` runs the paper's recipe.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from rawsr.cli import (
    EXIT_USAGE,
    check_data_paths,
    launch,
    move_file_logs,
    remove_unused_run_folder,
    resolve_threads,
    run_entry,
    set_omp_wait_policy,
    shown_path,
    usable_cpus,
)
from rawsr.config import ConfigError, config_dir, instantiate, require_scale

log = logging.getLogger("rawsr.train")


def set_threads(threads: Any) -> int | None:
    """Set torch's CPU threads for this process (``threads`` config key: a count, ``auto`` for the CPUs idle when the
    run starts, :func:`rawsr.cli.resolve_threads`); ``None`` keeps torch's default. Returns the count set."""
    count = resolve_threads(threads, "threads")
    if count is None:
        return None
    import torch

    torch.set_num_threads(count)
    if threads == "auto":
        log.info("threads=auto: %d torch thread(s) (%d usable CPUs)", count, usable_cpus())
    return count


#: Where a run folder keeps the state that ``resume`` continues.
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def run_name_given() -> bool:
    """Whether ``run_name`` was given on the command line (not left to the config's default)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    return any(o.split("=", 1)[0].lstrip("+~") == "run_name" for o in HydraConfig.get().overrides.task)


def saved_experiment(folder: Path) -> str | None:
    """The ``experiment_name`` in the config Hydra saved in ``folder/.hydra/config.yaml``, or ``None``."""
    try:
        config = OmegaConf.load(folder / ".hydra" / "config.yaml")
        value = OmegaConf.select(config, "experiment_name", default=None, throw_on_resolution_failure=False)
    except Exception:  # noqa: BLE001 (any unreadable file is a folder that is not a run)
        return None
    return None if value is None else str(value)


def newest_run(runs: Path, experiment: str, exclude: Path) -> Path | None:
    """The run folder under ``runs`` of ``experiment`` (its saved config) whose ``checkpoints/last.ckpt`` was written
    last, other than ``exclude``; ``None`` when there is none."""
    if not runs.is_dir():
        return None
    found = [
        d
        for d in runs.iterdir()
        if d.absolute() != exclude.absolute() and (d / LAST_CHECKPOINT).is_file() and saved_experiment(d) == experiment
    ]
    return max(found, key=lambda d: (d / LAST_CHECKPOINT).stat().st_mtime, default=None)


def resume_path(resume: Any, here: Path) -> tuple[Path, Path]:
    """``(run folder, checkpoint)`` named by ``resume=PATH``: a run folder (its ``checkpoints/last.ckpt``) or a
    checkpoint file (in its run folder when it lies in one's ``checkpoints/``, else in this start's folder ``here``)."""
    path = Path(str(resume))
    if path.is_dir():
        if not (path / LAST_CHECKPOINT).is_file():
            raise ConfigError(f"config key 'resume': the run folder {path} holds no {LAST_CHECKPOINT}")
        return path, path / LAST_CHECKPOINT
    if path.is_file():
        return (path.parent.parent if path.parent.name == "checkpoints" else here), path
    raise ConfigError(
        f"config key 'resume': expected true, false, a run folder or a checkpoint file; {resume} does not exist"
    )


def resolve_checkpoint(cfg: DictConfig) -> tuple[Path, Path | None]:
    """Return ``(run folder, checkpoint to resume from)``; the checkpoint is ``None`` for a fresh run.

    ``resume=false`` refuses a run folder that already has checkpoints. ``resume=true`` continues this run folder
    when it has ``checkpoints/last.ckpt``; when it has none and ``run_name`` was not given, the newest run of the same
    ``experiment_name`` under ``${paths.log_dir}/${task_name}/runs`` that has one (:func:`newest_run`).
    ``resume=PATH`` continues the run folder or checkpoint file at PATH (:func:`resume_path`).
    """
    here = Path(cfg.paths.output_dir)
    last = here / LAST_CHECKPOINT
    if cfg.resume is None or cfg.resume is False:
        if last.is_file():
            raise ConfigError(
                f"run '{cfg.run_name}' already has checkpoints in {last.parent}: continue it with resume=true, "
                "or start another with run_name=NAME"
            )
        return here, None
    if cfg.resume is not True:
        return resume_path(cfg.resume, here)
    if last.is_file():
        return here, last
    if run_name_given():
        raise ConfigError(f"resume=true, but run '{cfg.run_name}' has no checkpoint at {last}")
    runs = Path(cfg.paths.log_dir) / cfg.task_name / "runs"
    found = newest_run(runs, str(cfg.experiment_name), exclude=here)
    if found is None:
        raise ConfigError(
            f"resume=true: no run of experiment '{cfg.experiment_name}' under {shown_path(runs)} holds "
            f"{LAST_CHECKPOINT}; start a new run without resume, or give resume=PATH (a run folder or a checkpoint)"
        )
    return found, found / LAST_CHECKPOINT


def move_run(cfg: DictConfig, folder: Path) -> None:
    """Make ``folder`` the run's folder (``paths.output_dir`` and what follows it, ``run_name``, the log files), and
    remove the folder this start created for itself."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    here = Path(cfg.paths.output_dir)
    if folder.absolute() == here.absolute():
        return
    if HydraConfig.initialized():
        runtime = HydraConfig.instance().cfg.hydra.runtime
        with read_write(runtime), open_dict(runtime):
            runtime.output_dir = str(folder.absolute())
    with read_write(cfg), open_dict(cfg):
        cfg.run_name = folder.name
        if Path(cfg.paths.output_dir).absolute() != folder.absolute():  # paths.output_dir does not follow Hydra
            cfg.paths.output_dir = str(folder.absolute())
    move_file_logs(here, folder)
    remove_unused_run_folder(here, None)  # the next line names the run folder


def checkpoint_position(path: Path) -> tuple[int, int]:
    """``(global_step, epoch)`` recorded in the Lightning checkpoint at ``path``."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(checkpoint["global_step"]), int(checkpoint["epoch"])
    except Exception as error:  # noqa: BLE001 (any failure means the file cannot be resumed from)
        raise ConfigError(f"config key 'resume': {path} is not a readable Lightning checkpoint ({error})") from error


def check_resumed_average(cfg: DictConfig, path: Path | None) -> None:
    """Refuse to resume, without ``callbacks.ema``, a checkpoint written with it: its ``state_dict`` holds the
    averaged weights, from which training would go on in place of the training weights it keeps beside them."""
    if path is None or (cfg.get("callbacks") or {}).get("ema") is not None:
        return
    import torch

    from rawsr.training.ema import TRAINING_WEIGHTS

    if TRAINING_WEIGHTS in torch.load(path, map_location="cpu", weights_only=True, mmap=True):
        raise ConfigError(
            f"config key 'callbacks.ema': {shown_path(path)} holds a moving average of the weights (it was trained "
            "with callbacks/ema=on); resume it with callbacks/ema=on"
        )


#: The run folders this process has announced (:func:`announce_run`): removing one after a failed start is said.
ANNOUNCED: set[str] = set()


def announce_run(cfg: DictConfig, checkpoint: Path | None) -> str | None:
    """Log the run folder (and, when resuming, the run and its step) before any heavy work; return the checkpoint to
    resume from as a string (``None`` for a fresh run)."""
    ANNOUNCED.add(str(Path(cfg.paths.output_dir).absolute()))
    log.info("run folder: %s", shown_path(cfg.paths.output_dir))
    if checkpoint is None:
        return None
    step, epoch = checkpoint_position(checkpoint)
    log.info("resuming run '%s' from %s (global step %d, epoch %d)", cfg.run_name, shown_path(checkpoint), step, epoch)
    return str(checkpoint)


def check_duration(trainer: DictConfig) -> None:
    """Refuse a training run without end: ``trainer.max_epochs`` -1 or null with neither ``trainer.max_steps`` nor
    ``trainer.max_time`` set (null would let Lightning pick 1000 epochs); with ``max_time`` such a run is legitimate,
    and the log says when it ends."""
    epochs, steps, limit = trainer.get("max_epochs"), trainer.get("max_steps", -1), trainer.get("max_time")
    if trainer.get("fast_dev_run") or epochs not in (None, -1) or steps not in (None, -1):
        return
    if limit is None:
        meaning = "trains without end" if epochs == -1 else "lets Lightning pick 1000 epochs"
        raise ConfigError(
            f"config key 'trainer.max_epochs': {'null' if epochs is None else epochs} {meaning}; give a number of "
            "epochs, or bound the run with +trainer.max_steps=N or +trainer.max_time=DD:HH:MM:SS"
        )
    log.info("trainer.max_epochs=%s: training stops at trainer.max_time=%s", epochs, limit)


#: Config keys that must equal ``data.scale`` (the stock configs interpolate it: ``${data.scale}``).
SCALE_KEYS = ("model.net.scale", "degradation.scale")


def check_scales(cfg: DictConfig) -> int:
    """Return ``data.scale``, the one key that sets the super-resolution factor; refuse a config where another
    scale key (:data:`SCALE_KEYS`) was set to something else."""
    scale = require_scale(cfg.data.scale, "data.scale")
    for key in SCALE_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value != scale:
            raise ConfigError(
                f"config key '{key}': {value} differs from data.scale={scale}; set the scale once, with "
                f"data.scale={value}, and leave {key} to follow it"
            )
    return scale


def build_loggers(cfg: DictConfig) -> list[Any]:
    """The loggers of ``cfg.logger``. An entry without ``_target_`` holds settings that an experiment gives a logger
    the command line left out (``experiment=ablation`` names its W&B run, ``logger=csv`` drops W&B): it builds none.
    """
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None and "_target_" in c]


def instantiate_all(cfg: DictConfig) -> tuple[Any, Any, Any]:
    """Build ``(datamodule, model, trainer)`` from a composed config."""
    import lightning as L

    check_scales(cfg)
    degradation = instantiate(cfg.degradation) if cfg.get("degradation") else None
    datamodule = instantiate(cfg.data, degradation=degradation)
    model = instantiate(cfg.model)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = build_loggers(cfg)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, model, trainer


def save_final_checkpoint(trainer: Any) -> None:
    """Write the state at the end of fitting to ``last.ckpt``.

    Lightning refreshes ``last.ckpt`` after a validation only when that validation also wrote a top-k checkpoint,
    so without this the last file of a run whose final epochs did not improve would hold an older state.
    """
    checkpoint = trainer.checkpoint_callback
    if checkpoint is None or not checkpoint.save_last or not checkpoint.dirpath or trainer.fast_dev_run:
        return
    if trainer.interrupted:
        return
    path = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
    trainer.save_checkpoint(path, weights_only=False)  # the whole state, for resume=true


def train(cfg: DictConfig) -> float | None:
    """Fit the model described by ``cfg``; return the value of ``cfg.optimized_metric`` (for sweepers)."""
    set_omp_wait_policy(cfg.get("omp_wait_policy"))  # before anything loads torch (a resume reads a checkpoint)
    folder, checkpoint = slurm_requeue(cfg) or resolve_checkpoint(cfg)
    move_run(cfg, folder)
    check_duration(cfg.trainer)  # the checks of the config alone fail in one line, before the run is announced
    check_scales(cfg)
    check_data_paths(cfg.data)
    ckpt_path = announce_run(cfg, checkpoint)
    check_resumed_average(cfg, checkpoint)
    set_threads(cfg.get("threads"))

    import lightning as L

    from rawsr.training import release_distributed
    from rawsr.training.console import single_console
    from rawsr.training.loggers import RunConfigLogger, finish_loggers
    from rawsr.training.module import verdict

    single_console()
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = instantiate_all(cfg)
    # The data stream starts from the seed whatever building the model drew from the random generators: runs of
    # different architectures with the same seed see the same crops and degradations (ablations compare seed by seed).
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    failed = True
    try:  # each job of a sweep ends its W&B run and its process group, whatever happens
        trainer.callbacks.append(RunConfigLogger(cfg))
        record_slurm_job(Path(cfg.paths.output_dir))
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        save_final_checkpoint(trainer)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.get("test"):
            trainer.test(model, datamodule=datamodule, ckpt_path="best")
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        failed = False
    finally:
        finish_loggers(trainer.loggers, failed=failed)
        release_distributed(trainer)

    if trainer.is_global_zero:
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None:
            best = shown_path(checkpoint.best_model_path) if checkpoint.best_model_path else "none"
            log.info("checkpoints: %s (best: %s)", shown_path(checkpoint.dirpath), best)
        for logger in trainer.loggers:
            log.info("%s metrics: %s", type(logger).__name__, shown_path(logger.log_dir or logger.save_dir))
        summary = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("val/"))
        log.info("final validation: %s", summary or "none")
        sentence = verdict(metrics)
        if sentence:
            log.info("%s", sentence)
    return metrics.get(cfg.optimized_metric)


# --------------------------------------------------------------------------------------------------------------------
# SLURM: a requeued job continues its run by itself


#: Checkpoints Lightning writes in the run folder on SLURM's early warning (SIGUSR1) before it requeues the job.
HPC_CHECKPOINTS = "hpc_ckpt_*.ckpt"
#: File in the run folder that names the SLURM job that trains it: a start of the same job there is a requeue.
SLURM_JOB_FILE = "slurm-job-id"


def slurm_job_id() -> str | None:
    """The SLURM job of this process (``<array job>_<task>`` for an array task), or ``None`` when it is not a SLURM
    task (Lightning's rule: ``SLURM_NTASKS`` set and a job name other than ``bash`` or ``interactive``)."""
    env = os.environ
    if "SLURM_NTASKS" not in env or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '0')}"
    return env.get("SLURM_JOB_ID")


def slurm_run_folder(cfg: DictConfig, job: str) -> Path:
    """The run folder of SLURM job ``job``: ``runs/slurm-<job>`` for a single run whose ``run_name`` is the default
    timestamp (a requeued job starts at another time), else the folder Hydra made (stable names, sweep jobs)."""
    here = Path(cfg.paths.output_dir)
    timestamped = "${now:" in str(OmegaConf.to_container(cfg, resolve=False).get("run_name", ""))
    if not timestamped or run_name_given() or here.parent.name != "runs":
        return here
    return here.parent / f"slurm-{job}"


def newest_checkpoint(folder: Path) -> Path | None:
    """The furthest (global step, then time written) of the run folder's ``hpc_ckpt_*.ckpt`` and
    ``checkpoints/last.ckpt``, or ``None``."""
    found = [p for p in (*folder.glob(HPC_CHECKPOINTS), folder / LAST_CHECKPOINT) if p.is_file()]
    return max(found, key=lambda p: (checkpoint_position(p), p.stat().st_mtime), default=None)


def slurm_requeue(cfg: DictConfig) -> tuple[Path, Path | None] | None:
    """Under SLURM, move the run into its job's folder (:func:`slurm_run_folder`); when this start is a requeue of
    the job (``SLURM_RESTART_COUNT`` > 0, or the folder was trained by the same job), return ``(folder, its newest
    checkpoint)`` to continue from, whatever ``resume`` says. ``None`` otherwise: the start is resolved as usual."""
    job = slurm_job_id()
    if job is None:
        return None
    folder = slurm_run_folder(cfg, job)
    folder.mkdir(parents=True, exist_ok=True)
    move_run(cfg, folder)
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    job_file = folder / SLURM_JOB_FILE
    same_job = job_file.is_file() and job_file.read_text().strip() == job
    if not (same_job or (restarts.isdigit() and int(restarts) > 0)):
        return None
    log.info("SLURM job %s restarted: continuing its run from its newest checkpoint", job)
    return folder, newest_checkpoint(folder)


def record_slurm_job(folder: Path) -> None:
    """Write the SLURM job's id into the run folder (first task only), so that a requeue finds its run."""
    job = slurm_job_id()
    if job is not None and os.environ.get("SLURM_PROCID", "0") == "0":
        (folder / SLURM_JOB_FILE).write_text(job + "\n")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    result: dict[str, float | None] = {}

    def work() -> None:
        result["metric"] = train(cfg)

    status = run_entry(work, log)
    if status == EXIT_USAGE:  # a failed start leaves nothing behind; a run that had begun keeps its folder
        folder = Path(cfg.paths.output_dir).absolute()
        remove_unused_run_folder(folder, log if str(folder) in ANNOUNCED else None)
    if status:
        raise SystemExit(status)
    return result["metric"]


def cli_main() -> None:
    """``python -m rawsr.train`` and ``rawsr-train``: ``--help`` lists the config groups and keys of ``train.yaml``."""
    launch("train", main)


if __name__ == "__main__":
    cli_main()
