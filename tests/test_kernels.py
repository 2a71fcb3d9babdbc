"""Blur kernels and the config-driven kernel sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from kornia.filters import get_gaussian_kernel2d
from scipy import signal

from rawsr.config import ConfigError
from rawsr.degradation import (
    KernelSampler,
    convolve_kernels,
    disk_kernel,
    gaussian_kernel,
    motion_kernel,
)
from rawsr.degradation.kernels import dihedral, motion_from_uniforms


def _moments(k: torch.Tensor):
    """Centre of mass (x, y) relative to the centre and the 2x2 covariance of (B, k, k) kernels, in NumPy."""
    kn = k.double().numpy()
    c = np.arange(kn.shape[-1]) - kn.shape[-1] // 2
    xx, yy = np.meshgrid(c, c)
    mx, my = (kn * xx).sum((1, 2)), (kn * yy).sum((1, 2))
    dx, dy = xx - mx[:, None, None], yy - my[:, None, None]
    cov = np.stack(
        [
            np.stack([(kn * dx * dx).sum((1, 2)), (kn * dx * dy).sum((1, 2))], -1),
            np.stack([(kn * dx * dy).sum((1, 2)), (kn * dy * dy).sum((1, 2))], -1),
        ],
        -2,
    )
    return np.stack([mx, my], -1), cov


def _check_valid(k: torch.Tensor, size: int, centred_atol: float | None = 1e-5):
    assert k.ndim == 3 and k.shape[-2:] == (size, size) and size % 2 == 1
    assert (k >= 0).all()
    torch.testing.assert_close(k.sum((1, 2)), torch.ones(k.shape[0], dtype=k.dtype), atol=1e-5, rtol=0)
    if centred_atol is not None:
        com, _ = _moments(k)
        assert np.abs(com).max() < centred_atol


def _motion_sampler_cfg(**overrides):
    fam = {"weight": 1.0, "length": [4.0, 12.0], "steps": 32}
    fam.update(overrides)
    return {"mode": "blind", "size": 17, "families": {"motion": fam}}


# --- defocus ------------------------------------------------------------------------------------------------


def test_disk_radius_zero_is_a_delta():
    k = disk_kernel(torch.zeros(2), 7)
    expected = torch.zeros(2, 7, 7)
    expected[:, 3, 3] = 1
    assert torch.equal(k, expected)


@pytest.mark.parametrize("radius", [2.0, 3.3, 4.5, 6.0])
def test_disk_radius_measured_back_from_its_second_moment(radius):
    k = disk_kernel(torch.tensor([radius]), 15)
    _check_valid(k, 15)
    _, cov = _moments(k)
    # A uniform disk has E[x^2 + y^2] = r^2 / 2; pixel-area sampling adds 1/12 per axis.
    estimate = math.sqrt(2 * (np.trace(cov[0]) - 1 / 6))
    assert estimate == pytest.approx(radius, rel=0.03)


def test_disk_matches_independent_area_coverage():
    radii = [1.5, 2.7, 5.0]
    k = disk_kernel(torch.tensor(radii, dtype=torch.float64), 13)
    n = 64  # fine sub-pixel grid (even: no sub-pixel on the centre)
    sub = (np.arange(n) + 0.5) / n - 0.5
    fine = (np.arange(13)[:, None] - 6 + sub[None, :]).reshape(-1)
    d2 = fine[:, None] ** 2 + fine[None, :] ** 2
    for i, r in enumerate(radii):
        cover = (d2 <= r * r).reshape(13, n, 13, n).mean((1, 3))
        assert cover.sum() == pytest.approx(math.pi * r * r, rel=0.01)
        np.testing.assert_allclose(k[i].numpy(), cover / cover.sum(), atol=1.5e-3)


# --- gaussian -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sx", "sy", "theta_deg"), [(2.5, 1.0, 30.0), (1.2, 3.0, -70.0), (2.0, 2.0, 0.0)])
def test_gaussian_covariance_matches_sigma_and_theta(sx, sy, theta_deg):
    t = math.radians(theta_deg)
    k = gaussian_kernel(torch.tensor([sx]), torch.tensor([sy]), torch.tensor([t]), 31)
    _check_valid(k, 31)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    expected = rot @ np.diag([sx**2, sy**2]) @ rot.T
    _, cov = _moments(k)
    np.testing.assert_allclose(cov[0], expected, atol=0.02 * sx * sy)


def test_isotropic_gaussian_equals_kornia():
    s = torch.tensor([0.8, 1.6])
    k = gaussian_kernel(s, s, torch.zeros(2), 11)
    ref = get_gaussian_kernel2d((11, 11), torch.stack([s, s], -1))
    torch.testing.assert_close(k, ref, atol=1e-6, rtol=0)


def test_tiny_sigma_gives_a_delta_without_nan():
    k = gaussian_kernel(torch.tensor([1e-9]), torch.tensor([0.05]), torch.tensor([0.3]), 5)
    assert torch.isfinite(k).all() and k[0, 2, 2] == pytest.approx(1.0)


# --- motion -------------------------------------------------------------------------------------------------


def test_motion_kernels_are_valid_centred_and_reproducible():
    k = motion_kernel(torch.Generator().manual_seed(0), 16, 21, (2.0, 18.0))
    _check_valid(k, 21, centred_atol=1e-4)
    again = motion_kernel(torch.Generator().manual_seed(0), 16, 21, (2.0, 18.0))
    assert torch.equal(k, again)
    other = motion_kernel(torch.Generator().manual_seed(1), 16, 21, (2.0, 18.0))
    assert not torch.equal(k, other)
    # Different samples differ (random trajectories), and most spread beyond a few pixels.
    assert (k.flatten(1) > 0).sum(1).float().median() > 8


@pytest.mark.parametrize("length", [6.0, 12.0])
def test_straight_motion_path_length_is_measured_back(length):
    # No jitter, no shake: a straight segment of length L has variance L^2 / 12 along it; bilinear splatting
    # adds about 1/6 per axis.
    u = torch.rand(8, 2 + 3 * 32, generator=torch.Generator().manual_seed(2))
    k = motion_from_uniforms(u, 17, (length, length), 32, inertia=0.7, jitter=0.0, shake_prob=0.0)
    _check_valid(k, 17, centred_atol=1e-4)
    _, cov = _moments(k)
    estimate = np.sqrt(12 * (np.trace(cov, axis1=1, axis2=2) - 1 / 3))
    np.testing.assert_allclose(estimate, length, rtol=0.04)


def test_zero_length_motion_is_a_delta():
    u = torch.rand(3, 2 + 3 * 8)
    k = motion_from_uniforms(u, 7, (0.0, 0.0), 8, 0.7, 0.2, 0.1)
    torch.testing.assert_close(k[:, 3, 3], torch.ones(3), atol=1e-6, rtol=0)


# --- combining, flipping ------------------------------------------------------------------------------------


def test_convolve_kernels_matches_scipy():
    k1 = disk_kernel(torch.tensor([1.5, 2.0], dtype=torch.float64), 5)
    k2 = motion_kernel(torch.Generator().manual_seed(4), 2, 9, (3.0, 6.0)).double()
    out = convolve_kernels(k1, k2)
    assert out.shape == (2, 13, 13)
    for i in range(2):
        np.testing.assert_allclose(out[i].numpy(), signal.convolve2d(k1[i].numpy(), k2[i].numpy()), atol=1e-12)


# --- sampler --------------------------------------------------------------------------------------------------


def test_sampler_family_choice_and_parameters_follow_the_uniforms():
    cfg = {
        "mode": "blind",
        "size": 11,
        "families": {
            "defocus": {"weight": 1.0, "radius": [1.0, 3.0]},
            "gaussian": {"weight": 3.0, "sigma": [0.5, 2.5], "isotropic": True},
        },
    }
    sampler = KernelSampler(cfg)
    u = torch.rand(64, sampler.n_uniforms, generator=torch.Generator().manual_seed(9))
    k = sampler.from_uniforms(u)
    is_disk = u[:, 0] < 0.25
    assert 0 < is_disk.sum() < 64
    disks = disk_kernel(1.0 + 2.0 * u[:, 1], 11)
    sig = 0.5 + 2.0 * u[:, 1]
    gauss = gaussian_kernel(sig, sig, torch.zeros(64), 11)
    torch.testing.assert_close(k[is_disk], disks[is_disk])
    torch.testing.assert_close(k[~is_disk], gauss[~is_disk])


def test_sampler_family_frequencies_match_weights():
    cfg = {
        "mode": "blind",
        "size": 9,
        "families": {"defocus": {"weight": 1.0, "radius": 0.0}, "gaussian": {"weight": 3.0, "sigma": 2.0}},
    }
    sampler = KernelSampler(cfg)
    k = sampler([torch.Generator().manual_seed(i) for i in range(800)])
    delta_fraction = (k[:, 4, 4] == 1.0).float().mean().item()
    assert delta_fraction == pytest.approx(0.25, abs=0.05)  # 4.6 standard deviations


def test_sampler_draws_per_generator_and_is_reproducible():
    sampler = KernelSampler(_motion_sampler_cfg())
    gens = [torch.Generator().manual_seed(s) for s in (3, 1, 2)]
    k = sampler(gens)
    _check_valid(k, 17, centred_atol=1e-4)
    alone = sampler([torch.Generator().manual_seed(1)])
    assert torch.equal(alone[0], k[1])


def test_defocus_motion_family_is_valid():
    cfg = {"mode": "blind", "size": 19, "families": {"defocus_motion": {"radius": [0.0, 2.0], "length": [0, 10]}}}
    sampler = KernelSampler(cfg)
    k = sampler([torch.Generator().manual_seed(i) for i in range(12)])
    _check_valid(k, 19, centred_atol=1e-4)


def test_gaussian_support_truncation():
    cfg = {
        "mode": "blind",
        "size": 25,
        "families": {"gaussian": {"sigma": [3.0, 4.0], "isotropic": False, "support": [3, 9]}},
    }
    k = KernelSampler(cfg)([torch.Generator().manual_seed(i) for i in range(40)])
    _check_valid(k, 25)
    half_extent = torch.stack([((k[i] > 0).nonzero() - 12).abs().max() for i in range(40)])
    assert set(half_extent.tolist()) == {1, 2, 3, 4}


def test_bank_kernels_are_members_of_the_flipped_rotated_set():
    cfg = {
        "mode": "blind",
        "size": 25,
        "families": {
            "bank": {
                "isotropic": [0.7, 2.0],
                "anisotropic": [[2.0, 0.8, 30.0]],
                "motion": {"count": 2, "length": [10, 20], "steps": 48},
                "seed": 0,
            }
        },
    }
    sampler = KernelSampler(cfg)
    bank = sampler.families[0].bank
    assert bank.shape == (8, 5, 25, 25)
    _check_valid(bank.reshape(-1, 25, 25), 25, centred_atol=1e-4)
    k = sampler([torch.Generator().manual_seed(i) for i in range(30)])
    flat = bank.reshape(-1, 625)
    for kernel in k:
        assert (flat - kernel.reshape(1, -1)).abs().amax(1).min() == 0
    assert torch.equal(dihedral(bank[0])[0], bank[0])


def test_nonblind_returns_the_same_fixed_kernel():
    cfg = {"mode": "nonblind", "size": 11, "fixed": {"family": "gaussian", "sigma": 1.2, "isotropic": True}}
    k = KernelSampler(cfg)([torch.Generator().manual_seed(i) for i in range(3)])
    s = torch.tensor([1.2])
    expected = gaussian_kernel(s, s, torch.zeros(1), 11)
    for i in range(3):
        torch.testing.assert_close(k[i], expected[0])


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        (
            {"mode": "blind", "size": 11, "families": {"defocus": {"radius": [3, 1]}}},
            "degradation.kernel.families.defocus.radius",
        ),
        (
            {"mode": "blind", "size": 11, "families": {"defocus": {"radius": [1, 9]}}},
            "degradation.kernel.families.defocus.radius",
        ),
        ({"mode": "blind", "size": 10, "families": {"defocus": {"radius": [1, 2]}}}, "degradation.kernel.size"),
        ({"mode": "blind", "size": 11, "families": {"box": {}}}, "degradation.kernel.families.box"),
        (
            {"mode": "blind", "size": 11, "families": {"defocus": {"raduis": [1, 2]}}},
            "degradation.kernel.families.defocus.raduis",
        ),
        (
            {"mode": "blind", "size": 11, "families": {"motion": {"length": [1, 20]}}},
            "degradation.kernel.families.motion.length",
        ),
        (
            {"mode": "blind", "size": 21, "families": {"motion": {"length": [1, 18], "steps": 16}}},
            "degradation.kernel.families.motion.steps",
        ),
        (
            {"mode": "blind", "size": 11, "families": {"gaussian": {"sigma": 1, "support": [4, 8]}}},
            "degradation.kernel.families.gaussian.support",
        ),
        ({"mode": "blinds", "size": 11}, "degradation.kernel.mode"),
        ({"mode": "nonblind", "size": 11}, "degradation.kernel.fixed"),
        (
            {"mode": "blind", "size": 11, "families": {"defocus": {"weight": -1, "radius": 1}}},
            "degradation.kernel.families.defocus.weight",
        ),
    ],
)
def test_bad_config_raises_naming_the_key(cfg, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        KernelSampler(cfg)
