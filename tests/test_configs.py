"""Every config composes, and bad values are refused with a message naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rawsr.cli import check_data_paths
from rawsr.config import ConfigError, config_dir
from rawsr.train import instantiate_all

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
PAPER = {"x2_blind": (2, 256), "x4_blind": (4, 128), "x2_nonblind": (2, 256), "x4_nonblind": (4, 128)}


def test_experiments_exist():
    assert set(PAPER) | {"demo", "demo_long"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_resolves(compose_train, experiment):
    cfg = compose_train(f"experiment={experiment}")
    container = OmegaConf.to_container(cfg, resolve=False)
    assert container["model"]["net"]["scale"] == "${data.scale}"
    # Everything but the dataset paths the user must give resolves.
    for group in ("model", "trainer", "callbacks", "degradation"):
        OmegaConf.to_container(cfg[group], resolve=True)
    assert cfg.model.net.scale == cfg.data.scale and cfg.model.tile == cfg.data.crop


@pytest.mark.parametrize("experiment,expected", sorted(PAPER.items()))
def test_paper_recipe(compose_train, experiment, expected):
    cfg = compose_train(f"experiment={experiment}")
    scale, crop = expected
    assert (cfg.data.scale, cfg.data.crop, cfg.data.scale * cfg.data.crop) == (scale, crop, 512)
    assert cfg.data.batch_size == 6 and cfg.trainer.max_epochs == 41
    assert cfg.model.optimizer.lr == pytest.approx(2e-4)
    assert (cfg.model.net.width, cfg.model.net.growth, cfg.model.net.dense_layers) == (128, 16, 8)
    assert cfg.run_name == experiment


@pytest.mark.parametrize("experiment", sorted(PAPER))
def test_paper_experiment_without_dataset_stops_naming_the_key(compose_train, experiment):
    cfg = compose_train(f"experiment={experiment}")
    with pytest.raises(ConfigError, match=r"data\.\w+(\.\w+)?"):
        check_data_paths(cfg.data)


def test_missing_dataset_path_is_named(compose_train, tmp_path):
    cfg = compose_train("experiment=x4_blind", "data=rawsr_release", f"data.root={tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError, match="data.root.*nowhere"):
        check_data_paths(cfg.data)


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.crop=-64", "data.crop"),
        ("data.crop=30", "data.crop"),
        ("data.scale=5", "data.scale"),
        ("data.batch_size=0", "data.batch_size"),
    ],
)
def test_bad_value_is_refused_naming_the_key(compose_train, override, key):
    cfg = compose_train(override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        instantiate_all(cfg)


def test_threads_key_sets_torch_threads_and_refuses_bad_values(compose_train):
    import torch

    from rawsr.train import set_threads

    before = torch.get_num_threads()
    try:
        set_threads(compose_train("threads=1").threads)
        assert torch.get_num_threads() == 1
        set_threads(compose_train("threads=null").threads)  # null: left as it is
        assert torch.get_num_threads() == 1
        for bad in (0, -2, 1.5, "two", True):
            with pytest.raises(ConfigError, match="'threads'"):
                set_threads(bad)
    finally:
        torch.set_num_threads(before)


def test_ablation_runs_get_their_own_folder_and_share_the_dashboard_group(compose_train):
    cfg = compose_train("experiment=x4_blind", "ablation=no_fusion", "logger=wandb")
    assert cfg.run_name == "x4_blind-no_fusion" and cfg.model.net.fusion is False
    assert cfg.logger.wandb.group == "x4_blind" and cfg.logger.wandb.job_type == "no_fusion"
    full = compose_train("experiment=x4_blind", "logger=wandb")
    assert full.run_name == "x4_blind" and full.logger.wandb.group == "x4_blind"


@pytest.mark.parametrize("key", ["model.net.scale", "degradation.scale"])
def test_the_scale_is_set_once_with_data_scale(compose_train, key):
    from rawsr.train import train

    with pytest.raises(ConfigError, match=rf"^config key '{key}': 3 differs from data.scale=2; .* data.scale=3"):
        train(compose_train(f"{key}=3"))
    cfg = compose_train("data.scale=4", "data.crop=32")
    assert (cfg.model.net.scale, cfg.degradation.scale) == (4, 4)


def test_train_refuses_a_second_scale_in_one_line_exit_2(tmp_path):
    import rawsr

    src = str(Path(rawsr.__file__).resolve().parents[1])
    env = {**os.environ, "RAWSR_LOG_DIR": str(tmp_path), "PYTHONPATH": src}
    command = [sys.executable, "-m", "rawsr.train", "model.net.scale=3"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "config key 'model.net.scale': 3 differs from data.scale=2" in lines[0], lines


def test_source_errors_name_the_key_the_user_typed(compose_train):
    datamodule, _, _ = instantiate_all(compose_train("data.val.val_crops=30"))
    with pytest.raises(ConfigError, match=r"^config key 'data\.val\.val_crops': expected a multiple of 4"):
        datamodule.setup("validate")
