"""Blurring with per-image kernels and downsampling, separately and fused."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from scipy import ndimage

from rawsr.degradation import blur, blur_downsample, downsample, motion_kernel
from rawsr.degradation.resample import DOWNSAMPLE_MODES


def test_blur_is_a_convolution_with_reflect_padding():
    x = torch.rand(2, 3, 20, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    k = motion_kernel(torch.Generator().manual_seed(6), 2, 7, (3.0, 4.0)).double()  # asymmetric: conv != corr
    y = blur(x, k)
    for b in range(2):
        for c in range(3):
            # scipy's 'mirror' is torch's 'reflect' (edge sample not repeated).
            ref = ndimage.convolve(x[b, c].numpy(), k[b].numpy(), mode="mirror")
            np.testing.assert_allclose(y[b, c].numpy(), ref, atol=1e-12)


def test_area_downsample_is_a_block_mean():
    x = torch.rand(2, 3, 12, 18, dtype=torch.float64)
    out = downsample(x, 3, "area").numpy()
    np.testing.assert_allclose(out, x.numpy().reshape(2, 3, 4, 3, 6, 3).mean((3, 5)), atol=1e-14)
    assert torch.equal(downsample(x, 3, "stride"), x[..., ::3, ::3])
    assert downsample(x, 3, "bicubic").shape == (2, 3, 4, 6)
    with pytest.raises(ValueError, match="mode must be one of"):
        downsample(x, 2, "nearest")


@pytest.mark.parametrize("mode", ["area", "stride", "bicubic"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_fused_blur_downsample_equals_blur_then_downsample(mode, scale):
    x = torch.rand(3, 3, 12 * scale, 8 * scale, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    k = motion_kernel(torch.Generator().manual_seed(8), 3, 9, (2.0, 6.0)).double()
    fused = blur_downsample(x, k, scale, mode)
    torch.testing.assert_close(fused, downsample(blur(x, k), scale, mode), atol=1e-12, rtol=0)


def test_bad_inputs_raise_clear_errors():
    x = torch.rand(2, 3, 8, 8)
    k = motion_kernel(torch.Generator().manual_seed(9), 2, 5, (1.0, 2.0))
    with pytest.raises(ValueError, match=re.escape(f"blur_downsample: mode must be one of {DOWNSAMPLE_MODES}")):
        blur_downsample(x, k, 2, "nearest")
    with pytest.raises(ValueError, match=r"blur: expected x \(B, C, H, W\) and kernels \(B, k, k\)"):
        blur(x, k[:1])
    with pytest.raises(ValueError, match=r"blur_downsample: expected x \(B, C, H, W\)"):
        blur_downsample(x[0], k, 2)
