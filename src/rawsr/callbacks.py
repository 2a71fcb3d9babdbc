"""Lightning plug-ins for training at scale.

- :class:`AtomicCheckpoints`: every checkpoint is written whole or not at all (a kill never truncates ``last.ckpt``).
- :class:`ReproducibleResume`: checkpoints carry every rank's random states, and a resumed run continues the
  random streams and the data order exactly where the interrupted one stopped, also in the middle of an epoch.
- :class:`ImagePanels`: LR reference upsampled / output / ground truth of fixed validation images, at every
  validation, for W&B and TensorBoard.
- :func:`progress_bar`: a rich progress bar on a terminal, a plain one in log files.
- :class:`HydraDDPStrategy` and :func:`release_distributed`: multi-process training started from
  ``python -m rawsr.train``, also inside Hydra sweeps, with validation that sees each image exactly once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ProgressBar, RichProgressBar, TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DistributedSampler

from rawsr.config import require, require_positive_int
from rawsr.imageio import atomic_write

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------------
# Checkpoints written whole or not at all


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside its destination, syncs it to disk and renames it over the
    destination (:func:`rawsr.imageio.atomic_write`), so that readers and ``resume=true`` see the previous file or
    the new one, never a truncated one.

    Lightning's own writer stages the bytes in the system temporary folder and moves them: when that folder is on
    another file system than the run (a local ``/tmp``, runs on a network share), the move is a copy into the
    destination that a kill can cut short. Remote URLs (``s3://`` ...) are left to Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.part"):  # left by a writer that was killed
            stale.unlink(missing_ok=True)
        atomic_write(path, lambda file: torch.save(checkpoint, file))


class AtomicCheckpoints(Callback):
    """Installs :class:`AtomicCheckpointIO` as the trainer's checkpoint writer (unless one was configured)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        io = trainer.strategy.checkpoint_io
        if type(io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        elif not isinstance(io, AtomicCheckpointIO):
            rank_zero_warn(
                f"callbacks.atomic_checkpoints: keeping the configured checkpoint writer {type(io).__name__}"
            )


# --------------------------------------------------------------------------------------------------------------------
# Random states in checkpoints, and an exact resume

RNG_KEY = "rng_states"


def rng_states() -> dict[str, torch.Tensor]:
    """This process's global random states as tensors, so that ``torch.load(weights_only=True)`` reads them.

    Returns ``torch (N,) uint8``; ``python (626,) int64`` (version, then the Mersenne-Twister state) and
    ``python_gauss (1,) float64`` (NaN when unset); ``numpy (626,) int64`` (624 key words, position, has_gauss)
    and ``numpy_gauss (1,) float64``; and ``cuda (M,) uint8`` for the current device once CUDA is initialised.
    """
    version, words, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global state is the point)
    require(name == "MT19937", "numpy random state", "the MT19937 generator", name)
    states = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor((version, *words), dtype=torch.int64),
        "python_gauss": torch.tensor([math.nan if gauss is None else gauss], dtype=torch.float64),
        "numpy": torch.from_numpy(np.concatenate([keys.astype(np.int64), [position, has_gauss]])),
        "numpy_gauss": torch.tensor([cached], dtype=torch.float64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: Mapping[str, torch.Tensor]) -> None:
    """Restore the global random states captured by :func:`rng_states` (one process's entries, not stacked)."""
    torch.set_rng_state(states["torch"].cpu())
    python = states["python"].tolist()
    gauss = float(states["python_gauss"][0])
    random.setstate((int(python[0]), tuple(python[1:]), None if math.isnan(gauss) else gauss))
    words = states["numpy"].numpy()
    np.random.set_state(  # noqa: NPY002
        ("MT19937", words[:624].astype(np.uint32), int(words[624]), int(words[625]), float(states["numpy_gauss"][0]))
    )
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"].cpu())


def _gather_states(trainer: L.Trainer, states: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stack every rank's states: ``(world_size, ...)`` per entry (a collective: call it on all ranks)."""
    if trainer.world_size == 1:
        return {key: value[None] for key, value in states.items()}
    device = trainer.strategy.root_device
    return {key: trainer.strategy.all_gather(value.to(device)).cpu() for key, value in states.items()}


def _seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) without touching ``PL_GLOBAL_SEED``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


class ReproducibleResume(Callback):
    """Makes a resumed run continue the random streams and the data order exactly where the checkpoint left them.

    Lightning restores weights, optimiser, LR schedule and loop counters. It restores neither the global random
    states (torch, CUDA, Python ``random``, NumPy), which draw the training crops and degradations, nor the position
    in the epoch's data stream: after a mid-epoch resume a fresh DataLoader iterator draws a new sampler order and
    starts the epoch over. This callback

    - stores every rank's random states in each checkpoint (``checkpoint["rng_states"]``: ``current``, the states
      the epoch started with in ``epoch_start``, and ``epoch``), as tensors;
    - starts each epoch's data iterator from the states recorded at the epoch's start, and puts the training states
      back after every validation, so that validation never shifts the training streams;
    - on a mid-epoch resume, restores the epoch's starting states, re-creates the epoch's iterator and replays the
      batches already trained on (loaded and simulated, not passed through the network), then restores the
      checkpoint's states: the next batch is the one the interrupted run would have drawn, bit for bit on CPU.
    - with ``seed_per_rank``, seeds rank ``r > 0`` of a multi-process run with ``seed + r``, so that the ranks draw
      different crops and degradations (rank 0 keeps the single-process streams).

    The replay costs one data pass over the epoch's finished part. It is exact when the training step draws no random
    numbers (true for rawSR: no dropout) and with ``data.num_workers=0`` or workers that are not persistent across
    epochs (persistent workers keep random states that no checkpoint holds). ``replay=false`` skips it: the resumed
    epoch then sees other samples, as with plain Lightning.
    """

    def __init__(self, replay: bool = True, seed_per_rank: bool = True) -> None:
        require(isinstance(replay, bool), "callbacks.reproducible_resume.replay", "true or false", replay)
        require(
            isinstance(seed_per_rank, bool),
            "callbacks.reproducible_resume.seed_per_rank",
            "true or false",
            seed_per_rank,
        )
        self.replay, self.seed_per_rank = replay, seed_per_rank
        self._epoch_start: dict[str, torch.Tensor] | None = None
        self._after_batch: dict[str, torch.Tensor] | None = None
        self._loaded: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        seed = os.environ.get("PL_GLOBAL_SEED")
        if stage == "fit" and self.seed_per_rank and trainer.global_rank > 0 and seed is not None:
            _seed_all(int(seed) + trainer.global_rank)

    # -- during training ---------------------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = rng_states()
        # The epoch's iterator must be created from these states. Lightning re-creates it right after this hook in
        # later epochs of an uninterrupted run; at the first epoch of a fit (fresh or resumed) it already exists.
        fit_loop = trainer.fit_loop
        recreated_later = trainer.current_epoch > 0 and not fit_loop.is_resuming and not fit_loop.epoch_loop.restarting
        if not recreated_later and fit_loop._data_fetcher is not None:
            iter(fit_loop._data_fetcher)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._after_batch = rng_states()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking and self._after_batch is not None:
            set_rng_states(self._after_batch)

    # -- checkpoints -------------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        states: dict[str, Any] = {"current": _gather_states(trainer, rng_states())}
        if self._epoch_start is not None:
            states["epoch_start"] = _gather_states(trainer, self._epoch_start)
            states["epoch"] = trainer.current_epoch
        checkpoint[RNG_KEY] = states

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        states = checkpoint.get(RNG_KEY)
        if states is None:
            rank_zero_warn("the checkpoint holds no random states: the resumed run draws other crops and degradations")
            return
        saved = int(states["current"]["torch"].shape[0])
        if saved != trainer.world_size:
            rank_zero_warn(
                f"the checkpoint was written by {saved} process(es), this run has {trainer.world_size}: "
                "the random streams are not continued"
            )
            return
        rank = trainer.global_rank
        self._loaded = {"current": {key: value[rank] for key, value in states["current"].items()}}
        if "epoch_start" in states:
            self._loaded["epoch_start"] = {key: value[rank] for key, value in states["epoch_start"].items()}
            self._loaded["epoch"] = int(states["epoch"])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loaded, self._loaded = self._loaded, None
        if loaded is None:
            return
        fit_loop = trainer.fit_loop
        done = fit_loop.epoch_loop.batch_progress.current.processed
        if fit_loop.restarted_mid_epoch and 0 < done < trainer.num_training_batches:
            from lightning.pytorch.loops.fetchers import _DataLoaderIterDataFetcher

            replayable = not isinstance(fit_loop._data_fetcher, _DataLoaderIterDataFetcher)  # not dataloader_iter steps
            if self.replay and replayable and loaded.get("epoch") == trainer.current_epoch:
                self._epoch_start = loaded["epoch_start"]
                set_rng_states(self._epoch_start)
                self._replay(trainer, done)
            else:
                rank_zero_warn("resuming mid-epoch without a replay: the rest of the epoch sees other samples")
        set_rng_states(loaded["current"])

    @staticmethod
    def _replay(trainer: L.Trainer, batches: int) -> None:
        """Re-create the epoch's data iterator and pass ``batches`` batches through the same steps as training
        does before the network (fetch, device transfer, simulation), so that the iterator and the random states
        stand where the interrupted run left them."""
        from lightning.fabric.utilities.data import _set_sampler_epoch

        fit_loop = trainer.fit_loop
        fetcher = fit_loop._data_fetcher
        for loader in fit_loop._combined_loader.flattened:
            _set_sampler_epoch(loader, fit_loop.epoch_progress.current.processed)
        iter(fetcher)
        module = trainer.lightning_module
        for _ in range(batches):
            batch, _, _ = next(fetcher)
            batch = trainer.precision_plugin.convert_input(batch)
            batch = module._on_before_batch_transfer(batch, dataloader_idx=0)
            trainer.strategy.batch_to_device(batch, dataloader_idx=0)
        fetcher.fetched -= batches  # Lightning adds the finished batches itself when the epoch loop resumes
        log.info("replayed %d batches of epoch %d to continue its data stream", batches, trainer.current_epoch)


# --------------------------------------------------------------------------------------------------------------------
# Image panels

PANEL_CAPTIONS = ("LR reference (bicubic)", "output", "ground truth")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` floats in [0, 1] -> the same shape in uint8 on the CPU (rounded, clipped)."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


class ImagePanels(Callback):
    """At every validation, logs a panel per validation image with index below ``num_images``: the LR reference
    upsampled bicubically, the network's output and the ground truth, each ``(3, sH, sW)``.

    W&B gets the three images under ``val/panel/<index>`` with captions; TensorBoard gets them side by side. Other
    loggers get nothing. With several processes the panels are gathered on rank 0, which logs them.
    """

    def __init__(self, num_images: int = 4) -> None:
        require_positive_int(num_images, "callbacks.image_panels.num_images")
        self.num_images = num_images
        self._panels: dict[int, torch.Tensor] = {}

    @staticmethod
    def _image_loggers(trainer: L.Trainer) -> list[Any]:
        from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

        return [lg for lg in trainer.loggers if isinstance(lg, (WandbLogger, TensorBoardLogger))]

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._panels = {}

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if trainer.sanity_checking or not self._image_loggers(trainer):
            return
        n = batch["hr_srgb"].shape[0]
        index = batch.get("index")
        indices = index.tolist() if torch.is_tensor(index) else list(range(batch_idx * n, (batch_idx + 1) * n))
        wanted = [i for i, idx in enumerate(indices) if idx < self.num_images]
        if not wanted:
            return
        prediction = getattr(pl_module, "last_prediction", None)
        if prediction is None or prediction.shape[0] != n:
            prediction = pl_module.super_resolve(batch)
        for i in wanted:
            reference = pl_module.bicubic(batch["lr_ref"][i : i + 1])[0]
            panel = torch.stack([reference, prediction[i].float(), batch["hr_srgb"][i].float()])
            self._panels[int(indices[i])] = to_uint8(panel)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._image_loggers(trainer):
            return
        panels = dict(self._panels)
        if torch.distributed.is_available() and torch.distributed.is_initialized() and trainer.world_size > 1:
            gathered: list[dict[int, torch.Tensor]] = [{} for _ in range(trainer.world_size)]
            torch.distributed.all_gather_object(gathered, panels)
            panels = {k: v for part in gathered for k, v in part.items()}
        self._panels = {}
        if not trainer.is_global_zero:
            return
        from lightning.pytorch.loggers import WandbLogger

        step = trainer.global_step
        for logger in self._image_loggers(trainer):
            if isinstance(logger, WandbLogger):  # one history row for all panels
                import wandb

                logger.log_metrics(
                    {
                        f"val/panel/{index}": [
                            wandb.Image(image.permute(1, 2, 0).numpy(), caption=caption)
                            for image, caption in zip(panel, PANEL_CAPTIONS, strict=True)
                        ]
                        for index, panel in sorted(panels.items())
                    },
                    step=step,
                )
            else:
                for index, panel in sorted(panels.items()):
                    logger.experiment.add_image(f"val/panel/{index}", torch.cat(list(panel), dim=-1), step)


# --------------------------------------------------------------------------------------------------------------------
# Progress bar


def progress_bar(refresh_rate: int = 1, file_refresh_rate: int = 50, stream: Any = None) -> ProgressBar:
    """A :class:`RichProgressBar` when ``stream`` (default stdout) is a terminal, else a :class:`TQDMProgressBar`
    that refreshes every ``file_refresh_rate`` steps, which keeps log files (SLURM, CI) readable."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        return RichProgressBar(refresh_rate=refresh_rate)
    return TQDMProgressBar(refresh_rate=file_refresh_rate)


# --------------------------------------------------------------------------------------------------------------------
# DDP under Hydra

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


class _HydraJobLauncher(_SubprocessScriptLauncher):
    """Lightning's script launcher, with worker commands from :func:`hydra_child_command` when Hydra runs the job,
    and a :meth:`release` that waits for the workers and undoes the launcher's environment variables."""

    def __init__(self, *args: Any, pinned: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pinned = dict(pinned or {})
        self._saved_env: dict[str, str | None] | None = None

    def _call_children_scripts(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        self._saved_env = {key: os.environ.get(key) for key in _DDP_ENV}
        if not HydraConfig.initialized():
            super()._call_children_scripts()
            return
        self._check_can_spawn_children()
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = str(env.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        command, cwd = hydra_child_command(self.pinned)
        self.procs = [
            subprocess.Popen(command, env={**os.environ, "LOCAL_RANK": str(rank)}, cwd=cwd)
            for rank in range(1, self.num_processes)
        ]

    def release(self, timeout: float = 120.0) -> None:
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        if self._saved_env is not None:
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._saved_env = None


class HydraDDPStrategy(DDPStrategy):
    """Lightning's DDP (one process per device) for ``python -m rawsr.train``.

    - Worker processes run the launching process's Hydra job as a single run in the job's own folder (see
      :func:`hydra_child_command`): a multirun sweep with DDP does not start the sweep again per worker.
    - Validation and test give each image to exactly one rank (Lightning's distributed sampler repeats images
      to even out the ranks, which biases the averaged metrics when the count is not a multiple of the ranks).

    Args:
        pinned: overrides passed to the worker processes, resolved in the launching process (e.g. ``run_name``).
        unrepeated_eval: use the non-repeating sampler for validation and test.
        **kwargs: :class:`lightning.pytorch.strategies.DDPStrategy` arguments (``process_group_backend``,
            ``find_unused_parameters``, ...).
    """

    def __init__(self, pinned: Mapping[str, Any] | None = None, unrepeated_eval: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pinned = {str(k): v for k, v in (pinned or {}).items()}
        self.unrepeated_eval = unrepeated_eval

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            self._launcher = _HydraJobLauncher(
                self.cluster_environment, self.num_processes, self.num_nodes, pinned=self.pinned
            )

    def process_dataloader(self, dataloader: object) -> object:
        sampler = getattr(dataloader, "sampler", None)
        if self.unrepeated_eval and type(sampler) is DistributedSampler and not sampler.shuffle:
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
            from lightning.pytorch.utilities.data import _update_dataloader

            unrepeated = UnrepeatedDistributedSampler(
                sampler.dataset, num_replicas=sampler.num_replicas, rank=sampler.rank, shuffle=False
            )
            dataloader = _update_dataloader(dataloader, unrepeated)
        return super().process_dataloader(dataloader)


def release_distributed(trainer: L.Trainer) -> None:
    """End the job's process group and undo the launcher's environment, so that the next job of a sweep in this
    process starts its own group and workers. Call it on every rank once the job's last trainer call returned."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    launcher = getattr(trainer.strategy, "launcher", None)
    if isinstance(launcher, _HydraJobLauncher):
        launcher.release()
