"""Blur kernels: defocus disk, rotated Gaussian, random-walk camera shake, truncation, combination, flips.

Every kernel is a batch ``(B, k, k)`` with odd k, non-negative, summing to 1 and centred: the kernel's pixel
``(k // 2, k // 2)`` is the optical axis, so blurring (:mod:`rawsr.degradation.resample`) does not shift the image.

Random kernels are made from uniforms in [0, 1) passed in by the caller, so that a sample's kernel depends only on
its own random stream (see :class:`rawsr.degradation.kernel_sampler.KernelSampler`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .sampling import lerp_range, normal_from_uniform


def _check_size(size: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size: expected a positive odd integer, got {size!r}")


def _coords(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Pixel offsets from the kernel centre, ``(size,)``: ``-(size // 2) .. size // 2``."""
    return torch.arange(size, device=device, dtype=dtype) - size // 2


def _normalise(k: torch.Tensor) -> torch.Tensor:
    return k / k.sum(dim=(-2, -1), keepdim=True)


def disk_kernel(radius: torch.Tensor, size: int, supersample: int = 9) -> torch.Tensor:
    """Defocus (pillbox) kernels with anti-aliased edges.

    Each pixel's weight is the fraction of its area inside the disk, measured on a ``supersample`` x
    ``supersample`` grid of sub-pixels (odd, so that one sub-pixel sits on the centre and radius 0 is a delta).

    Args:
        radius: ``(B,)`` disk radii in pixels, ``0 <= radius <= size // 2``.
        size: odd kernel size k.
        supersample: odd number of sub-pixels per pixel side.

    Returns:
        ``(B, k, k)`` kernels.
    """
    _check_size(size)
    if supersample < 1 or supersample % 2 == 0:
        raise ValueError(f"disk_kernel: supersample must be a positive odd integer, got {supersample}")
    device, dtype = radius.device, radius.dtype
    sub = (torch.arange(supersample, device=device, dtype=dtype) - supersample // 2) / supersample
    fine = (_coords(size, device, dtype)[:, None] + sub[None, :]).reshape(-1)  # (k * s,)
    dist2 = fine[:, None] ** 2 + fine[None, :] ** 2
    inside = (dist2[None] <= (radius**2)[:, None, None]).to(dtype)  # (B, k*s, k*s)
    coverage = F.avg_pool2d(inside[:, None], supersample)[:, 0]
    return _normalise(coverage)


def gaussian_kernel(sigma_x: torch.Tensor, sigma_y: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """Rotated anisotropic Gaussian kernels (isotropic when ``sigma_x == sigma_y``).

    The covariance is ``R diag(sigma_x^2, sigma_y^2) R^T`` with ``R`` the rotation by ``theta``: the
    ``sigma_x`` axis points along ``(cos theta, sin theta)`` in (column, row) pixel coordinates.

    Args:
        sigma_x, sigma_y: ``(B,)`` standard deviations in pixels (> 0; tiny values give a delta).
        theta: ``(B,)`` rotation in radians.
        size: odd kernel size k.

    Returns:
        ``(B, k, k)`` kernels, sampled at pixel centres and normalised.
    """
    _check_size(size)
    c = _coords(size, sigma_x.device, sigma_x.dtype)
    xx, yy = c[None, None, :], c[None, :, None]
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    u = cos * xx + sin * yy
    v = -sin * xx + cos * yy
    sx = sigma_x.clamp(min=1e-6)[:, None, None]
    sy = sigma_y.clamp(min=1e-6)[:, None, None]
    return _normalise(torch.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2)))


def truncate_kernel(kernels: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Zero each kernel outside a centred square of odd side ``support`` and renormalise.

    Args:
        kernels: ``(B, k, k)``.
        support: ``(B,)`` odd sides, ``1 <= support <= k``.

    Returns:
        ``(B, k, k)`` kernels.
    """
    c = _coords(kernels.shape[-1], kernels.device, kernels.dtype).abs()
    half = (support.to(kernels.dtype) // 2)[:, None, None]
    mask = (c[None, :, None] <= half) & (c[None, None, :] <= half)
    return _normalise(kernels * mask)


def random_walk(
    heading: torch.Tensor,
    length: torch.Tensor,
    turns: torch.Tensor,
    jumps: torch.Tensor,
    inertia: float,
) -> torch.Tensor:
    """Camera-shake trajectories: a constant-speed walk whose heading wanders with inertia and jumps.

    The turn rate follows ``w_t = inertia * w_{t-1} + turns_t`` (smooth wandering); ``jumps_t`` (radians) are
    abrupt turns, e.g. near-reversals for a shaking hand (after Boracchi and Foi, "Modeling the performance of
    image restoration from motion blur", TIP 2012). Each of the T steps has length ``length / T``.

    Args:
        heading: ``(B,)`` initial heading in radians.
        length: ``(B,)`` total path length in pixels.
        turns: ``(B, T)`` random turn-rate increments in radians.
        jumps: ``(B, T)`` abrupt heading changes in radians (0 for none).
        inertia: in [0, 1), how much of the turn rate carries over to the next step.

    Returns:
        ``(B, T, 2)`` midpoints (x, y) of the T steps, centred on their mean (the path's centre of mass).
    """
    rate = torch.zeros_like(heading)
    rates = []
    for t in range(turns.shape[1]):
        rate = inertia * rate + turns[:, t]
        rates.append(rate)
    angle = heading[:, None] + torch.cumsum(torch.stack(rates, dim=1) + jumps, dim=1)  # (B, T)
    step = (length / turns.shape[1])[:, None]
    velocity = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1) * step[..., None]  # (B, T, 2)
    ends = torch.cumsum(velocity, dim=1)
    mids = ends - 0.5 * velocity
    return mids - mids.mean(dim=1, keepdim=True)


def rasterise(points: torch.Tensor, size: int) -> torch.Tensor:
    """Rasterise equally weighted sub-pixel points into kernels with bilinear (tent) weights.

    Bilinear splatting keeps the centre of mass exactly. Points are given relative to the kernel centre. As a
    safeguard, points reaching closer than one pixel to the window's edge are scaled down about the centre
    to fit (a path of length L stays within L / 2 of its centre of mass, so paths with
    ``L <= size - 3`` never need it). The splat is computed as a product of per-axis tent weights (a batched
    matrix product), which is deterministic on every device, unlike atomic scatter-adds.

    Args:
        points: ``(B, N, 2)`` positions (x, y) in pixels relative to the centre.
        size: odd kernel size k.

    Returns:
        ``(B, k, k)`` kernels.
    """
    _check_size(size)
    limit = max(size // 2 - 1.0, 0.0)
    extent = points.abs().amax(dim=(1, 2))
    scale = torch.where(extent > limit, limit / extent.clamp(min=1e-12), torch.ones_like(extent))
    points = points * scale[:, None, None]
    c = _coords(size, points.device, points.dtype)
    tent_x = (1.0 - (points[..., 0:1] - c).abs()).clamp(min=0.0)  # (B, N, k)
    tent_y = (1.0 - (points[..., 1:2] - c).abs()).clamp(min=0.0)
    return _normalise(tent_y.transpose(1, 2) @ tent_x)


def motion_from_uniforms(
    u: torch.Tensor,
    size: int,
    length: tuple[float, float],
    steps: int,
    inertia: float,
    jitter: float,
    shake_prob: float,
) -> torch.Tensor:
    """Camera-shake kernels from uniforms; see :func:`random_walk` for the trajectory model.

    Args:
        u: ``(B, 2 + 3 * steps)`` uniforms in [0, 1).
        size: odd kernel size k.
        length: range of the total path length in pixels.
        steps: T, number of steps of the walk (keep ``length / steps <= 0.5`` pixel).
        inertia: turn-rate carry-over in [0, 1).
        jitter: standard deviation of the turn-rate increments, radians per step.
        shake_prob: probability per step of an abrupt near-reversal (pi +- 0.5 rad).

    Returns:
        ``(B, k, k)`` kernels.
    """
    heading = 2.0 * math.pi * u[:, 0]
    path = lerp_range(u[:, 1], length)
    turns = jitter * normal_from_uniform(u[:, 2 : 2 + steps])
    shake = u[:, 2 + steps : 2 + 2 * steps] < shake_prob
    jumps = torch.where(shake, math.pi + (u[:, 2 + 2 * steps :] - 0.5), torch.zeros_like(path)[:, None])
    return rasterise(random_walk(heading, path, turns, jumps, inertia), size)


def motion_kernel(
    generator: torch.Generator,
    batch: int,
    size: int,
    length_range: tuple[float, float],
    steps: int = 32,
    inertia: float = 0.7,
    jitter: float = 0.2,
    shake_prob: float = 0.03,
) -> torch.Tensor:
    """Random camera-shake kernels ``(B, k, k)`` drawn from ``generator`` (on its device), centred.

    The walk parameters' defaults are this project's documented choices, not values from the rawSR paper.
    See :func:`motion_from_uniforms` for the arguments.
    """
    u = torch.rand(batch, 2 + 3 * steps, generator=generator, device=generator.device)
    return motion_from_uniforms(u, size, length_range, steps, inertia, jitter, shake_prob)


def convolve_kernels(k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """Full 2-D convolution ``k1 ⊛ k2`` of two batches of kernels.

    Args:
        k1: ``(B, a, a)``.
        k2: ``(B, b, b)``.

    Returns:
        ``(B, a + b - 1, a + b - 1)``; blurring with it equals blurring with k1 then k2 (away from borders).
    """
    if k1.ndim != 3 or k2.ndim != 3 or k1.shape[0] != k2.shape[0]:
        raise ValueError(
            f"convolve_kernels: expected (B, a, a) and (B, b, b), got {tuple(k1.shape)}, {tuple(k2.shape)}"
        )
    b, pad = k1.shape[0], k2.shape[-1] - 1
    padded = F.pad(k1[None], (pad, pad, pad, pad))  # (1, B, a + 2 pad, a + 2 pad)
    return F.conv2d(padded, k2.flip(-2, -1)[:, None].to(k1), groups=b)[0]


def dihedral(kernels: torch.Tensor) -> torch.Tensor:
    """The 8 flips/rotations of each kernel: ``(N, k, k)`` -> ``(8, N, k, k)`` (rot90 by 0..3, then transposed)."""
    rots = [torch.rot90(kernels, r, dims=(-2, -1)) for r in range(4)]
    return torch.stack(rots + [r.transpose(-2, -1) for r in rots])
