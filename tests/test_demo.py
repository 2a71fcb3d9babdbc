"""The embedded demo data: linear camera-RGB crops of scikit-image's photographs, with sensor clipping."""

from __future__ import annotations

import pytest
import torch

from rawsr.config import ConfigError
from rawsr.data.demo import TRAIN_IMAGES, VAL_IMAGES, DemoImages
from rawsr.imaging import render_srgb


def test_splits_are_disjoint_and_validation_is_fixed():
    assert not set(TRAIN_IMAGES) & set(VAL_IMAGES)
    val = DemoImages("val", scale=2, crop=16, val_crops=32)
    assert len(val) == len(VAL_IMAGES)
    a, b = val[1], val[1]
    assert a["hr_linear"].shape == (3, 64, 64) and a["wb"].shape == (3,) and a["ccm"].shape == (3, 3)
    assert torch.equal(a["hr_linear"], b["hr_linear"]) and torch.equal(a["wb"], b["wb"])
    train = DemoImages("train", scale=2, crop=16, samples_per_epoch=5)
    assert len(train) == 5 and train[0]["hr_linear"].shape == (3, 32, 32)


def test_exposure_gain_is_uniform_over_the_crop_and_clips_at_white():
    base = DemoImages("val", scale=2, crop=64, val_crops=128, exposure=[1.0, 1.0])
    bright = DemoImages("val", scale=2, crop=64, val_crops=128, exposure=[1.0, 4.0])
    for i in range(len(base)):
        x, y = base[i], bright[i]
        assert torch.equal(x["wb"], y["wb"]) and torch.equal(x["ccm"], y["ccm"])  # the gain is drawn after
        lin, out = x["hr_linear"], y["hr_linear"]
        assert out.min() >= 0 and out.max() <= 1
        unclipped = (out < 1) & (lin > 0.05)
        gain = out[unclipped] / lin[unclipped]
        assert 1.0 <= gain.mean() <= 4.0 and (gain - gain.mean()).abs().max() < 1e-5  # one gain per crop
        torch.testing.assert_close(out[~unclipped & (lin > 0.05)], torch.ones_like(out[~unclipped & (lin > 0.05)]))


def test_clipped_highlights_render_white():
    """An 8-bit photograph's white stays below the sensor's white in red and blue; a gain of 4 saturates it."""
    kwargs = dict(split="val", scale=2, crop=64, val_crops=128, images=["astronaut"])
    for exposure, saturated in (([1.0, 1.0], False), ([4.0, 4.0], True)):
        item = DemoImages(exposure=exposure, **kwargs)[0]
        lin = item["hr_linear"][None]
        all_clipped = (lin == 1).all(dim=1)
        assert bool(all_clipped.any()) == saturated
        if saturated:
            srgb = render_srgb(lin, item["wb"][None], item["ccm"][None])
            white = srgb.permute(0, 2, 3, 1)[all_clipped]
            torch.testing.assert_close(white, torch.ones_like(white))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"exposure": [0.5, 2.0]}, "data.val.exposure"),
        ({"exposure": [2.0, 1.0]}, "data.val.exposure"),
        ({"val_crops": 30}, "data.val.val_crops"),
        ({"images": ["not_an_image"]}, "data.val.images"),
    ],
)
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        DemoImages("val", scale=2, crop=16, **{"val_crops": 32, **kwargs})
