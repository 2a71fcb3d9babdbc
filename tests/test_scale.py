"""Training at scale: DDP, mixed precision, checkpoints and exact resume, sweeps, W&B offline, configs."""

from __future__ import annotations

import csv
import io
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from rawsr.config import ConfigError, instantiate
from rawsr.train import instantiate_all
from rawsr.training import (
    AtomicCheckpointIO,
    HydraDDPStrategy,
    RawSRModule,
    ReproducibleResume,
    load_checkpoint,
    progress_bar,
)
from rawsr.training.ddp import hydra_child_command
from rawsr.training.loggers import RUN_ID_FILE, resolve_wandb_mode, run_id, wandb_logger
from rawsr.training.panels import ImagePanels, to_uint8
from rawsr.training.resume import rng_states, set_rng_states

NARROW = ("model.net.width=16", "model.net.growth=8", "model.net.dense_layers=2")
SMALL = (
    "data.crop=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.val.val_crops=32",
    "data.val.val_samples=2",
    "trainer.check_val_every_n_epoch=1",
)
QUICK = (*NARROW, *SMALL, "+trainer.num_sanity_val_steps=0", "callbacks.model_summary=null")


@pytest.fixture
def one_thread():
    """In-process training on one thread: two busy cores make multi-threaded convolutions crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    env.update(OMP_NUM_THREADS="1", RAWSR_LOG_DIR=str(tmp_path / "logs"), WANDB_MODE="disabled", HYDRA_FULL_ERROR="1")
    env.update(extra)
    return env


def _train(tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run ``python -m rawsr.train ARGS`` in ``tmp_path``; return its output, failing with its tail on error."""
    result = subprocess.run(
        [sys.executable, "-m", "rawsr.train", *args],
        cwd=tmp_path,
        env=env or _env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def _csv_psnr(run_dir: Path) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return [float(row["val/psnr"]) for row in csv.DictReader(handle) if row.get("val/psnr")]


def _validate(compose_train, checkpoint: Path, *overrides: str) -> float:
    """val/psnr of ``checkpoint`` on the validation set, in this one process."""
    cfg = compose_train(*NARROW, *SMALL, *overrides)
    datamodule = instantiate(cfg.data)
    datamodule.degradation = instantiate(cfg.degradation)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    return trainer.validate(load_checkpoint(checkpoint), datamodule=datamodule, verbose=False)[0]["val/psnr"]


def _sweep_jobs(tmp_path: Path) -> tuple[Path, list[str]]:
    sweeps = list((tmp_path / "logs" / "train" / "multirun").iterdir())
    assert len(sweeps) == 1, sweeps  # one sweep folder: no process started a sweep of its own
    jobs = sorted(p.name for p in sweeps[0].iterdir() if p.is_dir())
    return sweeps[0], jobs


# --------------------------------------------------------------------------------------------------------------------
# DDP


@pytest.mark.slow
def test_ddp_multirun_syncs_metrics_and_starts_no_second_sweep(tmp_path, compose_train, one_thread):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # 3 validation images on 2 processes: a padding sampler would count one image twice.
    val = ("data.val.images=[chelsea,coffee,astronaut]", "data.val.val_samples=3")
    _train(tmp_path, "-m", *QUICK, *val, "trainer=ddp_sim", "trainer.max_epochs=1", "data.train.samples_per_epoch=16",
           "model.optimizer.lr=1e-3,4e-3", "logger=[csv,tensorboard]", timeout=400)  # fmt: skip
    sweep, jobs = _sweep_jobs(tmp_path)
    assert jobs == ["0", "1"]
    assert not (tmp_path / "logs" / "train" / "runs").exists()
    scores = []
    for job, lr in zip(jobs, (1e-3, 4e-3), strict=True):
        folder = sweep / job
        log_text = (folder / "train.log").read_text()
        assert "GLOBAL_RANK: 1" in log_text and "GLOBAL_RANK: 0" in log_text  # the worker ran this job, here
        checkpoint = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
        assert checkpoint["hyper_parameters"]["optimizer"]["lr"] == pytest.approx(lr)
        assert checkpoint["global_step"] == 2  # 16 samples / 2 processes / batch 4
        assert checkpoint["rng_states"]["current"]["torch"].shape[0] == 2  # both ranks' random states
        logged = _csv_psnr(folder)[-1]
        assert logged == pytest.approx(_validate(compose_train, folder / "checkpoints" / "last.ckpt", *val), abs=1e-4)
        scores.append(logged)
        tensorboard = EventAccumulator(str(folder / "tensorboard"), size_guidance={"images": 0})
        tensorboard.Reload()  # panels of images validated on either rank, gathered on rank 0
        assert {f"val/panel/{i}" for i in range(3)} == set(tensorboard.Tags()["images"])
    assert scores[0] != scores[1]


def test_ranks_draw_different_streams_and_rank_zero_keeps_its_own(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")

    def draws_after_setup(rank: int) -> torch.Tensor:
        torch.manual_seed(7)
        ReproducibleResume().setup(SimpleNamespace(global_rank=rank, world_size=2), None, "fit")
        return torch.rand(4)

    zero, one = draws_after_setup(0), draws_after_setup(1)
    torch.manual_seed(7)
    assert torch.equal(zero, torch.rand(4))
    torch.manual_seed(8)
    assert torch.equal(one, torch.rand(4))


def test_worker_command_runs_the_job_not_the_sweep(compose_train, monkeypatch, tmp_path):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import open_dict, read_write

    cfg = compose_train("trainer=ddp_sim")
    job_dir = tmp_path / "multirun" / "2026 01 01" / "1"  # a space: the value must be quoted
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.runtime.output_dir = str(job_dir)
        cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.overrides.task = ["trainer=ddp_sim", "model.optimizer.lr=0.002"]
        cfg.hydra.overrides.hydra = ["hydra.mode=MULTIRUN", "hydra.verbose=true", "hydra/launcher=basic"]
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    argv = [
        "train.py",
        "-m",
        "--config-dir",
        "/my/configs",
        "-cn=train",
        "trainer=ddp_sim",
        "model.optimizer.lr=1e-3,2e-3",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    command, cwd = hydra_child_command({"run_name": "2026-01-01_00-00-00", "trainer": "ignored: given by the job"})
    assert cwd == str(tmp_path)
    args = command[command.index("--config-dir") :]
    assert args[:3] == ["--config-dir", "/my/configs", "-cn=train"]
    assert "-m" not in args and "model.optimizer.lr=1e-3,2e-3" not in args
    overrides = args[3:]
    assert overrides[:2] == ["trainer=ddp_sim", "model.optimizer.lr=0.002"]
    parsed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(overrides)}
    assert parsed["hydra.run.dir"] == str(job_dir)
    assert parsed["run_name"] == "2026-01-01_00-00-00" and parsed["trainer"] == "ddp_sim"
    assert parsed["hydra.mode"] == "RUN" and parsed["hydra.output_subdir"] is None
    assert parsed["hydra.verbose"] is True and "hydra/launcher" not in parsed


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints and resume


def test_rng_states_round_trip_through_weights_only_load():
    def draws() -> tuple:
        numpy_draws = np.random.rand(2).tolist(), np.random.normal()  # noqa: NPY002 (the global state is the point)
        return torch.rand(3).tolist(), random.random(), random.gauss(0, 1), numpy_draws

    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
    np.random.normal()  # noqa: NPY002 (and one in NumPy's)
    buffer = io.BytesIO()
    torch.save(rng_states(), buffer)
    expected = draws()
    buffer.seek(0)
    set_rng_states(torch.load(buffer, weights_only=True))
    assert draws() == expected


def test_atomic_checkpoint_survives_sigkill_mid_write(tmp_path):
    """A writer killed while writing leaves the previous checkpoint intact; the next save clears its leftovers."""
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1, "w": torch.arange(10)}, target)
    script = (
        "import sys, torch; from rawsr.training import AtomicCheckpointIO; "
        "AtomicCheckpointIO().save_checkpoint({'step': 2, 'w': torch.ones(2**26)}, sys.argv[1])"
    )
    writer = subprocess.Popen([sys.executable, "-c", script, str(target)], env=_env(tmp_path))
    deadline = time.monotonic() + 120
    partials: list[Path] = []
    while time.monotonic() < deadline and writer.poll() is None and not partials:
        partials = list(tmp_path.glob(".last.ckpt.*.part"))
        time.sleep(0.001)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert partials, "the writer finished before it could be killed mid-write"
    assert torch.load(target, weights_only=True)["step"] == 1
    AtomicCheckpointIO().save_checkpoint({"step": 3}, target)
    assert torch.load(target, weights_only=True)["step"] == 3
    assert not list(tmp_path.glob(".*.part"))


@pytest.mark.slow
def test_kill_mid_epoch_and_resume_matches_the_uninterrupted_run(tmp_path):
    args = (
        *QUICK,
        "data.train.samples_per_epoch=32",  # 8 steps per epoch
        "trainer.max_epochs=2",
        "trainer.deterministic=true",
        "callbacks.step_checkpoint.every_n_train_steps=3",
        "model/scheduler=paper",
        "model.scheduler.decay=0.5",
    )
    env = _env(tmp_path)
    command = [sys.executable, "-m", "rawsr.train", *args]
    with open(tmp_path / "full.log", "w") as full_log, open(tmp_path / "killed.log", "w") as killed_log:
        full = subprocess.Popen([*command, "run_name=full"], cwd=tmp_path, env=env, stdout=full_log, stderr=full_log)
        killed = subprocess.Popen(
            [*command, "run_name=cut"], cwd=tmp_path, env=env, stdout=killed_log, stderr=killed_log
        )
        last = tmp_path / "logs" / "train" / "runs" / "cut" / "checkpoints" / "last.ckpt"
        deadline = time.monotonic() + 240
        while not last.exists() and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        killed.send_signal(signal.SIGKILL)
        assert killed.wait() == -signal.SIGKILL
        cut = torch.load(last, weights_only=True)
        assert cut["global_step"] % 3 == 0 and cut["global_step"] % 8 > 0, cut["global_step"]  # mid-epoch
        _train(tmp_path, *args, "run_name=cut", "resume=true", env=env)
        assert full.wait(timeout=300) == 0, (tmp_path / "full.log").read_text()[-3000:]
    runs = tmp_path / "logs" / "train" / "runs"
    a = torch.load(runs / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(runs / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 16 and a["epoch"] == b["epoch"]
    assert a["lr_schedulers"] == b["lr_schedulers"]
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=1e-5, msg=key)
    for key, state in a["optimizer_states"][0]["state"].items():
        torch.testing.assert_close(
            b["optimizer_states"][0]["state"][key]["exp_avg"], state["exp_avg"], rtol=0, atol=1e-5
        )


# --------------------------------------------------------------------------------------------------------------------
# Sweeps


@pytest.mark.slow
def test_optuna_sweep_runs_two_trials_in_their_own_folders(tmp_path):
    space = (
        "hydra.sweeper.params={model.optimizer.lr:'tag(log, interval(1e-4, 1e-2))',model.net.width:'choice(8, 16)',"
        "model.net.growth:'choice(4, 8)',model.net.dense_layers:'choice(1, 2)'}"
    )
    _train(tmp_path, *SMALL, "+trainer.num_sanity_val_steps=0", "trainer.max_epochs=1",
           "data.train.samples_per_epoch=8", "hparams_search=optuna", "hydra.sweeper.n_trials=2", space)  # fmt: skip
    sweep, jobs = _sweep_jobs(tmp_path)
    assert jobs == ["0", "1"]
    scores = []
    for job in jobs:
        overrides = dict(
            o.split("=", 1) for o in yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())
        )
        hparams = torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
        assert hparams["optimizer"]["lr"] == pytest.approx(float(overrides["model.optimizer.lr"]))
        assert hparams["net"]["width"] == int(overrides["model.net.width"])
        scores.append(_csv_psnr(sweep / job)[-1])
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(max(scores), abs=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# W&B offline, image panels, TensorBoard


def _wandb_records(path: Path) -> list:
    """The protobuf records of a ``.wandb`` transaction log (a LevelDB-style log of 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, pending, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:
            break
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _history(records: list) -> list[dict[str, str]]:
    return [
        {item.key or "/".join(item.nested_key): item.value_json for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]


@pytest.mark.slow
def test_wandb_offline_without_key_logs_metrics_panels_and_resumes_the_same_run(tmp_path, compose_train, one_thread):
    import json

    import imageio.v3 as iio
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    home = tmp_path / "home"
    env = _env(tmp_path, HOME=str(home), WANDB_CONFIG_DIR=str(home / "cfg"), WANDB_CACHE_DIR=str(home / "cache"))
    env.pop("WANDB_MODE")
    args = (*QUICK, "data.train.samples_per_epoch=8", "logger=many_loggers", "run_name=wb", "ablation=no_fusion")
    output = _train(tmp_path, *args, "trainer.max_epochs=1", env=env)
    run = tmp_path / "logs" / "train" / "runs" / "wb"
    sync_lines = [line for line in output.splitlines() if line.strip().startswith("wandb sync ")]
    assert len(sync_lines) == 1  # said once, with the folder to upload
    first = Path(sync_lines[0].split("wandb sync ", 1)[1].strip())
    identifier = (run / RUN_ID_FILE).read_text().strip()
    assert first.parent == run / "wandb" and first.name.startswith("offline-run-") and first.name.endswith(identifier)

    records = _wandb_records(first / f"run-{identifier}.wandb")
    header = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (header.run_id, header.run_group, header.job_type) == (identifier, "demo", "no_fusion")
    assert set(header.tags) == {"demo", "no_fusion"}
    config = {u.key: json.loads(u.value_json) for r in records if r.HasField("config") for u in r.config.update}
    assert config["run_name"] == "wb" and config["trainer"]["max_epochs"] == 1
    assert config["paths"]["output_dir"] == str(run)  # resolved, not an interpolation
    history = _history(records)
    logged = [float(h["val/psnr"]) for h in history if "val/psnr" in h]
    assert logged == pytest.approx(_csv_psnr(run), abs=1e-6) and len(logged) == 1

    # The panel of validation image 0: bicubic reference, output, ground truth, recomputed here.
    panel = next(h for h in history if "val/panel/0/filenames" in h)
    assert json.loads(panel["val/panel/0/captions"]) == ["LR reference (bicubic)", "output", "ground truth"]
    images = [iio.imread(first / "files" / name) for name in json.loads(panel["val/panel/0/filenames"])]
    cfg = compose_train(*NARROW, *SMALL)
    datamodule = instantiate(cfg.data)
    datamodule.degradation = instantiate(cfg.degradation)
    datamodule.setup("validate")
    batch = datamodule.degrade(torch.utils.data.default_collate([datamodule.val_set[0]]), training=False)
    module = load_checkpoint(run / "checkpoints" / "last.ckpt")
    expected = [module.bicubic(batch["lr_ref"])[0], module.super_resolve(batch)[0], batch["hr_srgb"][0]]
    for image, reference in zip(images, expected, strict=True):
        reference = to_uint8(reference).permute(1, 2, 0).numpy()
        assert image.shape == reference.shape
        assert np.abs(image.astype(int) - reference.astype(int)).max() <= 1
    assert np.array_equal(images[2], to_uint8(expected[2]).permute(1, 2, 0).numpy())
    tensorboard = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    tensorboard.Reload()
    assert {"val/panel/0", "val/panel/1"} <= set(tensorboard.Tags()["images"])

    # resume=true continues the same W&B run.
    output = _train(tmp_path, *args, "trainer.max_epochs=2", "resume=true", env=env)
    second = Path(next(line for line in output.splitlines() if "wandb sync " in line).split("wandb sync ", 1)[1])
    assert second.name.endswith(identifier) and second != first
    records = _wandb_records(second / f"run-{identifier}.wandb")
    assert next(r.run for r in records if r.WhichOneof("record_type") == "run").run_id == identifier
    resumed = [float(h["val/psnr"]) for h in _history(records) if "val/psnr" in h]
    assert resumed == pytest.approx(_csv_psnr(run)[-1:])  # the second epoch's validation


class _PanelModule:
    """What :class:`ImagePanels` calls on the module: ``bicubic`` (nearest-neighbour x2 here) and ``super_resolve``,
    which must not run when the validation step's outputs hold the prediction."""

    def bicubic(self, lr_ref: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(lr_ref, scale_factor=2, mode="nearest")

    def super_resolve(self, batch: dict) -> torch.Tensor:
        raise AssertionError("ImagePanels recomputed the prediction instead of reading the step's outputs")


def test_panels_take_the_prediction_from_the_validation_step_outputs(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    panels, module = ImagePanels(num_images=2), _PanelModule()
    trainer = SimpleNamespace(sanity_checking=False, loggers=[TensorBoardLogger(tmp_path)])
    generator = torch.Generator().manual_seed(0)
    lr_ref, hr_srgb, prediction = (torch.rand(3, 3, s, s, generator=generator) for s in (4, 8, 8))
    batch = {"lr_ref": lr_ref, "hr_srgb": hr_srgb, "index": torch.tensor([1, 5, 0])}
    panels.on_validation_epoch_start(trainer, module)
    panels.on_validation_batch_end(trainer, module, {"prediction": prediction}, batch, 0)
    assert sorted(panels._panels) == [0, 1]  # image 5 is beyond num_images
    for row, index in ((0, 1), (2, 0)):
        upsampled = lr_ref[row].repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)
        expected = to_uint8(torch.stack([upsampled, prediction[row], hr_srgb[row]]))
        assert torch.equal(panels._panels[index], expected)


def test_validation_step_returns_the_tiled_prediction():
    net = {"_target_": "rawsr.model.RawSRNet", "scale": 2, "width": 8, "growth": 4, "dense_layers": 1}
    module = RawSRModule(net=net, tile=16).eval()
    generator = torch.Generator().manual_seed(1)
    batch = {
        "lr_raw": torch.rand(2, 1, 24, 24, generator=generator),
        "lr_ref": torch.rand(2, 3, 24, 24, generator=generator),
        "hr_srgb": torch.rand(2, 3, 48, 48, generator=generator),
    }
    with torch.no_grad():
        outputs = module.validation_step(batch, 0)
        assert set(outputs) == {"prediction"} and outputs["prediction"].shape == (2, 3, 48, 48)
        assert torch.equal(outputs["prediction"], module.super_resolve(batch))
    assert not hasattr(module, "last_prediction")


def test_wandb_mode_follows_the_environment_and_the_key(tmp_path, monkeypatch):
    for variable in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert resolve_wandb_mode()[0] == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    assert resolve_wandb_mode() == ("online", f"W&B API key from {tmp_path / 'netrc'}")
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert resolve_wandb_mode()[0] == "offline"  # the key is for another host
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    assert resolve_wandb_mode()[0] == "online"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_wandb_mode()[0] == "offline"
    assert resolve_wandb_mode("disabled")[0] == "disabled"
    with pytest.raises(ConfigError, match="logger.wandb.mode"):
        resolve_wandb_mode("sometimes")


def test_wandb_logger_keeps_one_run_id_per_folder_and_drops_model_upload_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = wandb_logger(str(tmp_path), group="x4_blind", job_type="no_fusion", tags=["paper"], ablation="no_fusion",
                          log_model=True)  # fmt: skip
    assert logger._log_model is False and logger._wandb_init["mode"] == "offline"
    assert logger._wandb_init["tags"] == ["paper", "no_fusion"] and logger._wandb_init["name"] == "x4_blind-no_fusion"
    assert logger.version == run_id(tmp_path) == (tmp_path / RUN_ID_FILE).read_text().strip()
    assert wandb_logger(str(tmp_path)).version == logger.version
    assert wandb_logger(str(tmp_path / "other")).version != logger.version


# --------------------------------------------------------------------------------------------------------------------
# Mixed precision, progress bar, configs


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_with_fp32_simulation_and_metrics(compose_train, precision, one_thread):
    cfg = compose_train(*NARROW, *SMALL, "trainer.accelerator=cpu", f"trainer.precision={precision}",
                        "+trainer.fast_dev_run=true")  # fmt: skip
    datamodule, model, trainer = instantiate_all(cfg)
    assert trainer.precision == "bf16-mixed"  # 16-mixed falls back to bf16 on CPU
    seen: dict[str, list] = {"simulation": [], "network": [], "metrics": []}
    simulate = datamodule.degradation

    def simulation_spy(batch, seeds):
        out = simulate(batch, seeds)
        seen["simulation"].append((torch.is_autocast_enabled("cpu"), out["lr_raw"].dtype, out["hr_srgb"].dtype))
        return out

    datamodule.degradation = simulation_spy
    first_conv = next(m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda module, args, out: seen["network"].append(out.dtype))
    update = model.val_metrics.update
    model.val_metrics.update = lambda p, t: (seen["metrics"].append((p.dtype, t.dtype)), update(p, t))[1]
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 1
    assert seen["simulation"] and all(s == (False, torch.float32, torch.float32) for s in seen["simulation"])
    assert torch.bfloat16 in seen["network"]
    assert seen["metrics"] and all(m == (torch.float32, torch.float32) for m in seen["metrics"])
    assert torch.isfinite(torch.tensor(float(trainer.callback_metrics["val/psnr"])))


def test_progress_bar_is_rich_on_a_terminal_only():
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

    assert isinstance(progress_bar(stream=SimpleNamespace(isatty=lambda: True)), RichProgressBar)
    plain = progress_bar(stream=io.StringIO(), file_refresh_rate=25)
    assert isinstance(plain, TQDMProgressBar) and plain.refresh_rate == 25


def test_scale_configs_compose(compose_train):
    from lightning.pytorch.callbacks import ModelCheckpoint

    cfg = compose_train("trainer=ddp", "run_name=r1")
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.num_nodes) == ("gpu", "auto", 1)
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, HydraDDPStrategy) and strategy.pinned == {"run_name": "r1"}
    cfg = compose_train("trainer=ddp_sim")
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.strategy.process_group_backend) == (
        "cpu",
        2,
        "gloo",
    )

    cfg = compose_train("experiment=x4_blind", "ablation=no_fusion", "logger=many_loggers")
    assert set(cfg.logger) == {"csv", "tensorboard", "wandb"}
    assert (cfg.logger.wandb.group, cfg.logger.wandb.job_type) == ("x4_blind", "no_fusion")
    assert list(cfg.logger.wandb.tags) == ["paper", "x4", "blind"] and cfg.logger.wandb.ablation == "no_fusion"

    callbacks = [instantiate(c) for c in compose_train().callbacks.values()]
    checkpoints = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
    assert len(checkpoints) == 2 and all(c.save_last is True for c in checkpoints)
    assert {c.monitor for c in checkpoints} == {"val/psnr", "step"}
    assert sorted(c._every_n_train_steps for c in checkpoints) == [0, 500]

    cfg = compose_train("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.tasks_per_node == 4 and launcher.nodes == 1

    cfg = compose_train("hparams_search=optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert cfg.optimized_metric == "val/psnr" and "model.optimizer.lr" in sweeper.params


def test_csv_logger_keeps_the_rows_of_a_run_it_resumes(tmp_path):
    from rawsr.training.loggers import ResumableCSVLogger

    first = ResumableCSVLogger(tmp_path, name="csv", version="")
    first.log_metrics({"train/loss": 0.5}, step=0)
    first.log_metrics({"val/psnr": 20.0}, step=1)
    first.save()
    resumed = ResumableCSVLogger(tmp_path, name="csv", version="")
    resumed.log_metrics({"train/loss": 0.25, "lr": 1e-4}, step=2)
    resumed.save()
    with open(tmp_path / "csv" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    assert [r["train/loss"] for r in rows] == ["0.5", "", "0.25"] and rows[1]["val/psnr"] == "20.0"
    assert rows[2]["lr"] == "0.0001" and rows[0]["lr"] == ""
