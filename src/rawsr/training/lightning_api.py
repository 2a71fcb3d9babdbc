"""Every use of Lightning's private API in rawsr, behind small named functions and classes.

Lightning offers no public hook for three things rawsr needs: starting the worker processes of a DDP run with another
command (:mod:`rawsr.training.ddp`), replaying the finished part of an epoch's data stream on a mid-epoch resume
(:mod:`rawsr.training.resume`), rebuilding a data loader with another sampler, and taking SLURM's requeue
signal at a step boundary (:mod:`rawsr.training.slurm`). Each function or class below says
which private name it reaches and why. ``tests/test_lightning_api.py`` checks that the installed Lightning still has
every one of them (:data:`PRIVATE_API`), and that no other module of rawsr uses a private name of Lightning.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.pytorch.loops.fetchers import _DataLoaderIterDataFetcher
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.utilities.data import _update_dataloader

# -- DDP: the launcher that starts the worker processes ----------------------------------------------------------------


class ScriptLauncher(_SubprocessScriptLauncher):
    """Lightning's launcher of ``strategy=ddp`` (``_SubprocessScriptLauncher``), which starts each other process of
    the node as a copy of the running script, with one overridable step: :meth:`start_workers`.

    Lightning starts the workers in its private ``_call_children_scripts``, with a command that repeats the whole
    command line (which restarts a Hydra sweep per worker). Subclasses replace :meth:`start_workers`; the default is
    Lightning's own.
    """

    def _call_children_scripts(self) -> None:
        self.start_workers()

    def start_workers(self) -> None:
        """Start processes ``1 .. processes_per_node - 1`` of this node (Lightning's ``_call_children_scripts``)."""
        _SubprocessScriptLauncher._call_children_scripts(self)

    def check_can_start_workers(self) -> None:
        """Raise unless this process may start workers: once only, and from local rank 0
        (Lightning's ``_check_can_spawn_children``)."""
        self._check_can_spawn_children()

    @property
    def processes_per_node(self) -> int:
        """Processes of the run on each node (the launcher's ``num_processes``)."""
        return int(self.num_processes)

    def worker_environment(self) -> dict[str, str]:
        """The variables by which a worker joins the run, as Lightning sets them before starting its workers:
        ``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK``, ``LOCAL_RANK`` (this process's) and ``WORLD_SIZE``."""
        env = self.cluster_environment
        return {
            "MASTER_ADDR": env.main_address,
            "MASTER_PORT": str(env.main_port),
            "NODE_RANK": str(env.node_rank()),
            "LOCAL_RANK": str(env.local_rank()),
            "WORLD_SIZE": str(self.num_processes * self.num_nodes),
        }

    @property
    def workers(self) -> list[subprocess.Popen]:
        """The worker processes started (Lightning's ``procs``: it watches them and signals them on failure)."""
        return list(self.procs)

    @workers.setter
    def workers(self, procs: Sequence[subprocess.Popen]) -> None:
        self.procs = list(procs)


class ScriptLauncherDDPStrategy(DDPStrategy):
    """Lightning's :class:`DDPStrategy` with the script launcher of :meth:`script_launcher` in place of Lightning's.

    The strategy builds its launcher in the private ``_configure_launcher`` and keeps it in ``_launcher``; this class
    overrides the one and replaces the other when Lightning chose its script launcher (``start_method="popen"``,
    the default), and leaves the spawn launchers alone.
    """

    def script_launcher(self) -> ScriptLauncher:
        """The launcher to use; the default is Lightning's behaviour. Subclasses return a :class:`ScriptLauncher`
        built with ``(self.cluster_environment, self.num_processes, self.num_nodes)``."""
        return ScriptLauncher(self.cluster_environment, self.num_processes, self.num_nodes)

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            self._launcher = self.script_launcher()


def rebuild_dataloader(dataloader: Any, sampler: Any) -> Any:
    """``dataloader`` re-created with ``sampler``, everything else kept (Lightning's ``_update_dataloader``, which
    knows how to re-instantiate a DataLoader subclass from its recorded arguments)."""
    return _update_dataloader(dataloader, sampler)


# -- resume: the training epoch's data stream --------------------------------------------------------------------------


def _train_fetcher(trainer: L.Trainer) -> Any:
    """The fit loop's data fetcher (``fit_loop._data_fetcher``), or ``None`` before the loop set it up."""
    return trainer.fit_loop._data_fetcher


def restart_train_iterator(trainer: L.Trainer) -> bool:
    """Re-create the training epoch's data iterator now (``iter(fit_loop._data_fetcher)``), so that it draws from
    the current random states; ``False`` when the fit loop has no fetcher yet."""
    fetcher = _train_fetcher(trainer)
    if fetcher is None:
        return False
    iter(fetcher)
    return True


def train_fetcher_is_replayable(trainer: L.Trainer) -> bool:
    """Whether the fit loop's fetcher hands out batches (``False`` for ``_DataLoaderIterDataFetcher``, used when
    ``training_step`` takes the ``dataloader_iter`` itself, and when there is no fetcher)."""
    fetcher = _train_fetcher(trainer)
    return fetcher is not None and not isinstance(fetcher, _DataLoaderIterDataFetcher)


def set_train_sampler_epochs(trainer: L.Trainer, epoch: int) -> None:
    """Give every training loader's sampler the epoch ``epoch``, as the fit loop does when an epoch starts
    (``fit_loop._combined_loader`` and ``lightning.fabric.utilities.data._set_sampler_epoch``)."""
    for loader in trainer.fit_loop._combined_loader.flattened:
        _set_sampler_epoch(loader, epoch)


def next_train_batch(trainer: L.Trainer) -> Any:
    """The next batch of the training iterator, as the epoch loop fetches it (``next(fit_loop._data_fetcher)``)."""
    batch, _, _ = next(_train_fetcher(trainer))
    return batch


def before_batch_transfer(module: L.LightningModule, batch: Any) -> Any:
    """The ``on_before_batch_transfer`` hooks of the module and its data module, in Lightning's order
    (``LightningModule._on_before_batch_transfer``, which the epoch loop calls)."""
    return module._on_before_batch_transfer(batch, dataloader_idx=0)


def uncount_fetched(trainer: L.Trainer, batches: int) -> None:
    """Take ``batches`` off the fetcher's count of batches handed out (``fetcher.fetched``): after a replay, the
    epoch loop of a resumed run adds the finished batches itself."""
    _train_fetcher(trainer).fetched -= batches


# -- loggers -----------------------------------------------------------------------------------------------------------


def started_experiment(logger: Any) -> Any:
    """The logger's experiment object if it was already created, else ``None`` (the ``_experiment`` attribute of
    Lightning's loggers; the public ``experiment`` property creates it)."""
    return logger._experiment


# -- SLURM -------------------------------------------------------------------------------------------------------------


def slurm_requeue_now(trainer: L.Trainer, signum: int) -> None:
    """Do now what Lightning's SLURM handler of ``signum`` (SIGUSR1) does when the signal arrives: finalise the
    loggers, write ``hpc_ckpt_N.ckpt`` in the trainer's root folder and, on rank 0, ``scontrol requeue`` the job
    (``trainer._signal_connector._slurm_sigusr_handler_fn``; Lightning offers no public way to call it later)."""
    trainer._signal_connector._slurm_sigusr_handler_fn(signum, None)


# -- warnings raised inside Lightning's private modules ---------------------------------------------------------------

PYTREE_MODULE = r"lightning\.pytorch\.utilities\._pytree"
"""The private module whose tree-spec check warns on every batch transfer under torch 2.13 (a ``module=`` pattern
for :func:`warnings.filterwarnings`, see :func:`rawsr.training.console.single_console`)."""


# -- what the tests check ----------------------------------------------------------------------------------------------

PRIVATE_API: tuple[tuple[str, str, str], ...] = (
    ("ScriptLauncher", "lightning.pytorch.strategies.launchers.subprocess_script", "_SubprocessScriptLauncher"),
    ("ScriptLauncher.start_workers", "_SubprocessScriptLauncher", "_call_children_scripts"),
    ("ScriptLauncher.check_can_start_workers", "_SubprocessScriptLauncher", "_check_can_spawn_children"),
    ("ScriptLauncher.workers", "_SubprocessScriptLauncher()", "procs"),
    ("ScriptLauncher.worker_environment", "_SubprocessScriptLauncher()", "cluster_environment"),
    ("ScriptLauncher.worker_environment", "_SubprocessScriptLauncher()", "num_processes"),
    ("ScriptLauncher.worker_environment", "_SubprocessScriptLauncher()", "num_nodes"),
    ("ScriptLauncherDDPStrategy", "DDPStrategy", "_configure_launcher"),
    ("ScriptLauncherDDPStrategy", "DDPStrategy()", "_launcher"),
    ("rebuild_dataloader", "lightning.pytorch.utilities.data", "_update_dataloader"),
    ("restart_train_iterator", "Trainer().fit_loop", "_data_fetcher"),
    ("train_fetcher_is_replayable", "lightning.pytorch.loops.fetchers", "_DataLoaderIterDataFetcher"),
    ("set_train_sampler_epochs", "Trainer().fit_loop", "_combined_loader"),
    ("set_train_sampler_epochs", "lightning.fabric.utilities.data", "_set_sampler_epoch"),
    ("before_batch_transfer", "LightningModule", "_on_before_batch_transfer"),
    ("uncount_fetched", "_PrefetchDataFetcher()", "fetched"),
    ("started_experiment", "CSVLogger()", "_experiment"),
    ("PYTREE_MODULE", "lightning.pytorch.utilities", "_pytree"),
    ("slurm_requeue_now", "Trainer()", "_signal_connector"),
    ("slurm_requeue_now", "_SignalConnector", "_slurm_sigusr_handler_fn"),
)
"""``(adapter, owner, attribute)``: each private name of Lightning an adapter above relies on, and where it lives
(a module path, a class, or ``Class()`` for an attribute that instances get in ``__init__``)."""
