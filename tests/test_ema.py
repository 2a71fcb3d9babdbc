"""The exponential moving average of the weights (``callbacks/ema=on``): the average against a NumPy computation of
the weight trajectory, validation and checkpoints on the average, and an exact resume after a kill or a stop."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict
from torch import nn

from rawsr.config import ConfigError, instantiate
from rawsr.train import instantiate_all, save_final_checkpoint, train
from rawsr.training import ExponentialMovingAverage, RawSRModule, load_checkpoint


class TinyNet(nn.Module):
    """RawSRNet's interface in two 3x3 convolutions on the bilinearly upsampled inputs: ``raw (B, 1, H, W)``,
    ``ref (B, 3, H, W)`` -> ``{"srgb", "linear"}`` ``(B, 3, sH, sW)``."""

    SIZE_MULTIPLE = 2

    def __init__(self, scale: int, channels: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(nn.Conv2d(4, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, 3, 3, padding=1))

    def forward(self, raw, ref, wb=None, ccm=None) -> dict[str, torch.Tensor]:
        up = F.interpolate(torch.cat([raw, ref], 1), scale_factor=self.scale, mode="bilinear", align_corners=False)
        linear = self.body(up)
        return {"srgb": up[:, 1:] + linear, "linear": linear}


STEPS_PER_EPOCH, EPOCHS = 4, 3
TINY = (
    "model.optimizer.lr=1e-2",
    "model.scheduler=null",
    "data.crop=16",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.pin_memory=false",
    "data.val.val_crops=32",
    f"data.train.samples_per_epoch={2 * STEPS_PER_EPOCH}",
    f"trainer.max_epochs={EPOCHS}",
    "trainer.check_val_every_n_epoch=1",
    "trainer.accelerator=cpu",
    "+trainer.num_sanity_val_steps=0",
    "+trainer.enable_progress_bar=false",
    "callbacks.model_summary=null",
    "callbacks.progress_bar=null",
    "callbacks.step_checkpoint.every_n_train_steps=3",
    "trainer.log_every_n_steps=1",
    "threads=1",
    "callbacks/ema=on",
)


class WeightTrajectory(Callback):
    """The module's weights after every optimiser step, as float64 arrays: ``steps[k][name]``."""

    def __init__(self) -> None:
        self.steps: list[dict[str, np.ndarray]] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.steps.append({k: v.detach().double().numpy().copy() for k, v in pl_module.state_dict().items()})


class SaveWithinStep(Callback):
    """Writes a whole checkpoint to ``path`` at the end of optimiser step ``step``, as SLURM's requeue does."""

    def __init__(self, step: int, path: Path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path, weights_only=False)


def numpy_ema(steps: list[dict[str, np.ndarray]], decay: float, warmup: bool) -> dict[str, np.ndarray]:
    """The average of the weights of each step: the first copied, then ``d * average + (1 - d) * weights`` with
    ``d = min(decay, (1 + t) / (10 + t))`` (with warm-up) after ``t`` averaged steps."""
    average = {k: v.copy() for k, v in steps[0].items()}
    for t, weights in enumerate(steps[1:], start=1):
        d = min(decay, (1 + t) / (10 + t)) if warmup else decay
        average = {k: d * average[k] + (1 - d) * weights[k] for k in average}
    return average


TINY_NET = {"_target_": "test_ema.TinyNet", "scale": "${data.scale}", "channels": 4}


def tiny(compose_train, *overrides: str):
    """The composed config of a tiny run with the average on: :class:`TinyNet`, 3 epochs of 4 steps of 2 crops."""
    cfg = compose_train(*TINY, *overrides)
    with open_dict(cfg):
        cfg.model.net = TINY_NET
    return cfg


def checkpoints(cfg) -> Path:
    """The checkpoints folder of the run of ``cfg``."""
    return Path(cfg.paths.ckpt_dir)


@pytest.mark.parametrize(("decay", "warmup"), [(0.999, True), (0.7, False)])
def test_the_average_is_the_ema_of_the_weight_trajectory(compose_train, decay, warmup):
    cfg = tiny(compose_train, f"callbacks.ema.decay={decay}", f"callbacks.ema.warmup={warmup}", "run_name=ema")
    L.seed_everything(cfg.seed)
    datamodule, model, trainer = instantiate_all(cfg)
    trajectory = WeightTrajectory()
    trainer.callbacks.append(trajectory)
    within = checkpoints(cfg) / "within-step-5.ckpt"
    trainer.callbacks.insert(0, SaveWithinStep(5, within))  # its hook runs before the average's
    trainer.fit(model, datamodule=datamodule)
    save_final_checkpoint(trainer)

    assert len(trajectory.steps) == STEPS_PER_EPOCH * EPOCHS == trainer.global_step
    expected = numpy_ema(trajectory.steps, decay, warmup)
    last = checkpoints(cfg) / "last.ckpt"
    averaged = load_checkpoint(last).state_dict()
    assert averaged.keys() == expected.keys()
    for name, value in averaged.items():
        np.testing.assert_allclose(value.double().numpy(), expected[name], rtol=0, atol=1e-6, err_msg=name)
    # The average is not the final weights: the comparison above has teeth.
    final = trajectory.steps[-1]
    assert max(np.abs(expected[k] - final[k]).max() for k in final) > 1e-3
    # The checkpoint keeps the final training weights beside the average, and the module holds the average.
    raw = torch.load(last, weights_only=True)
    for name, value in raw["current_model_state"].items():
        np.testing.assert_array_equal(value.double().numpy(), final[name], err_msg=name)
    assert int(raw["averaging_state"]["n_averaged"]) == trainer.global_step
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value.double().numpy(), expected[name], rtol=0, atol=1e-6, err_msg=name)
    # A checkpoint written within step 5 before the average's hook holds the average of steps 1 to 5.
    early = numpy_ema(trajectory.steps[:5], decay, warmup)
    for name, value in load_checkpoint(within).state_dict().items():
        np.testing.assert_allclose(value.double().numpy(), early[name], rtol=0, atol=1e-6, err_msg=name)
    # Validating a checkpoint with this trainer after fitting validates that checkpoint's average.
    final_score = validate(cfg, model)
    again = trainer.validate(model, datamodule=datamodule, ckpt_path=within, verbose=False)[0]["val/psnr"]
    assert again == pytest.approx(validate(cfg, load_checkpoint(within)), abs=1e-6)
    assert abs(again - final_score) > 1e-3  # the final average scores otherwise


# --------------------------------------------------------------------------------------------------------------------
# validation and checkpoints of a whole run, and its resumes


class KillAt(Callback):
    """Kills its process (SIGKILL) when optimiser step ``step + 1`` begins: nothing after the checkpoints of step
    ``step`` runs."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def train_tiny(root: Path, *overrides: str) -> DictConfig:
    """Train a tiny run (:data:`TINY`) with runs under ``root/logs``, from the folder ``root/run`` (as
    ``compose_train`` does, so that a test's runs and this one's meet); return its config."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from rawsr.config import config_dir

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAWSR_LOG_DIR", str(root / "logs"))
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=[*TINY, *overrides], return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(root / "run")
            cfg.hydra.job.num = 0
            cfg.model.net = TINY_NET
        HydraConfig.instance().set_config(cfg)
        try:
            train(cfg)
        finally:
            GlobalHydra.instance().clear()
    return cfg


#: ``python -c KILLED ROOT OVERRIDE...`` trains :func:`train_tiny` in a process of its own.
KILLED = "import sys, pathlib, test_ema; test_ema.train_tiny(pathlib.Path(sys.argv[1]), *sys.argv[2:])"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run with the average on, tested after fitting: ``(config, its checkpoints folder)``."""
    cfg = train_tiny(tmp_path_factory.mktemp("reference"), "run_name=full", "test=true")
    return cfg, checkpoints(cfg)


def validate(cfg, module: RawSRModule) -> float:
    """val/psnr of ``module`` on the validation set of ``cfg``, in a trainer of its own."""
    datamodule = instantiate(cfg.data, degradation=instantiate(cfg.degradation))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    return trainer.validate(module, datamodule=datamodule, verbose=False)[0]["val/psnr"]


def with_training_weights(path: Path) -> RawSRModule:
    """The module of the checkpoint at ``path`` with the training weights it keeps beside the average."""
    module = load_checkpoint(path)
    module.load_state_dict(torch.load(path, weights_only=True)["current_model_state"])
    return module


def best_scores(cfg, last: Path) -> dict[Path, float]:
    """The best checkpoints recorded in ``last`` by the validation-metric checkpoint callback, and their val/psnr."""
    states = torch.load(last, weights_only=True)["callbacks"]
    (best,) = [s for name, s in states.items() if name.startswith("ModelCheckpoint") and "val/psnr" in name]
    assert len(best["best_k_models"]) == cfg.callbacks.model_checkpoint.save_top_k
    return {Path(path): float(score) for path, score in best["best_k_models"].items()}


def logged(cfg, metric: str) -> list[float]:
    """The values of ``metric`` in the run's metrics.csv, in order."""
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv") as handle:
        return [float(row[metric]) for row in csv.DictReader(handle) if row.get(metric)]


def test_validation_and_the_best_checkpoints_use_the_average(reference):
    cfg, folder = reference
    scores = best_scores(cfg, folder / "last.ckpt")
    for path, score in scores.items():
        averaged, trained = validate(cfg, load_checkpoint(path)), validate(cfg, with_training_weights(path))
        assert averaged == pytest.approx(score, abs=1e-5), path.name
        assert abs(trained - score) > 1e-3, path.name  # the training weights score otherwise
    assert sorted(scores.values()) == pytest.approx(sorted(logged(cfg, "val/psnr"))[-len(scores) :], abs=1e-5)
    # test=true tests the best checkpoint's average.
    (tested,) = logged(cfg, "test/psnr")
    assert tested == pytest.approx(max(scores.values()), abs=1e-5)


def assert_same_final_state(a: Path, b: Path) -> None:
    """The two ``last.ckpt`` hold the same step, the same average (bit for bit), training weights and optimiser."""
    a, b = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert a["global_step"] == b["global_step"] == STEPS_PER_EPOCH * EPOCHS
    for key in ("state_dict", "current_model_state", "averaging_state"):
        assert a[key].keys() == b[key].keys(), key
        for name, value in a[key].items():
            assert torch.equal(b[key][name], value), f"{key}: {name}"
    for index, state in a["optimizer_states"][0]["state"].items():
        assert torch.equal(b["optimizer_states"][0]["state"][index]["exp_avg"], state["exp_avg"])


def test_a_run_killed_mid_epoch_resumes_to_the_same_average(reference, compose_train, tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), str(Path(__file__).parent)]),
    }
    kill = "+callbacks.kill={_target_:test_ema.KillAt,step:6}"
    command = [sys.executable, "-c", KILLED, str(tmp_path), "run_name=cut", kill]
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    cut = tiny(compose_train, "run_name=cut", "resume=true")
    written = torch.load(checkpoints(cut) / "last.ckpt", weights_only=True)
    assert written["global_step"] == 6 and int(written["averaging_state"]["n_averaged"]) == 6  # mid-epoch 2
    train(cut)
    assert_same_final_state(reference[1] / "last.ckpt", checkpoints(cut) / "last.ckpt")


def test_a_run_stopped_and_continued_ends_with_the_same_average(reference, compose_train):
    stopped = tiny(compose_train, "run_name=stopped", "trainer.max_epochs=1")
    train(stopped)
    written = torch.load(checkpoints(stopped) / "last.ckpt", weights_only=True)
    assert written["global_step"] == STEPS_PER_EPOCH  # written after fitting ended, when the module holds the average
    train(tiny(compose_train, "run_name=stopped", "resume=true"))
    assert_same_final_state(reference[1] / "last.ckpt", checkpoints(stopped) / "last.ckpt")


def test_resuming_an_averaged_run_without_the_average_is_refused(reference, compose_train):
    cfg = compose_train(*[o for o in TINY if o != "callbacks/ema=on"], f"resume={reference[1] / 'last.ckpt'}")
    with pytest.raises(ConfigError, match=r"^config key 'callbacks.ema': .*resume it with callbacks/ema=on"):
        train(cfg)


# --------------------------------------------------------------------------------------------------------------------
# the option


def test_the_option_is_off_in_every_experiment_and_switches_on_with_one_override(compose_train):
    from rawsr.config import config_dir

    for experiment in sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml")):
        assert "ema" not in compose_train(f"experiment={experiment}").callbacks, experiment
        cfg = compose_train(f"experiment={experiment}", "callbacks/ema=on")
        callback = instantiate(cfg.callbacks.ema)
        assert type(callback) is ExponentialMovingAverage and (callback.decay, callback.warmup) == (0.999, True)


def test_the_option_is_on_the_help_page():
    from rawsr.cli.help import help_page

    (line,) = [line for line in help_page("train").splitlines() if line.strip().startswith("callbacks/ema=")]
    assert line.split()[:2] == ["callbacks/ema=null", "on"] and "moving average" in line


@pytest.mark.parametrize(
    ("override", "key"),
    [("callbacks.ema.decay=1.0", "callbacks.ema.decay"), ("callbacks.ema.warmup=maybe", "callbacks.ema.warmup")],
)
def test_a_bad_value_is_refused_naming_the_key(compose_train, override, key):
    cfg = compose_train("callbacks/ema=on", override)
    with pytest.raises(ConfigError, match=rf"^config key '{key}': expected"):
        instantiate(cfg.callbacks.ema)


def test_weights_only_checkpoints_are_refused(compose_train):
    cfg = tiny(compose_train, "+callbacks.model_checkpoint.save_weights_only=true")
    datamodule, model, trainer = instantiate_all(cfg)
    with pytest.raises(ConfigError, match=r"^config key 'callbacks.ema': .*save_weights_only=true"):
        trainer.fit(model, datamodule=datamodule)


def test_a_renamed_layer_is_renamed_in_the_average_and_in_the_training_weights():
    from rawsr.training import upgrade_checkpoint
    from rawsr.training.legacy import LEGACY_STATE_PREFIXES

    ((old, new),) = LEGACY_STATE_PREFIXES.items()
    weights = {f"{old}head.weight": torch.ones(1), "net.body.bias": torch.zeros(1)}
    checkpoint = {"state_dict": dict(weights), "current_model_state": dict(weights)}
    upgrade_checkpoint(checkpoint)
    assert (
        checkpoint["state_dict"].keys()
        == checkpoint["current_model_state"].keys()
        == {
            f"{new}head.weight",
            "net.body.bias",
        }
    )
