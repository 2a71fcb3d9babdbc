"""``python -m rawsr.train``: compose the configs, build data, model and trainer, fit, and report.

With no overrides it trains a narrow network on the embedded demo data on CPU in about two minutes.
``python -m rawsr.train experiment=x4_blind data.root=/path/to/Blind_x4`` runs the paper's recipe.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from rawsr.cli import check_data_paths, launch, run_entry
from rawsr.config import ConfigError, config_dir, instantiate, require_positive_int, require_scale

log = logging.getLogger("rawsr.train")


def set_threads(threads: int | None) -> None:
    """Set torch's CPU threads for this process (``threads`` config key); ``None`` keeps torch's default."""
    if threads is None:
        return
    require_positive_int(threads, "threads")
    import torch

    torch.set_num_threads(threads)


def resolve_checkpoint(cfg: DictConfig) -> str | None:
    """Return the checkpoint to resume from, or ``None`` for a fresh run; refuse to overwrite an existing run."""
    ckpt_dir = Path(cfg.paths.ckpt_dir)
    last = ckpt_dir / "last.ckpt"
    if cfg.resume:
        if not last.is_file():
            raise ConfigError(f"resume=true, but run '{cfg.run_name}' has no checkpoint at {last}")
        return str(last)
    if last.is_file():
        raise ConfigError(
            f"run '{cfg.run_name}' already has checkpoints in {ckpt_dir}: continue it with resume=true, "
            "or start another with run_name=NAME"
        )
    return None


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


def instantiate_all(cfg: DictConfig) -> tuple[Any, Any, Any]:
    """Build ``(datamodule, model, trainer)`` from a composed config."""
    import lightning as L

    check_scales(cfg)
    degradation = instantiate(cfg.degradation) if cfg.get("degradation") else None
    datamodule = instantiate(cfg.data, degradation=degradation)
    model = instantiate(cfg.model)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
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
    check_scales(cfg)
    check_data_paths(cfg.data)
    ckpt_path = resolve_checkpoint(cfg)
    set_threads(cfg.get("threads"))

    import lightning as L

    from rawsr.training import release_distributed
    from rawsr.training.loggers import finish_loggers, log_run_config

    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = instantiate_all(cfg)
    failed = True
    try:  # each job of a sweep ends its W&B run and its process group, whatever happens
        log_run_config(trainer.loggers, cfg)
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
        log.info("run folder: %s", cfg.paths.output_dir)
        if checkpoint is not None:
            log.info("checkpoints: %s (best: %s)", checkpoint.dirpath, checkpoint.best_model_path or "none")
        for logger in trainer.loggers:
            log.info("%s metrics: %s", type(logger).__name__, logger.log_dir or logger.save_dir)
        summary = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("val/"))
        log.info("final validation: %s", summary or "none")
    return metrics.get(cfg.optimized_metric)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    result: dict[str, float | None] = {}

    def work() -> None:
        result["metric"] = train(cfg)

    status = run_entry(work, log)
    if status:
        raise SystemExit(status)
    return result["metric"]


def cli_main() -> None:
    """``python -m rawsr.train`` and ``rawsr-train``: ``--help`` lists the config groups and keys of ``train.yaml``."""
    launch("train", main)


if __name__ == "__main__":
    cli_main()
