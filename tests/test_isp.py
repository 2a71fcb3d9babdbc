"""The camera pipeline: gains, colour matrix, sRGB OETF, tone curve, render/unprocess round trips, camera priors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rawsr.degradation import sample_camera
from rawsr.degradation.cameras import XYZ2CAMS
from rawsr.imaging import (
    XYZ_FROM_SRGB,
    apply_ccm,
    apply_gains,
    inverse_tone_map,
    linear_to_srgb,
    render_srgb,
    srgb_to_linear,
    tone_map,
    unprocess,
)


def _camera(batch=3, seed=0, dtype=torch.float64):
    return sample_camera(torch.Generator().manual_seed(seed), batch, "cpu", dtype)


def _srgb_oetf(x):
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def test_gains_and_ccm_match_numpy():
    wb, ccm = _camera()
    x = torch.rand(3, 3, 4, 5, dtype=torch.float64)
    expected_wb = x.numpy() * wb.numpy()[:, :, None, None]
    np.testing.assert_allclose(apply_gains(x, wb).numpy(), expected_wb, rtol=1e-12)
    expected_ccm = np.einsum("bij,bjhw->bihw", ccm.numpy(), x.numpy())
    np.testing.assert_allclose(apply_ccm(x, ccm).numpy(), expected_ccm, rtol=1e-12)


def test_srgb_oetf_matches_the_formula_and_never_makes_nan():
    x = torch.linspace(-0.5, 1.5, 2001, dtype=torch.float64).reshape(1, 3, 23, 29)
    y = linear_to_srgb(x)
    np.testing.assert_allclose(y.numpy(), _srgb_oetf(x.numpy()), atol=1e-12)
    assert torch.isfinite(srgb_to_linear(x)).all()
    assert y.min() == 0.0 and y.max() == pytest.approx(1.0, abs=1e-12)


def test_srgb_inverse_round_trip():
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(srgb_to_linear(linear_to_srgb(x)), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-6, rtol=0)


def test_tone_curve_formula_and_inverse():
    y = torch.linspace(0, 1, 1001, dtype=torch.float64)
    np.testing.assert_allclose(tone_map(y).numpy(), 3 * y.numpy() ** 2 - 2 * y.numpy() ** 3, atol=1e-14)
    torch.testing.assert_close(tone_map(inverse_tone_map(y)), y, atol=1e-10, rtol=0)
    torch.testing.assert_close(inverse_tone_map(tone_map(y)), y, atol=1e-6, rtol=0)
    assert torch.isfinite(inverse_tone_map(torch.tensor([-0.2, 1.3]))).all()


def _srgb_eotf(x):
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _render_numpy(cam, wb, ccm):
    """dcraw's pipeline in highlight mode "clip", written independently: gains, clip at 1, matrix, clip, OETF."""
    balanced = np.minimum(cam * wb[:, :, None, None], 1.0)
    return _srgb_oetf(np.einsum("bij,bjhw->bihw", ccm, balanced))


@pytest.mark.parametrize("tone", [False, True])
def test_render_after_unprocess_is_identity(tone):
    wb, ccm = _camera(4, dtype=torch.float32)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    back = render_srgb(unprocess(x, wb, ccm, tone=tone), wb, ccm, tone=tone)
    # Where the white-balanced camera RGB inv(ccm) @ lin exceeds 1 the renderer clips it (a few saturated
    # colours: inv(ccm) has small negative entries); computed here with NumPy, without the tone curve's inverse.
    lin = _srgb_eotf(x.double().numpy())
    if tone:
        y = np.clip(lin, 0.0, 1.0)
        lin = 0.5 - np.sin(np.arcsin(1.0 - 2.0 * y) / 3.0)
    balanced = np.einsum("bij,bjhw->bihw", np.linalg.inv(ccm.double().numpy()), lin)
    ok = torch.from_numpy((balanced <= 1.0).all(axis=1, keepdims=True)).expand_as(x)
    assert ok.float().mean() > 0.95
    torch.testing.assert_close(back[ok], x[ok], atol=1e-4, rtol=0)


def test_render_matches_numpy_and_saturated_raw_renders_white():
    wb, ccm = _camera(3)
    cam = torch.rand(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    cam[:, :, :4] = 1.0  # top half saturated in every raw channel, as a clipped highlight on the sensor
    cam[:, 1, 4:6] = 1.0  # only green saturated, red and blue below white before white balance
    out = render_srgb(cam, wb, ccm).numpy()
    np.testing.assert_allclose(out, _render_numpy(cam.numpy(), wb.numpy(), ccm.numpy()), atol=1e-12)
    np.testing.assert_allclose(out[:, :, :4], 1.0, atol=1e-12)
    # Without the clip before the matrix, the saturated pixels would render with a green deficit (pink).
    unclipped = _srgb_oetf(np.einsum("bij,bjhw->bihw", ccm.numpy(), cam.numpy() * wb.numpy()[:, :, None, None]))
    assert (unclipped[:, 0, :4] - unclipped[:, 1, :4]).min() > 0.05


@pytest.mark.parametrize("tone", [False, True])
def test_unprocess_after_render_is_identity_in_gamut(tone):
    wb, ccm = _camera(4, seed=5)
    # Camera colours whose rendering is in gamut, built independently with NumPy: cam = inv(ccm) @ lin / wb.
    lin = np.random.default_rng(0).uniform(0.02, 0.98, size=(4, 3, 16, 16))
    cam = np.einsum("bij,bjhw->bihw", np.linalg.inv(ccm.numpy()), lin) / wb.numpy()[:, :, None, None]
    ok = torch.from_numpy((cam * wb.numpy()[:, :, None, None] <= 1.0).all(axis=1, keepdims=True)).expand(cam.shape)
    assert ok.float().mean() > 0.9
    cam = torch.from_numpy(cam)
    back = unprocess(render_srgb(cam, wb, ccm, tone=tone), wb, ccm, tone=tone)
    torch.testing.assert_close(back[ok], cam[ok], atol=1e-4, rtol=0)
    # Out of gamut (clipped by the renderer) is not invertible: the test above would fail there.
    bright = render_srgb(cam * 4, wb, ccm, tone=tone)
    assert (unprocess(bright, wb, ccm, tone=tone) - cam * 4).abs().max() > 0.1


def test_render_keeps_white_white():
    # CCM rows sum to 1: a neutral after white balance renders neutral.
    wb, ccm = _camera(3)
    grey = 0.18 / wb[:, :, None, None] * torch.ones(3, 3, 2, 2, dtype=torch.float64)
    out = render_srgb(grey, wb, ccm)
    torch.testing.assert_close(out, torch.full_like(out, float(_srgb_oetf(np.array(0.18)))), atol=1e-9, rtol=0)


def test_sample_camera_follows_brooks_priors():
    wb, ccm = _camera(500, seed=7)
    assert wb.shape == (500, 3) and ccm.shape == (500, 3, 3)
    assert torch.all(wb[:, 1] == 1)
    assert wb[:, 0].min() >= 1.9 and wb[:, 0].max() <= 2.4
    assert wb[:, 2].min() >= 1.5 and wb[:, 2].max() <= 1.9
    assert abs(wb[:, 0].mean().item() - 2.15) < 0.02 and abs(wb[:, 2].mean().item() - 1.7) < 0.02
    torch.testing.assert_close(ccm.sum(-1), torch.ones(500, 3, dtype=torch.float64), atol=1e-9, rtol=0)


def test_sample_camera_ccm_inverts_a_convex_combination_of_the_published_matrices():
    # inv(ccm) must equal diag(d) @ sum_n w_n M_n with w >= 0, sum w = 1, M_n = xyz2cam_n @ rgb2xyz.
    mats = np.einsum("nij,jk->nik", np.array(XYZ2CAMS), np.array(XYZ_FROM_SRGB))
    _, ccm = _camera(5, seed=11)
    for rgb2cam in np.linalg.inv(ccm.numpy()):
        rows = []
        for i in range(3):
            for j in range(3):
                d = np.zeros(3)
                d[i] = rgb2cam[i, j]
                rows.append(np.concatenate([d, -mats[:, i, j]]))
        a = np.vstack([rows, np.concatenate([np.zeros(3), np.ones(4)])])
        rhs = np.zeros(10)
        rhs[-1] = 1
        z, *_ = np.linalg.lstsq(a, rhs, rcond=None)
        assert np.abs(a @ z - rhs).max() < 1e-8
        assert z[3:].min() > -1e-8


def test_sample_camera_dtype_device_and_bad_shapes():
    wb, ccm = sample_camera(torch.Generator().manual_seed(0), 2, "cpu", torch.float16)
    assert wb.dtype == ccm.dtype == torch.float16
    with pytest.raises(ValueError, match=r"wb of shape \(2, 3\)"):
        apply_gains(torch.rand(2, 3, 4, 4), torch.ones(3))
    with pytest.raises(ValueError, match=r"ccm of shape \(2, 3, 3\)"):
        apply_ccm(torch.rand(2, 3, 4, 4), torch.eye(3))
