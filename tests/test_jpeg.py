"""JPEG compression of the colour reference: libjpeg (exact files) and kornia's batched codec."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import skimage.data
import torch

from rawsr.config import ConfigError
from rawsr.degradation import Degradation
from rawsr.degradation.jpeg import jpeg_compress, resolve_codec


def _photos(n: int) -> torch.Tensor:
    image = torch.from_numpy(skimage.data.astronaut()[64:320, 128:384].copy()).permute(2, 0, 1).float() / 255
    return torch.stack([image.roll(37 * i, dims=-1) for i in range(n)])


def test_libjpeg_equals_a_jpeg_file_written_and_read_back(tmp_path):
    images, quality = _photos(3), torch.tensor([20.0, 60.4, 95.0])
    out = jpeg_compress(images, quality, "libjpeg")
    assert out.shape == images.shape and out.dtype == images.dtype
    for i, q in enumerate((20, 60, 95)):
        path = tmp_path / f"{i}.jpg"
        pixels = np.round(images[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        iio.imwrite(path, pixels, quality=q)
        expected = iio.imread(path).astype(np.float32) / 255
        np.testing.assert_array_equal(out[i].permute(1, 2, 0).numpy(), expected)


@pytest.mark.parametrize("codec", ["libjpeg", "kornia"])
def test_lower_quality_loses_more(codec):
    images = _photos(1).expand(3, -1, -1, -1)
    out = jpeg_compress(images, torch.tensor([20.0, 60.0, 95.0]), codec)
    errors = (out - images).abs().mean(dim=(1, 2, 3))
    assert errors[0] > errors[1] > errors[2] > 0
    assert out.min() >= 0 and out.max() <= 1


def test_the_two_codecs_agree_closely():
    images, quality = _photos(3), torch.tensor([30.0, 75.0, 95.0])
    exact, batched = jpeg_compress(images, quality, "libjpeg"), jpeg_compress(images, quality, "kornia")
    err_exact = (exact - images).abs().mean(dim=(1, 2, 3))
    err_batched = (batched - images).abs().mean(dim=(1, 2, 3))
    torch.testing.assert_close(err_batched, err_exact, rtol=0.2, atol=0)
    assert ((exact - batched).abs().mean(dim=(1, 2, 3)) < 0.5 * err_exact).all()


def test_auto_picks_libjpeg_on_the_cpu_only():
    assert resolve_codec("auto", torch.device("cpu")) == "libjpeg"
    assert resolve_codec("auto", torch.device("cuda", 0)) == "kornia"
    assert resolve_codec("kornia", torch.device("cpu")) == "kornia"
    with pytest.raises(ValueError, match="jpeg codec"):
        resolve_codec("turbo", torch.device("cpu"))


def test_bad_shapes_and_config_are_refused():
    with pytest.raises(ValueError, match="quality must be"):
        jpeg_compress(_photos(2), torch.tensor([90.0]))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        jpeg_compress(_photos(1)[:, :1], torch.tensor([90.0]))
    kernel = {"mode": "nonblind", "size": 3, "fixed": {"family": "gaussian", "sigma": 0.5}}
    noise = {"profiles": {"uniform": {"shot": 1e-4, "read": 1e-6}}}
    with pytest.raises(ConfigError, match=r"degradation\.reference\.jpeg_codec"):
        Degradation(2, kernel, noise, reference={"jpeg": [80, 90], "jpeg_codec": "pillow"})
