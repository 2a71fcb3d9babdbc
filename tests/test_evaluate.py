"""``rawsr.evaluate``: the table's numbers equal an independent NumPy computation; protocols; failure paths."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from rawsr.config import ConfigError, config_dir
from rawsr.evaluate import build_datamodule, evaluate, luma_bt601, score
from rawsr.training import RawSRModule, load_checkpoint

NARROW = {"scale": 2, "width": 16, "growth": 8, "dense_layers": 2}


def save_checkpoint(path: Path, seed: int = 0, **net) -> Path:
    """A checkpoint as ``rawsr.train`` writes it: Lightning's state_dict and plain hyper-parameters."""
    torch.manual_seed(seed)
    module = RawSRModule(net={**NARROW, **net}, tile=32)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def numpy_psnr(prediction: np.ndarray, target: np.ndarray) -> float:
    mse = np.mean((np.clip(prediction, 0, 1).astype(np.float64) - target.astype(np.float64)) ** 2)
    return float(10 * np.log10(1.0 / mse))


def read_csv(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def demo_eval_cfg(compose_train, tmp_path):
    ckpt = save_checkpoint(tmp_path / "a.ckpt")

    def make(*overrides: str):
        return compose_train(
            f"ckpt_path={ckpt}",
            "data.num_workers=0",
            "data.val.val_crops=64",
            "data.val.val_samples=2",
            *overrides,
            config_name="evaluate",
        )

    return make, ckpt


def test_table_matches_independent_psnr(demo_eval_cfg):
    make, ckpt = demo_eval_cfg
    cfg = make()
    summary = evaluate(cfg)
    assert [row["model"] for row in summary] == ["bicubic", "a"]

    # Recompute every number from scratch: the same fixed validation images, PSNR in NumPy, mean over images.
    from rawsr.config import instantiate

    module = load_checkpoint(ckpt)
    assert "degradation" not in cfg  # null: the checkpoint's, and this one records none: the paper preset
    paper = OmegaConf.load(config_dir() / "degradation" / "paper.yaml")
    datamodule = instantiate(cfg.data, degradation=instantiate(paper, scale=2))
    datamodule.setup("validate")
    model_psnr, bicubic_psnr = [], []
    for batch in datamodule.val_dataloader():
        batch = datamodule.degrade(batch, training=False)
        output = module.super_resolve(batch, blend="mean")
        bicubic = F.interpolate(batch["lr_ref"], scale_factor=2, mode="bicubic")
        for i, target in enumerate(batch["hr_srgb"]):  # per image, whatever the loader's batch size
            target = target.permute(1, 2, 0).numpy()
            model_psnr.append(numpy_psnr(output[i].permute(1, 2, 0).numpy(), target))
            bicubic_psnr.append(numpy_psnr(bicubic[i].permute(1, 2, 0).numpy(), target))
    assert len(model_psnr) == summary[1]["images"] == 2
    assert summary[1]["psnr"] == pytest.approx(np.mean(model_psnr), abs=1e-4)
    assert summary[0]["psnr"] == pytest.approx(np.mean(bicubic_psnr), abs=1e-4)

    out = Path(cfg.paths.output_dir)
    rows = read_csv(out / "per_image.csv")
    assert len(rows) == 4 and {r["model"] for r in rows} == {"bicubic", "a"}
    assert [float(r["psnr"]) for r in read_csv(out / "summary.csv")] == pytest.approx(
        [summary[0]["psnr"], summary[1]["psnr"]], abs=1e-6
    )


def test_scores_do_not_depend_on_the_batch_size(demo_eval_cfg):
    """Batches of several validation images give one row per image, the rows of batches of one."""
    make, _ = demo_eval_cfg
    tables = {}
    for size in (1, 2):
        cfg = make(f"data.val_batch_size={size}")
        evaluate(cfg)
        rows = read_csv(Path(cfg.paths.output_dir) / "per_image.csv")
        tables[size] = {(r["model"], int(r["image"])): float(r["psnr"]) for r in rows}
    assert set(tables[2]) == {(model, image) for model in ("bicubic", "a") for image in (0, 1)}
    assert tables[1].keys() == tables[2].keys()
    for key, psnr in tables[1].items():
        assert tables[2][key] == pytest.approx(psnr, abs=1e-4)


def test_compare_limit_and_images(demo_eval_cfg, tmp_path):
    make, _ = demo_eval_cfg
    other = save_checkpoint(tmp_path / "b.ckpt", seed=1)
    cfg = make(f"compare=[{other}]", "limit=1", "save_images=true")
    summary = evaluate(cfg)
    assert [row["model"] for row in summary] == ["bicubic", "a", "b"]
    assert all(row["images"] == 1 for row in summary)
    assert summary[1]["psnr"] != summary[2]["psnr"]  # two different networks
    images = sorted(p.relative_to(cfg.paths.output_dir).as_posix() for p in Path(cfg.paths.output_dir).rglob("*.png"))
    assert images == ["images/a/0000.png", "images/b/0000.png", "images/bicubic/0000.png"]


def test_tta_and_border_pad_score_the_ensemble(demo_eval_cfg):
    """``tta`` and ``border_pad`` reach the tiled inference; the default is the paper's protocol (the table test)."""
    from rawsr.config import instantiate
    from rawsr.inference import super_resolve

    make, ckpt = demo_eval_cfg
    summary = evaluate(make("tta=true", "border_pad=4", "limit=1"))
    module = load_checkpoint(ckpt)
    paper = OmegaConf.load(config_dir() / "degradation" / "paper.yaml")
    cfg = make()
    datamodule = instantiate(cfg.data, degradation=instantiate(paper, scale=2))
    datamodule.setup("validate")
    batch = datamodule.degrade(next(iter(datamodule.val_dataloader())), training=False)
    target = batch["hr_srgb"][0].permute(1, 2, 0).numpy()
    outputs = {
        (tta, pad): super_resolve(module.net, batch["lr_raw"], batch["lr_ref"], 32, 2, tta=tta, pad=pad)
        for tta, pad in ((True, 4), (False, 0))
    }
    psnr = {k: numpy_psnr(v[0].permute(1, 2, 0).numpy(), target) for k, v in outputs.items()}
    assert summary[1]["images"] == 1
    assert summary[1]["psnr"] == pytest.approx(psnr[True, 4], abs=1e-4)
    assert abs(psnr[True, 4] - psnr[False, 0]) > 1e-3  # a different output than the paper's protocol


def test_basicsr_protocol_is_y_channel_with_border_crop():
    torch.manual_seed(0)
    target = torch.rand(1, 3, 40, 40)
    prediction = (target + 0.05 * torch.randn_like(target)).clamp(0, 1)
    prediction[..., :2, :] = 0  # damage only the border that BasicSR crops at x2
    y_p, y_t = luma_bt601(prediction)[..., 2:-2, 2:-2], luma_bt601(target)[..., 2:-2, 2:-2]
    expected = numpy_psnr(y_p.numpy(), y_t.numpy())
    assert score(prediction, target, 2, "basicsr")[0]["psnr"] == pytest.approx(expected, abs=1e-4)
    assert score(prediction, target, 2, "paper")[0]["psnr"] < expected - 1  # the damaged rows count there
    # Studio-range luma of white and black.
    assert luma_bt601(torch.ones(1, 3, 1, 1)).item() == pytest.approx(235 / 255, abs=1e-4)
    assert luma_bt601(torch.zeros(1, 3, 1, 1)).item() == pytest.approx(16 / 255)


def test_bad_inputs_name_the_key(demo_eval_cfg, tmp_path):
    make, _ = demo_eval_cfg
    with pytest.raises(ConfigError, match="ckpt_path.*missing.ckpt"):
        evaluate(make(f"ckpt_path={tmp_path / 'missing.ckpt'}"))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="ckpt_path.*junk.ckpt"):
        evaluate(make(f"ckpt_path={junk}"))
    with pytest.raises(ConfigError, match="protocol"):
        evaluate(make("protocol=y"))
    with pytest.raises(ConfigError, match="config key 'tta': expected true or false"):
        evaluate(make("tta=maybe"))
    with pytest.raises(ConfigError, match="config key 'border_pad': expected an even integer >= 0"):
        evaluate(make("border_pad=3"))
    x4 = save_checkpoint(tmp_path / "x4.ckpt", scale=4)
    with pytest.raises(ConfigError, match="compare.*x4"):
        evaluate(make(f"compare=[{x4}]"))


def degraded(datamodule, seed: int = 7) -> dict:
    """``datamodule``'s simulation applied to one fixed HR linear batch ``(1, 3, 64, 64)``, at validation seeds."""
    generator = torch.Generator().manual_seed(seed)
    batch = {
        "hr_linear": torch.rand(1, 3, 64, 64, generator=generator),
        "wb": torch.tensor([[2.0, 1.0, 1.7]]),
        "ccm": torch.eye(3)[None],
        "index": torch.tensor([0]),
    }
    return datamodule.degrade(batch, training=False)


def test_on_the_fly_sources_use_the_checkpoints_degradation(demo_eval_cfg, caplog):
    import logging

    from rawsr.config import instantiate

    make, ckpt = demo_eval_cfg
    cfg = make()
    presets = {name: OmegaConf.load(config_dir() / "degradation" / f"{name}.yaml") for name in ("paper", "brooks")}
    expected = {}
    for name, preset in presets.items():
        module = instantiate(make().data, degradation=instantiate(preset, scale=2))
        expected[name] = degraded(module)["lr_raw"]
    assert not torch.equal(expected["paper"], expected["brooks"])

    # A checkpoint without the hyper-parameter (rawsr 0.1.0): the paper preset, with a logged line.
    legacy = load_checkpoint(ckpt)
    with caplog.at_level(logging.INFO, logger="rawsr.evaluate"):
        lr_raw = degraded(build_datamodule(cfg, legacy))["lr_raw"]
    assert torch.equal(lr_raw, expected["paper"])
    assert "records no degradation" in caplog.text and "'paper' preset" in caplog.text

    # A checkpoint recording its simulation (a plain mapping, as resolved at training time): that one.
    recorded = load_checkpoint(ckpt)
    brooks = OmegaConf.to_container(make("degradation=brooks").degradation, resolve=True)
    recorded.hparams["degradation"] = {k: v for k, v in brooks.items() if k != "_target_"}
    assert torch.equal(degraded(build_datamodule(cfg, recorded))["lr_raw"], expected["brooks"])

    # degradation=NAME on the command line wins over the checkpoint's.
    lr_raw = degraded(build_datamodule(make("degradation=paper"), recorded))["lr_raw"]
    assert torch.equal(lr_raw, expected["paper"])
