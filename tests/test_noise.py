"""Noise-level priors, heteroscedastic noise statistics, quantisation and the config-driven noise sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from rawsr.config import ConfigError
from rawsr.degradation import (
    NoiseSampler,
    add_noise,
    quantise,
    sample_brooks,
    sample_bsraw_hetero,
    sample_bsraw_natural,
    sample_uniform,
)

N = 4000


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("shot", "read"), [(1e-2, 1e-4), (1e-3, 1e-5)])
def test_measured_variance_matches_the_model_on_flat_patches(shot, read):
    levels = torch.tensor([0.05, 0.2, 0.5, 0.8], dtype=torch.float64)
    x = levels[:, None, None, None].expand(4, 1, 512, 512)
    gens = [_gen(i) for i in range(4)]
    y = add_noise(x, torch.full((4,), shot), torch.full((4,), read), gens)
    residual = (y - x).numpy().reshape(4, -1)
    expected_var = shot * levels.numpy() + read
    np.testing.assert_allclose(residual.var(axis=1), expected_var, rtol=0.05)
    # The mean is unbiased: within 5 standard errors.
    assert np.all(np.abs(residual.mean(axis=1)) < 5 * np.sqrt(expected_var / residual.shape[1]))


def test_negative_signal_gets_read_noise_only():
    x = torch.full((1, 1, 256, 256), -0.1)
    y = add_noise(x, torch.tensor([0.05]), torch.tensor([1e-4]), [_gen()])
    assert torch.isfinite(y).all()
    assert (y - x).var().item() == pytest.approx(1e-4, rel=0.05)


def test_noise_is_per_sample_reproducible():
    x = torch.rand(3, 1, 16, 16)
    shot, read = torch.full((3,), 1e-3), torch.full((3,), 1e-5)
    y = add_noise(x, shot, read, [_gen(s) for s in (5, 6, 7)])
    alone = add_noise(x[1:2], shot[1:2], read[1:2], [_gen(6)])
    assert torch.equal(alone[0], y[1])
    with pytest.raises(ValueError, match="expected 3 generators"):
        add_noise(x, shot, read, [_gen()])


def test_quantise_rounds_to_the_sensor_grid():
    x = torch.rand(10000, dtype=torch.float64)
    for bits in (8, 12, 14):
        q = quantise(x, bits).numpy()
        levels = 2**bits - 1
        np.testing.assert_allclose(q, np.round(x.numpy() * levels) / levels, atol=1e-15)
        assert np.abs(q - x.numpy()).max() <= 0.5 / levels + 1e-15


def test_brooks_prior():
    shot, read = sample_brooks(_gen(1), N)
    assert shot.shape == read.shape == (N,)
    assert shot.min() >= 1e-4 * (1 - 1e-6) and shot.max() <= 0.012 * (1 + 1e-6)
    lo, hi = math.log(1e-4), math.log(0.012)
    assert stats.kstest(shot.log().numpy(), stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
    residual = (read.log() - 2.18 * shot.log() - 1.20).numpy()
    assert stats.kstest(residual, stats.norm(0, 0.26).cdf).pvalue > 1e-3


def test_bsraw_natural_prior():
    shot, read = sample_bsraw_natural(_gen(2), N)
    assert stats.kstest(shot.log10().numpy(), stats.uniform(-4, 1).cdf).pvalue > 1e-3
    residual = (read.log10() - 1.34 * shot.log10() - 0.22).double().numpy()
    assert stats.kstest(residual, stats.norm(0, 0.1).cdf).pvalue > 1e-3


def test_bsraw_hetero_prior_is_drawn_per_image():
    shot, read = sample_bsraw_hetero(_gen(3), N)
    s1, s2 = shot.sqrt().numpy(), read.sqrt().numpy()
    assert stats.kstest(s1, stats.uniform(5e-3, 4.5e-2).cdf).pvalue > 1e-3
    assert stats.kstest(s2, stats.uniform(1e-3, 9e-3).cdf).pvalue > 1e-3
    assert abs(np.corrcoef(s1, s2)[0, 1]) < 0.1


def test_uniform_prior_is_log_uniform_in_its_ranges():
    shot, read = sample_uniform(_gen(4), N, shot=(1e-5, 1e-2), read=(1e-7, 1e-4))
    assert stats.kstest(shot.log10().numpy(), stats.uniform(-5, 3).cdf).pvalue > 1e-3
    assert stats.kstest(read.log10().numpy(), stats.uniform(-7, 3).cdf).pvalue > 1e-3


def test_sampler_mixes_profiles_by_weight():
    cfg = {
        "profiles": {
            "bsraw_hetero": {"weight": 1.0, "sigma1": 0.1, "sigma2": 0.0},
            "uniform": {"weight": 3.0, "shot": [1e-5, 1e-4], "read": [1e-7, 1e-6]},
        }
    }
    sampler = NoiseSampler(cfg)
    shot, read = sampler([_gen(i) for i in range(800)])
    hetero = shot > 5e-3
    torch.testing.assert_close(shot[hetero], torch.full_like(shot[hetero], 0.01))
    assert torch.all(read[hetero] == 0)
    assert hetero.float().mean().item() == pytest.approx(0.25, abs=0.05)
    assert shot[~hetero].min() >= 1e-5 * (1 - 1e-6) and shot[~hetero].max() <= 1e-4 * (1 + 1e-6)


def test_sampler_defaults_are_the_published_priors():
    sampler = NoiseSampler({"profiles": {"brooks": {}}})
    u = torch.rand(50, sampler.n_uniforms, generator=_gen(5))
    shot, read = sampler.from_uniforms(u)
    expected_shot = torch.exp(math.log(1e-4) + (math.log(0.012) - math.log(1e-4)) * u[:, 1])
    torch.testing.assert_close(shot, expected_shot)


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"profiles": {"brooks": {"shot": [0.1, 0.01]}}}, "degradation.noise.profiles.brooks.shot"),
        ({"profiles": {"gauss": {}}}, "degradation.noise.profiles.gauss"),
        ({"profiles": {}}, "degradation.noise.profiles"),
        ({"profiles": {"bsraw_hetero": {"sigma3": [0, 1]}}}, "degradation.noise.profiles.bsraw_hetero.sigma3"),
        ({"profiles": {"brooks": {"std": -1}}}, "degradation.noise.profiles.brooks.std"),
        ({"profile": {"brooks": {}}}, "degradation.noise.profile"),
    ],
)
def test_bad_config_raises_naming_the_key(cfg, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        NoiseSampler(cfg)
