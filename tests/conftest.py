"""Shared fixtures: composed configs, the real raw samples beside the project, isolated run folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAW_SAMPLES = REPO.parent / "shared" / "data" / "raw-samples"

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def raw_samples() -> Path:
    """The folder of real camera raw files kept beside the project; tests skip when it is absent."""
    if not RAW_SAMPLES.is_dir():
        pytest.skip(f"real raw samples not found at {RAW_SAMPLES} (they live beside the project, not in it)")
    return RAW_SAMPLES


@pytest.fixture
def compose_train(tmp_path, monkeypatch):
    """Compose ``train.yaml`` with overrides, as ``python -m rawsr.train`` would, with runs under ``tmp_path``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from rawsr.config import config_dir

    monkeypatch.setenv("RAWSR_LOG_DIR", str(tmp_path / "logs"))

    def _compose(*overrides: str, config_name: str = "train"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path / "run")
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
