"""Random states in checkpoints, and a resumed run that continues the data stream exactly where it stopped."""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from rawsr.config import require
from rawsr.training.lightning_api import (
    before_batch_transfer,
    next_train_batch,
    restart_train_iterator,
    set_train_sampler_epochs,
    train_fetcher_is_replayable,
    uncount_fetched,
)

log = logging.getLogger(__name__)


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


def _rank_states(stacked: Mapping[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """Rank ``rank``'s entries of states stacked by :func:`_gather_states`, each a copy with its own storage:
    ``torch.set_rng_state`` crashes the process (torch 2.13) on a row view, whose storage starts at another row."""
    return {key: value[rank].clone() for key, value in stacked.items()}


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
        if not recreated_later:
            restart_train_iterator(trainer)

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
        self._loaded = {"current": _rank_states(states["current"], rank)}
        if "epoch_start" in states:
            self._loaded["epoch_start"] = _rank_states(states["epoch_start"], rank)
            self._loaded["epoch"] = int(states["epoch"])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loaded, self._loaded = self._loaded, None
        if loaded is None:
            return
        fit_loop = trainer.fit_loop
        done = fit_loop.epoch_loop.batch_progress.current.processed
        if fit_loop.restarted_mid_epoch and 0 < done < trainer.num_training_batches:
            replayable = train_fetcher_is_replayable(trainer)  # not with dataloader_iter steps
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
        set_train_sampler_epochs(trainer, trainer.fit_loop.epoch_progress.current.processed)
        restart_train_iterator(trainer)
        module = trainer.lightning_module
        for _ in range(batches):
            batch = trainer.precision_plugin.convert_input(next_train_batch(trainer))
            batch = before_batch_transfer(module, batch)
            trainer.strategy.batch_to_device(batch, dataloader_idx=0)
        uncount_fetched(trainer, batches)  # Lightning adds the finished batches itself when the epoch loop resumes
        log.info("replayed %d batches of epoch %d to continue its data stream", batches, trainer.current_epoch)
