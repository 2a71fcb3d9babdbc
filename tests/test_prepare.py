"""``python -m rawsr.prepare``: the raw-file cache (parallel, resumable, failures listed) and the fixed valset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rawsr.camera import write_dng
from rawsr.config import ConfigError, config_dir
from rawsr.data.raw_folder import entry_stem
from rawsr.data.release import ReleaseDataset, split_sample_name
from rawsr.prepare import prepare

REPO = Path(__file__).resolve().parents[1]


def compose_prepare(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("prepare", overrides=["progress=false", *overrides])


def make_raws(folder: Path, count: int) -> list[Path]:
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    return [
        write_dng(
            folder / ("sub" if i % 2 else "") / f"shot{i}.DNG", rng.integers(0, 4096, (96, 120)).astype(np.uint16)
        )
        for i in range(count)
    ]


def stamps(cache: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(cache.iterdir())}


@pytest.mark.slow
def test_cache_command_lists_bad_files_resumes_and_rebuilds_touched_ones(tmp_path):
    raws = make_raws(tmp_path / "raws", 3)
    bad = tmp_path / "raws" / "sub" / "corrupt.nef"
    bad.write_bytes(b"\x00" * 4096)
    cache = tmp_path / "cache"
    args = ["task=cache", f"input_dir={tmp_path / 'raws'}", f"cache_dir={cache}", "workers=2", "progress=false"]
    run = subprocess.run([sys.executable, "-m", "rawsr.prepare", *args], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    assert "3 written, 0 already valid, 1 unreadable" in run.stdout
    assert f"skipped {bad}: LibRaw cannot decode" in run.stdout
    assert sorted(p.name for p in cache.glob("*.json")) == sorted(f"{entry_stem(r)}.json" for r in raws)
    assert not (tmp_path / ".hydra").exists() and not list(tmp_path.glob("*.log"))

    before = stamps(cache)
    assert prepare(compose_prepare(*args)) == 1  # the bad file still fails
    assert stamps(cache) == before  # nothing rewritten
    st = raws[1].stat()
    os.utime(raws[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    bad.unlink()
    assert prepare(compose_prepare(*args)) == 0
    after = stamps(cache)
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {f"{entry_stem(raws[1])}.npy", f"{entry_stem(raws[1])}.json"}


def test_cache_task_refuses_bad_config(tmp_path):
    with pytest.raises(ConfigError, match="'task' is not set"):
        prepare(compose_prepare())
    with pytest.raises(ConfigError, match="'task'"):
        prepare(compose_prepare("task=bake"))
    with pytest.raises(ConfigError, match="'input_dir' is not set"):
        prepare(compose_prepare("task=cache", f"cache_dir={tmp_path}"))
    with pytest.raises(ConfigError, match="'input_dir'.*existing folder.*nowhere"):
        prepare(compose_prepare("task=cache", f"input_dir={tmp_path / 'nowhere'}", f"cache_dir={tmp_path}"))
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"")
    with pytest.raises(ConfigError, match="'input_dir'.*holding raw files"):
        prepare(compose_prepare("task=cache", f"input_dir={tmp_path / 'photos'}", f"cache_dir={tmp_path}"))
    with pytest.raises(ConfigError, match="recipe.dtype"):
        prepare(
            compose_prepare(
                "task=cache", f"input_dir={REPO}", f"cache_dir={tmp_path}", "recipe.dtype=float64", "extensions=[.toml]"
            )
        )


def test_valset_from_the_demo_matches_on_the_fly_validation(tmp_path):
    from hydra.utils import instantiate

    from rawsr.data import RawSRDataModule
    from rawsr.data.demo import DemoImages

    out = tmp_path / "valset"
    cfg = compose_prepare("task=valset", f"valset.out_dir={out}", "valset.source=demo", "valset.num_images=2")
    assert prepare(cfg) == 0
    ds = ReleaseDataset(out, scale=2, crop=64, split="val")
    assert len(ds) == 2 and ds.has_linear

    # The data module's validation path, with the same preset and val_seed, draws exactly the same degradation.
    source = DemoImages(split="val", scale=2, crop=64, val_crops=cfg.valset.val_crops)
    module = RawSRDataModule(
        train=None,
        val=None,
        scale=2,
        crop=64,
        val_seed=cfg.valset.seed,
        degradation=instantiate(cfg.degradation, scale=2),
    )
    for i in range(2):
        item = source[i]
        batch = {k: item[k][None] for k in ("hr_linear", "wb", "ccm")} | {"index": torch.tensor([i])}
        expected = module.degrade(batch, training=False)
        stored = ds[[split_sample_name(p.stem)[0] for p in ds.lr_files].index(f"{i:04d}_demo_")]
        torch.testing.assert_close(stored["lr_raw"], expected["lr_raw"][0])
        torch.testing.assert_close(stored["hr_srgb"], expected["hr_srgb"][0].clamp(0, 1))
        torch.testing.assert_close(stored["hr_linear"], expected["hr_linear"][0])
        # The reference is JPEG-compressed once, by the simulation, and stored losslessly: read back bit-exact.
        assert torch.equal(stored["lr_ref"], expected["lr_ref"][0])
    assert sorted(p.suffix for p in (out / "ISP").iterdir()) == [".png", ".png"]

    with pytest.raises(ConfigError, match="valset.out_dir.*already holds a dataset"):
        prepare(cfg)


def test_valset_from_a_raw_folder_cache(tmp_path):
    raws = make_raws(tmp_path / "raws", 5)
    cache = tmp_path / "cache"
    assert prepare(compose_prepare("task=cache", f"input_dir={tmp_path / 'raws'}", f"cache_dir={cache}")) == 0
    base = ("task=valset", f"cache_dir={cache}", "valset.crop=16", "valset.val_crops=16", "valset.val_fraction=0.4")
    with pytest.raises(ConfigError, match=r"valset\.num_images.*1\.\.2"):
        prepare(compose_prepare(*base, f"valset.out_dir={tmp_path / 'a'}", "valset.num_images=150"))
    assert prepare(compose_prepare(*base, f"valset.out_dir={tmp_path / 'b'}", "valset.num_images=null")) == 0
    ds = ReleaseDataset(tmp_path / "b", scale=2, crop=16, split="val")
    assert len(ds) == 2 and ds[0]["lr_raw"].shape == (1, 16, 16) and ds[0]["hr_srgb"].shape == (3, 32, 32)
    stems = {split_sample_name(p.stem)[0] for p in ds.lr_files}
    assert all(any(f"_{r.stem}_" in s for r in raws) for s in stems)
    with pytest.raises(ConfigError, match="valset.out_dir' is not set"):
        prepare(compose_prepare(*base))


def test_valset_errors_name_the_valset_keys(tmp_path):
    out = f"valset.out_dir={tmp_path / 'v'}"
    with pytest.raises(ConfigError, match=r"config key 'valset\.val_crops': expected a multiple of 4"):
        prepare(compose_prepare("task=valset", out, "valset.source=demo", "valset.val_crops=30"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"config key 'cache_dir': no prepared cache"):
        prepare(compose_prepare("task=valset", out, f"cache_dir={tmp_path / 'empty'}"))
    with pytest.raises(
        ConfigError, match=r"config key 'valset\.device': expected auto, cpu, cuda or cuda:N, got 'gpu'"
    ):
        prepare(compose_prepare("task=valset", out, "valset.source=demo", "valset.device=gpu"))


def test_valset_bad_key_exits_2_with_one_line(tmp_path):
    command = [sys.executable, "-m", "rawsr.prepare", "task=valset", f"valset.out_dir={tmp_path / 'v'}"]
    run = subprocess.run([*command, "valset.source=demo", "valset.val_crops=30"], capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "config key 'valset.val_crops'" in lines[0], lines
