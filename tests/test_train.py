"""The spine end to end on the embedded demo data: fast_dev_run, a short run with checkpoints, learning."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf, open_dict
from torch import nn

from rawsr.config import ConfigError, instantiate
from rawsr.train import instantiate_all, train
from rawsr.training import RawSRModule, load_checkpoint

NARROW = ("model.net.width=16", "model.net.growth=8", "model.net.dense_layers=2")
SMALL_DATA = (
    "data.crop=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.val.val_crops=64",
    "data.val.val_samples=2",
    "trainer.check_val_every_n_epoch=1",
)


FAST_DEV_RUN = ("+trainer.fast_dev_run=true", "~logger", "~callbacks")


def fast_dev_fit(cfg) -> None:
    """One training and one validation batch of ``cfg``; both must run and report the validation metrics."""
    datamodule, model, trainer = instantiate_all(cfg)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 1
    assert "val/psnr" in trainer.callback_metrics and "val/psnr_bicubic" in trainer.callback_metrics


def test_fast_dev_run(compose_train):
    fast_dev_fit(compose_train(*NARROW, *SMALL_DATA, *FAST_DEV_RUN))


@pytest.mark.slow
def test_short_demo_run_writes_checkpoint_and_metrics(compose_train, tmp_path):
    cfg = compose_train(
        *NARROW,
        *SMALL_DATA,
        "data.train.samples_per_epoch=16",
        "trainer.max_epochs=2",
        "run_name=short",
    )
    psnr = train(cfg)
    assert psnr is not None and 5 < psnr < 60
    ckpt_dir = Path(cfg.paths.ckpt_dir)
    assert (ckpt_dir / "last.ckpt").is_file()
    module = load_checkpoint(ckpt_dir / "last.ckpt")
    assert isinstance(module, RawSRModule) and module.tile == 32 and module.scale == 2
    last = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert (last["global_step"], last["epoch"]) == (8, 2)  # the final state, whichever epoch was best
    raw_state = last["state_dict"]
    for key, value in module.state_dict().items():
        assert torch.equal(value, raw_state[key]), key
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    val_rows = [r for r in rows if r.get("val/psnr")]
    assert len(val_rows) == 2 and all(r["val/psnr_bicubic"] for r in val_rows)
    # A second run under the same name must not silently overwrite the first.
    from rawsr.config import ConfigError

    with pytest.raises(ConfigError, match="resume=true"):
        train(cfg)


class TinyNet(nn.Module):
    """Another architecture with RawSRNet's interface: the mosaic and the reference upsampled bilinearly, then two
    3x3 convolutions. ``raw (B, 1, H, W)``, ``ref (B, 3, H, W)`` -> ``{"srgb", "linear"}`` ``(B, 3, sH, sW)``."""

    SIZE_MULTIPLE = 2

    def __init__(self, scale: int, channels: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(nn.Conv2d(4, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, 3, 3, padding=1))

    def forward(self, raw, ref, wb=None, ccm=None) -> dict[str, torch.Tensor]:
        up = F.interpolate(torch.cat([raw, ref], 1), scale_factor=self.scale, mode="bilinear", align_corners=False)
        linear = self.body(up)
        return {"srgb": up[:, 1:] + linear, "linear": linear}


TINY_NET = {"_target_": "test_train.TinyNet", "scale": "${data.scale}", "channels": 4}


def test_another_architecture_from_config_builds_and_trains(compose_train):
    cfg = compose_train(*SMALL_DATA, *FAST_DEV_RUN)
    with open_dict(cfg):
        cfg.model.net = TINY_NET
    datamodule, model, trainer = instantiate_all(cfg)
    assert type(model.net) is TinyNet and model.scale == 2
    assert model.hparams["net"] == {**TINY_NET, "scale": 2} and type(model.hparams["net"]) is dict
    before = [p.detach().clone() for p in model.net.parameters()]
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 1 and "val/psnr" in trainer.callback_metrics
    assert all(not torch.equal(a, b) for a, b in zip(before, model.net.parameters(), strict=True))


def test_a_network_mapping_without_target_is_rawsrnet():
    from rawsr.model import RawSRNet

    module = RawSRModule(net={"scale": 4, "width": 8, "growth": 4, "dense_layers": 1}, tile=16)
    assert type(module.net) is RawSRNet and module.scale == 4 and module.net.restoration.scale == 4


def test_the_tile_must_be_a_multiple_of_the_networks_size_multiple():
    narrow = {"_target_": "rawsr.model.RawSRNet", "scale": 2, "width": 8, "growth": 4, "dense_layers": 1}
    with pytest.raises(ConfigError, match=r"'model\.tile \(data\.crop\)': expected a positive multiple of 4.*got 30"):
        RawSRModule(net=narrow, tile=30)
    assert RawSRModule(net={"_target_": "test_train.TinyNet", "scale": 2}, tile=30).tile == 30  # TinyNet: 2


@pytest.mark.parametrize(
    "net,message",
    [
        ({"_target_": "torch.nn.Identity"}, r"'model\.net\._target_': .*attribute 'scale', got 'torch\.nn\.Identity'"),
        ({"_target_": "rawsr.model.NoSuchNet"}, r"'model\.net': rawsr\.model\.NoSuchNet did not build"),
        ({"_target_": "rawsr.model.RawSRNet", "width": -1}, r"'model\.net': .*'width': expected a positive integer"),
    ],
)
def test_a_network_that_does_not_fit_is_refused_naming_model_net(net, message):
    with pytest.raises(ConfigError, match=message):
        RawSRModule(net=net, tile=32)


def test_the_composed_simulation_is_recorded_in_the_hyper_parameters(compose_train):
    cfg = compose_train(*NARROW, *SMALL_DATA)
    recorded = instantiate(cfg.model).hparams["degradation"]
    assert recorded == OmegaConf.to_container(cfg.degradation, resolve=True)
    assert recorded["_target_"] == "rawsr.degradation.Degradation" and recorded["scale"] == 2
    buffer = io.BytesIO()
    torch.save({"hyper_parameters": {"degradation": recorded}}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["hyper_parameters"]["degradation"] == recorded
    assert instantiate(compose_train(*NARROW, *SMALL_DATA, "~degradation").model).hparams["degradation"] is None


def test_loss_halves_on_one_fixed_batch(compose_train):
    cfg = compose_train(*SMALL_DATA, "model.net.width=32", "model.net.growth=8", "model.net.dense_layers=4")
    torch.manual_seed(0)
    datamodule, model, _ = instantiate_all(cfg)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    batch = datamodule.degrade(batch, training=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(100):
        optimizer.zero_grad()
        loss = model.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-5:]) <= 0.5 * losses[0], (losses[0], losses[-5:])


def test_cli_help_lists_config_groups():
    result = subprocess.run(
        [sys.executable, "-m", "rawsr.train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    for group in ("data", "degradation", "model", "trainer", "experiment", "logger", "callbacks"):
        assert f"\n  {group}=" in result.stdout, group


def _smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random colour image ``(h, w, 3)`` in [0.05, 0.95] (structure a network can learn)."""
    coarse = rng.uniform(0.05, 0.95, (h // 16 + 2, w // 16 + 2, 3))
    rows = np.interp(np.arange(h) / 16, np.arange(coarse.shape[0]), np.arange(coarse.shape[0]))
    cols = np.interp(np.arange(w) / 16, np.arange(coarse.shape[1]), np.arange(coarse.shape[1]))
    r0, c0 = rows.astype(int), cols.astype(int)
    return coarse[r0][:, c0].astype(np.float32)


def test_trains_from_a_prepared_raw_folder(compose_train, tmp_path):
    from rawsr.camera import write_dng
    from rawsr.data.raw_folder import CacheRecipe, prepare_cache

    rng = np.random.default_rng(0)
    raws = tmp_path / "raws"
    raws.mkdir()
    for i in range(4):
        mosaic = (_smooth_image(rng, 320, 320)[..., 1] * 4000 + 64).astype(np.uint16)
        write_dng(raws / f"shot{i}.dng", mosaic, cfa="RGGB", black_level=64, white_level=4095, wb=(2.0, 1.0, 1.6))
    report = prepare_cache(sorted(raws.glob("*.dng")), tmp_path / "cache", CacheRecipe())
    assert not report.failed
    cfg = compose_train(
        "data=raw_folder",
        f"data.root={raws}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.val.val_crops=32",
        "data.train.val_files=[shot0]",
        *NARROW,
        *SMALL_DATA[:3],
        *FAST_DEV_RUN,
    )
    fast_dev_fit(cfg)


def release_layout(root: Path) -> Path:
    """A tiny dataset in the released layout (two images of two samples per split, no linear targets)."""
    from rawsr.data.release import write_release_sample

    rng = np.random.default_rng(1)
    for split in ("TRAINING", "TESTING"):
        for g in range(2):
            hr = _smooth_image(rng, 128, 128).transpose(2, 0, 1)
            for sample in range(2):
                lr_raw = rng.uniform(0, 1, (64, 64)).astype(np.float32)
                lr_ref = hr[:, ::2, ::2]
                write_release_sample(root / split, f"img{g}", sample, lr_raw, lr_ref, hr)
    return root


def test_trains_from_the_release_layout(compose_train, tmp_path):
    release_layout(tmp_path / "Blind_x2")
    cfg = compose_train(
        "data=rawsr_release",
        f"data.root={tmp_path / 'Blind_x2'}",
        "model.linear_loss_weight=0",  # the released pairs hold no linear target (the demo's default is 1)
        *NARROW,
        *SMALL_DATA[:3],
        *FAST_DEV_RUN,
    )
    fast_dev_fit(cfg)


def test_a_linear_loss_without_linear_targets_names_the_key(compose_train, tmp_path):
    release_layout(tmp_path / "Blind_x2")
    cfg = compose_train(
        "data=rawsr_release", f"data.root={tmp_path / 'Blind_x2'}", *NARROW, *SMALL_DATA[:3], *FAST_DEV_RUN
    )
    with pytest.raises(ConfigError, match=r"'model.linear_loss_weight': 1.0 needs .* set model.linear_loss_weight=0"):
        fast_dev_fit(cfg)


def test_one_seed_gives_one_data_stream_whatever_the_architecture(compose_train, monkeypatch):
    """Ablations are compared seed by seed: building a different network must not shift the training data."""
    seen: dict[str, list[torch.Tensor]] = {}
    original = RawSRModule.training_step

    def recording(self, batch, batch_idx):
        seen.setdefault(self.hparams.net["_target_"] + str(self.hparams.net["width"]), []).append(batch["lr_raw"])
        return original(self, batch, batch_idx)

    monkeypatch.setattr(RawSRModule, "training_step", recording)
    quick = (*SMALL_DATA, "data.train.samples_per_epoch=8", "trainer.max_epochs=1", "~logger", "~callbacks")
    for width in (8, 16):  # a different number of parameters drawn from the generator before training starts
        cfg = compose_train(*quick, f"model.net.width={width}", "model.net.growth=4", "model.net.dense_layers=1")
        train(cfg)
    first, second = seen.values()
    assert len(first) == len(second) == 2
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
