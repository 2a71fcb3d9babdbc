"""A checkpoint written by rawsr 0.1.0 (tests/data/legacy) still loads and gives the outputs it gave then.

The fixture was written by ``python -m rawsr.train`` of release 0.1.0 (a narrow network, width 8, trained for 96
steps on the demo data, scale 2, crop 16); the expected outputs beside it were computed by that release: the
network's forward pass on seeded inputs, ``rawsr.predict`` on a synthetic DNG and ``rawsr.evaluate`` on the first two
demo validation images.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_predict import read_png

from rawsr.camera import write_dng

LEGACY = Path(__file__).parent / "data" / "legacy"
CKPT = LEGACY / "rawsr-0.1.0.ckpt"


def synthetic_dng(folder: Path) -> Path:
    """The synthetic raw file the expected prediction was made from (seeded)."""
    rng = np.random.default_rng(7)
    mosaic = (rng.random((72, 88)) * 3000 + 500).astype(np.uint16)
    return write_dng(folder / "synthetic.dng", mosaic, white_level=4095, wb=(2.0, 1.0, 1.6))


def test_legacy_checkpoint_forward_is_unchanged():
    from rawsr.training import load_checkpoint

    module = load_checkpoint(CKPT)
    expected = np.load(LEGACY / "expected_forward.npz")
    with torch.no_grad():
        out = module(torch.from_numpy(expected["raw"]), torch.from_numpy(expected["ref"]))
    for key in ("srgb", "linear"):
        np.testing.assert_allclose(out[key].numpy(), expected[key], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_legacy_checkpoint_predicts_the_same_image(tmp_path):
    dng = synthetic_dng(tmp_path)
    command = [sys.executable, "-m", "rawsr.predict", f"ckpt_path={CKPT}", f"input={dng}"]
    command += [f"output_dir={tmp_path / 'out'}", "device=cpu", "preview=false", "progress=false"]
    command += ["border_pad=0", "overlap=null"]  # 0.1.0 tiled the photo as it is, with half-tile overlap
    subprocess.run(command, check=True, capture_output=True, text=True)
    produced = read_png(tmp_path / "out" / "synthetic_x2.png")
    expected = read_png(LEGACY / "expected_synthetic_x2.png")
    assert produced.dtype == np.uint16 and produced.shape == expected.shape == (144, 176, 3)
    assert np.abs(produced.astype(np.int64) - expected.astype(np.int64)).max() <= 1


@pytest.mark.slow
def test_legacy_checkpoint_evaluates_the_same_scores(tmp_path):
    command = [sys.executable, "-m", "rawsr.evaluate", f"ckpt_path={CKPT}", "limit=2", "device=cpu"]
    command += [f"hydra.run.dir={tmp_path / 'eval'}", "data.num_workers=0"]
    command += ["data.val.val_samples=null", "data.val.val_crops=128"]  # 0.1.0: the 128-pixel centre crops
    subprocess.run(command, check=True, capture_output=True, text=True)

    def rows(path: Path) -> dict[str, tuple[float, float]]:
        with open(path, newline="") as handle:
            return {r["model"]: (float(r["psnr"]), float(r["ssim"])) for r in csv.DictReader(handle)}

    produced, expected = rows(tmp_path / "eval" / "summary.csv"), rows(LEGACY / "expected_evaluate.csv")
    assert produced.keys() == expected.keys() == {"bicubic", "rawsr-0.1.0"}
    for model, (psnr, ssim) in expected.items():
        assert produced[model][0] == pytest.approx(psnr, abs=1e-4)
        assert produced[model][1] == pytest.approx(ssim, abs=1e-5)
