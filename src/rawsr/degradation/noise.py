"""Sensor noise: per-image noise levels from published priors, heteroscedastic Gaussian noise, quantisation.

The noise model is ``y = x + n``, ``n ~ N(0, shot * x + read)`` per pixel (Poisson-Gaussian approximation):
``shot`` and ``read`` are variances in units of the [0, 1] signal. The rawSR paper adds heteroscedastic
Gaussian noise to the linear mosaic; its parameter ranges were not found, so the presets use the priors below.

Priors (each draws ``shot (B,)`` and ``read (B,)``; :mod:`rawsr.degradation.noise_sampler` mixes them as profiles):

- ``brooks`` (Brooks et al., "Unprocessing", CVPR 2019): ``ln shot ~ U(ln 1e-4, ln 0.012)``,
  ``ln read = 2.18 ln shot + 1.20 + N(0, 0.26^2)``.
- ``bsraw_natural`` (BSRAW, Conde et al., WACV 2024): ``log10 shot ~ U(-4, -3)``,
  ``log10 read = 1.34 log10 shot + 0.22 + N(0, 0.1^2)``.
- ``bsraw_hetero`` (BSRAW): ``sigma1 ~ U(5e-3, 5e-2)``, ``sigma2 ~ U(1e-3, 1e-2)`` per image,
  ``shot = sigma1^2``, ``read = sigma2^2``.
- ``uniform``: ``shot`` and ``read`` each log-uniform in a range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .sampling import lerp_range, normal_from_uniform

NoiseLevels = tuple[torch.Tensor, torch.Tensor]

# Published priors (see the module docstring); ``uniform``'s ranges are this project's defaults.
BROOKS = {"shot": (1e-4, 0.012), "slope": 2.18, "intercept": 1.20, "std": 0.26}
BSRAW_NATURAL = {"shot": (1e-4, 1e-3), "slope": 1.34, "intercept": 0.22, "std": 0.1}
BSRAW_HETERO = {"sigma1": (5e-3, 5e-2), "sigma2": (1e-3, 1e-2)}
UNIFORM = {"shot": (1e-4, 1e-2), "read": (1e-6, 1e-3)}


def loglinear_levels(
    u: torch.Tensor,
    shot: tuple[float, float],
    slope: float,
    intercept: float,
    std: float,
    base: float = math.e,
) -> NoiseLevels:
    """Log-uniform shot variance and a read variance log-linear in it, in logarithms of ``base``.

    ``log shot ~ U(log shot[0], log shot[1])``, ``log read = slope * log shot + intercept + N(0, std^2)``.

    Args:
        u: ``(B, 2)`` uniforms in [0, 1).

    Returns:
        ``shot (B,)``, ``read (B,)`` variances.
    """
    log_shot = lerp_range(u[:, 0], (math.log(shot[0]), math.log(shot[1])))
    log_read = slope * log_shot + (intercept + std * normal_from_uniform(u[:, 1])) * math.log(base)
    return log_shot.exp(), log_read.exp()


def sigma_levels(u: torch.Tensor, sigma1: tuple[float, float], sigma2: tuple[float, float]) -> NoiseLevels:
    """``shot = sigma1^2``, ``read = sigma2^2`` with ``sigma1 ~ U(sigma1)``, ``sigma2 ~ U(sigma2)``.

    Args:
        u: ``(B, 2)`` uniforms in [0, 1).

    Returns:
        ``shot (B,)``, ``read (B,)`` variances.
    """
    return lerp_range(u[:, 0], sigma1) ** 2, lerp_range(u[:, 1], sigma2) ** 2


def loguniform_levels(u: torch.Tensor, shot: tuple[float, float], read: tuple[float, float]) -> NoiseLevels:
    """``shot`` and ``read`` variances, each log-uniform in its range.

    Args:
        u: ``(B, 2)`` uniforms in [0, 1).

    Returns:
        ``shot (B,)``, ``read (B,)`` variances.
    """
    log_shot = lerp_range(u[:, 0], (math.log(shot[0]), math.log(shot[1])))
    log_read = lerp_range(u[:, 1], (math.log(read[0]), math.log(read[1])))
    return log_shot.exp(), log_read.exp()


def _uniforms(generator: torch.Generator, batch: int) -> torch.Tensor:
    return torch.rand(batch, 2, generator=generator, device=generator.device)


def sample_brooks(
    generator: torch.Generator,
    batch: int,
    shot: tuple[float, float] = BROOKS["shot"],
    slope: float = BROOKS["slope"],
    intercept: float = BROOKS["intercept"],
    std: float = BROOKS["std"],
) -> NoiseLevels:
    """Brooks et al.'s prior (natural logarithms) -> ``shot (B,)``, ``read (B,)`` on the generator's device."""
    return loglinear_levels(_uniforms(generator, batch), shot, slope, intercept, std, math.e)


def sample_bsraw_natural(
    generator: torch.Generator,
    batch: int,
    shot: tuple[float, float] = BSRAW_NATURAL["shot"],
    slope: float = BSRAW_NATURAL["slope"],
    intercept: float = BSRAW_NATURAL["intercept"],
    std: float = BSRAW_NATURAL["std"],
) -> NoiseLevels:
    """BSRAW's 'natural' DSLR prior (base-10 logarithms) -> ``shot (B,)``, ``read (B,)``."""
    return loglinear_levels(_uniforms(generator, batch), shot, slope, intercept, std, 10.0)


def sample_bsraw_hetero(
    generator: torch.Generator,
    batch: int,
    sigma1: tuple[float, float] = BSRAW_HETERO["sigma1"],
    sigma2: tuple[float, float] = BSRAW_HETERO["sigma2"],
) -> NoiseLevels:
    """BSRAW's heteroscedastic prior, drawn per image -> ``shot (B,)``, ``read (B,)``."""
    return sigma_levels(_uniforms(generator, batch), sigma1, sigma2)


def sample_uniform(
    generator: torch.Generator,
    batch: int,
    shot: tuple[float, float] = UNIFORM["shot"],
    read: tuple[float, float] = UNIFORM["read"],
) -> NoiseLevels:
    """Independent log-uniform ``shot (B,)`` and ``read (B,)`` variances."""
    return loguniform_levels(_uniforms(generator, batch), shot, read)


def _check_noise_inputs(x: torch.Tensor, shot: torch.Tensor, read: torch.Tensor) -> None:
    b = x.shape[0]
    if x.ndim != 4 or tuple(shot.shape) != (b,) or tuple(read.shape) != (b,):
        raise ValueError(
            f"add_noise: expected x (B, C, H, W), shot (B,), read (B,), got {tuple(x.shape)}, "
            f"{tuple(shot.shape)}, {tuple(read.shape)}"
        )


def add_noise(
    x: torch.Tensor, shot: torch.Tensor, read: torch.Tensor, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """Add heteroscedastic Gaussian noise of variance ``shot * max(x, 0) + read``.

    Sample i's noise is drawn only from ``generators[i]`` (which must live on x's device), so it does not depend
    on the rest of the batch.

    Args:
        x: ``(B, C, H, W)`` clean linear signal.
        shot: ``(B,)`` signal-dependent variance per unit signal.
        read: ``(B,)`` signal-independent variance.
        generators: B generators.

    Returns:
        ``(B, C, H, W)`` noisy signal (not clipped).
    """
    _check_noise_inputs(x, shot, read)
    if len(generators) != x.shape[0]:
        raise ValueError(f"add_noise: expected {x.shape[0]} generators, got {len(generators)}")
    std = (shot.to(x)[:, None, None, None] * x.clamp(min=0.0) + read.to(x)[:, None, None, None]).sqrt()
    noise = torch.stack([torch.randn(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in generators])
    return x + std * noise


def quantise(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Round to the ``2^bits - 1`` grid of a ``bits``-bit sensor or image (values outside [0, 1] kept); any shape."""
    levels = float(2**bits - 1)
    return torch.round(x * levels) / levels
