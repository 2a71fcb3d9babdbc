"""The demo's fixed validation set and the epoch figures: identical across processes, standard errors as NumPy
computes them, the verdict against bicubic in words."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from rawsr.data.demo import DemoImages, dihedral_view
from rawsr.training.module import mean_and_standard_error, summarise, verdict

#: Builds the demo validation set as the data module does, degrades it with the paper's simulation and prints one
#: digest of every tensor (HR linear, camera, LR mosaic, LR reference, HR sRGB).
DIGEST = """
import hashlib, torch
from omegaconf import OmegaConf
from rawsr.config import config_dir, instantiate
from rawsr.data.demo import DemoImages
torch.set_num_threads({threads})
cfg = OmegaConf.load(f"{{config_dir()}}/degradation/paper.yaml")
cfg.scale = 2
simulate = instantiate(cfg)
val = DemoImages("val", scale=2, crop=32, val_crops=32, val_samples=12)
items = [val[i] for i in range(len(val))]
batch = {{k: torch.stack([torch.as_tensor(x[k]) for x in items]) for k in ("hr_linear", "wb", "ccm", "index")}}
out = simulate(batch, batch["index"].to(torch.int64) + 20210201)
digest = hashlib.sha256()
for key in ("hr_linear", "wb", "ccm"):
    digest.update(batch[key].numpy().tobytes())
for key in ("lr_raw", "lr_ref", "hr_srgb"):
    digest.update(out[key].numpy().tobytes())
print(digest.hexdigest())
"""


def test_validation_set_is_bit_for_bit_identical_across_processes():
    digests = set()
    for threads in (1, 2):
        code = DIGEST.format(threads=threads)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        digests.add(done.stdout.strip())
    assert len(digests) == 1


def test_validation_crops_are_distinct_fixed_and_held_out():
    val = DemoImages("val", scale=2, crop=32, val_crops=32, val_samples=150)
    assert len(val) == 150
    first = [val[i]["hr_linear"] for i in range(16)]
    again = [val[i]["hr_linear"] for i in range(16)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    digests = {hashlib.sha256(x.numpy().tobytes()).hexdigest() for x in first}
    assert len(digests) == 16  # every item is its own crop, flip, camera and exposure
    assert all(x.shape == (3, 64, 64) for x in first)


def test_dihedral_views_are_the_eight_distinct_symmetries():
    image = torch.arange(2 * 5 * 5, dtype=torch.float32).reshape(2, 5, 5)
    views = [dihedral_view(image, k) for k in range(8)]
    assert len({v.numpy().tobytes() for v in views}) == 8
    np.testing.assert_array_equal(views[1].numpy(), np.rot90(image.numpy(), 1, axes=(1, 2)))
    np.testing.assert_array_equal(views[4].numpy(), image.numpy().transpose(0, 2, 1))


def test_standard_error_equals_numpy():
    rng = np.random.default_rng(0)
    values = rng.normal(24.0, 1.5, size=150)
    mean, error = mean_and_standard_error(torch.tensor(values, dtype=torch.float32))
    assert float(mean) == pytest.approx(values.mean(), abs=1e-5)
    assert float(error) == pytest.approx(values.std(ddof=1) / np.sqrt(values.size), rel=1e-5)
    assert torch.isnan(mean_and_standard_error(torch.tensor([3.0]))[1])


def test_summary_gives_paired_gain_over_bicubic():
    rng = np.random.default_rng(1)
    bicubic = rng.normal(24.0, 2.0, size=40)
    model = bicubic + rng.normal(0.5, 0.1, size=40)  # correlated: the paired error is far below the unpaired one
    ssim = rng.uniform(0.5, 0.9, size=40)
    figures = summarise(
        {"val/psnr": torch.tensor(model), "val/ssim": torch.tensor(ssim)},
        {"val/psnr_bicubic": torch.tensor(bicubic), "val/ssim_bicubic": torch.tensor(ssim)},
    )
    gain = model - bicubic
    assert float(figures["val/psnr_gain"]) == pytest.approx(gain.mean(), abs=1e-5)
    assert float(figures["val/psnr_gain_se"]) == pytest.approx(gain.std(ddof=1) / np.sqrt(40), rel=1e-4)
    assert float(figures["val/psnr_bicubic_se"]) == pytest.approx(bicubic.std(ddof=1) / np.sqrt(40), rel=1e-4)
    assert float(figures["val/psnr_gain_se"]) < float(figures["val/psnr_se"]) / 5


@pytest.mark.parametrize(
    ("gain", "error", "words"),
    [(0.7, 0.03, "beats bicubic by 0.70 dB"), (-2.0, 0.1, "is 2.00 dB below bicubic"), (0.05, 0.04, "level with")],
)
def test_verdict_in_words(gain, error, words):
    metrics = {"val/psnr": 25.0, "val/psnr_bicubic": 25.0 - gain, "val/psnr_gain": gain, "val/psnr_gain_se": error}
    assert words in verdict(metrics)
    assert verdict({"val/psnr": 25.0}) is None
