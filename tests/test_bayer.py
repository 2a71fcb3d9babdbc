"""RGGB sampling, the packed raw layout and the demosaic's CFA naming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kornia.color import CFA, raw_to_rgb

from rawsr.imaging import demosaic, mosaic_rggb, pack_raw, unpack_raw


def _rgb(b=2, h=6, w=8, seed=0, dtype=torch.float32):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_each_colour_lands_on_its_rggb_site():
    x = _rgb()
    m = mosaic_rggb(x).numpy()
    xn = x.numpy()
    assert m.shape == (2, 1, 6, 8)
    np.testing.assert_array_equal(m[:, 0, 0::2, 0::2], xn[:, 0, 0::2, 0::2])  # R
    np.testing.assert_array_equal(m[:, 0, 0::2, 1::2], xn[:, 1, 0::2, 1::2])  # G (red rows)
    np.testing.assert_array_equal(m[:, 0, 1::2, 0::2], xn[:, 1, 1::2, 0::2])  # G (blue rows)
    np.testing.assert_array_equal(m[:, 0, 1::2, 1::2], xn[:, 2, 1::2, 1::2])  # B


def test_mosaic_keeps_dtype():
    assert mosaic_rggb(_rgb(dtype=torch.float64)).dtype == torch.float64


def test_pack_raw_channel_order_is_r_g1_g2_b():
    m = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(2, 1, 4, 6)
    p = pack_raw(m).numpy()
    mn = m.numpy()[:, 0]
    expected = np.stack([mn[:, 0::2, 0::2], mn[:, 0::2, 1::2], mn[:, 1::2, 0::2], mn[:, 1::2, 1::2]], axis=1)
    np.testing.assert_array_equal(p, expected)


def test_pack_unpack_round_trip_is_exact():
    m = torch.rand(3, 1, 10, 12)
    assert torch.equal(unpack_raw(pack_raw(m)), m)
    p = torch.rand(3, 4, 5, 6)
    assert torch.equal(pack_raw(unpack_raw(p)), p)


@pytest.mark.parametrize(
    ("fn", "shape", "match"),
    [
        (mosaic_rggb, (1, 3, 5, 8), "even"),
        (mosaic_rggb, (1, 1, 4, 4), r"\(B, 3, H, W\)"),
        (pack_raw, (1, 1, 4, 7), "even"),
        (unpack_raw, (1, 3, 4, 4), r"\(B, 4C, h, w\)"),
        (demosaic, (1, 3, 4, 4), r"\(B, 1, H, W\)"),
    ],
)
def test_bad_shapes_raise_clear_errors(fn, shape, match):
    with pytest.raises(ValueError, match=match):
        fn(torch.zeros(shape))


def test_demosaic_of_constant_colour_returns_that_colour():
    colour = torch.tensor([0.7, 0.3, 0.1])
    x = colour[None, :, None, None].expand(2, 3, 8, 10).contiguous()
    rgb = demosaic(mosaic_rggb(x))
    torch.testing.assert_close(rgb, x, atol=1e-6, rtol=0)


def test_demosaic_keeps_the_measured_sample_at_each_site():
    # Pins kornia's OpenCV naming: an RGGB sensor is CFA.BG; any other name puts colours on the wrong sites.
    m = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    rgb = demosaic(m)
    assert torch.equal(rgb[:, 0, 0::2, 0::2], m[:, 0, 0::2, 0::2])
    assert torch.equal(rgb[:, 1, 0::2, 1::2], m[:, 0, 0::2, 1::2])
    assert torch.equal(rgb[:, 1, 1::2, 0::2], m[:, 0, 1::2, 0::2])
    assert torch.equal(rgb[:, 2, 1::2, 1::2], m[:, 0, 1::2, 1::2])
    wrong = raw_to_rgb(m, CFA.RG)  # OpenCV's name for BGGR
    assert not torch.equal(wrong[:, 0, 0::2, 0::2], m[:, 0, 0::2, 0::2])


def test_pack_raw_of_rgb_groups_sites_per_colour():
    x = torch.rand(2, 3, 8, 12)
    packed = pack_raw(x).numpy()
    xn = x.numpy()
    for c in range(3):
        for k, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            np.testing.assert_array_equal(packed[:, 4 * c + k], xn[:, c, i::2, j::2])
