"""CPU threads on a shared machine: ``threads: auto``, ``omp_wait_policy`` and ``data.worker_threads`` are applied."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import Dataset

from rawsr.cli import auto_threads, idle_cpus, resolve_threads, set_omp_wait_policy, usable_cpus
from rawsr.config import ConfigError
from rawsr.data import RawSRDataModule
from tests.conftest import REPO


@pytest.mark.parametrize(
    "usable,idle,expected",
    [(2, 2.0, 2), (2, 1.6, 2), (2, 1.4, 1), (2, 0.1, 1), (2, None, 2), (4, 2.6, 3), (2, 8.0, 2)],
)
def test_auto_rule_takes_the_idle_cpus_rounded_at_least_one(usable, idle, expected):
    assert auto_threads(usable, idle) == expected


def test_threads_key_values():
    assert resolve_threads(None) is None
    assert resolve_threads(3) == 3
    assert 1 <= resolve_threads("auto") <= usable_cpus()
    idle = idle_cpus(0.05)
    assert idle is None or 0 <= idle <= (os.cpu_count() or 1) + 1e-6
    for bad in (0, -1, 1.5, "two", True):
        with pytest.raises(ConfigError, match="config key 'threads'"):
            resolve_threads(bad)


def test_threads_auto_sets_torch_threads_in_the_main_process(monkeypatch):
    from rawsr.cli import threads as cli
    from rawsr.train import set_threads

    before = torch.get_num_threads()
    monkeypatch.setattr(cli, "usable_cpus", lambda: 2)
    try:
        monkeypatch.setattr(cli, "idle_cpus", lambda seconds=0.2: 0.4)  # another job holds most of the machine
        assert set_threads("auto") == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(cli, "idle_cpus", lambda seconds=0.2: 2.0)  # a free machine
        assert set_threads("auto") == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def run_python(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=environ, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_omp_wait_policy_is_set_only_when_the_user_has_not():
    code = """
        import os, sys
        from rawsr.cli import set_omp_wait_policy
        print(set_omp_wait_policy("passive"), "torch" in sys.modules)
    """
    assert run_python(code) == "PASSIVE False"
    assert run_python(code, OMP_WAIT_POLICY="active") == "active False"
    assert run_python(code.replace('"passive"', "None")) == "None False"


def test_omp_wait_policy_refuses_other_values():
    with pytest.raises(ConfigError, match="config key 'omp_wait_policy'"):
        set_omp_wait_policy("spin")


def test_train_sets_the_wait_policy_before_torch_is_loaded(tmp_path):
    """The first step of ``train`` that could load torch (reading a checkpoint to resume) sees the variable set."""
    code = f"""
        import os, sys
        from hydra import compose, initialize_config_dir
        import rawsr.train as train
        from rawsr.config import ConfigError, config_dir

        os.environ["RAWSR_LOG_DIR"] = {str(tmp_path)!r}
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=["paths.output_dir={tmp_path}"])

        def resolve_checkpoint(cfg):
            print(os.environ.get("OMP_WAIT_POLICY"), "torch" in sys.modules)
            raise ConfigError("stop here")

        train.resolve_checkpoint = resolve_checkpoint
        try:
            train.train(cfg)
        except ConfigError:
            pass
    """
    assert run_python(code) == "PASSIVE False"


class ThreadReport(Dataset):
    """Reports, from inside the worker that loads each item, its torch threads, OMP_NUM_THREADS and its seeding."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> dict:
        info = torch.utils.data.get_worker_info()
        return {
            "threads": torch.get_num_threads(),
            "omp": int(os.environ.get("OMP_NUM_THREADS", "0")),
            "worker": -1 if info is None else info.id,
            "seeded": os.environ.get("SEEDED_AS", ""),
        }


@pytest.mark.parametrize("threads", [1, 2])
def test_data_workers_run_with_worker_threads_and_keep_lightning_seeding(threads, monkeypatch):
    import lightning.fabric.utilities.seed as seed

    monkeypatch.setenv("PL_SEED_WORKERS", "1")  # what seed_everything(workers=True) sets
    # Lightning's worker seeding, recorded instead (the workers are forked: they see this patch)
    monkeypatch.setattr(seed, "pl_worker_init_function", lambda i, rank: os.environ.update(SEEDED_AS=f"{i},{rank}"))
    module = RawSRDataModule(
        train=lambda **_: ThreadReport(),
        val=lambda **_: ThreadReport(),
        scale=2,
        crop=64,
        val_batch_size=1,
        num_workers=2,
        persistent_workers=False,
        worker_threads=threads,
    )
    module.setup("fit")
    items = list(module.val_dataloader())
    assert sorted(int(b["worker"]) for b in items) == [0, 1]
    assert all(int(b["threads"]) == threads and int(b["omp"]) == threads for b in items)
    assert sorted(b["seeded"][0] for b in items) == ["0,0", "1,0"]  # each worker seeded by Lightning's rule


def test_worker_threads_is_checked():
    with pytest.raises(ConfigError, match="data.worker_threads"):
        RawSRDataModule(train=ThreadReport, val=ThreadReport, scale=2, crop=64, worker_threads=0)
