"""Blur kernels (defocus disk, rotated Gaussian, random-walk camera shake, a fixed bank), blurring and resampling.

Every kernel is a batch ``(B, k, k)`` with odd k, non-negative, summing to 1 and centred: the kernel's pixel
``(k // 2, k // 2)`` is the optical axis, so blurring does not shift the image. Blurring is a convolution
(``x ⊛ k``), with reflect padding.

Random draws are made by the caller and passed in as uniforms: every family turns a row of uniforms in [0, 1)
into one kernel, so that a sample's kernel depends only on its own random stream (see :class:`KernelSampler`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import kornia
import torch
import torch.nn.functional as F

from rawsr.config import is_number, require, require_bool, require_choice, require_keys, require_number, require_range

# ---------------------------------------------------------------------------------------------------------------
# Uniform draws shared by the samplers of this package.
# ---------------------------------------------------------------------------------------------------------------


def lerp_range(u: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """Map uniforms ``u`` in [0, 1) onto ``[lo, hi)``; any shape."""
    return bounds[0] + (bounds[1] - bounds[0]) * u


def normal_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Standard normal deviates from uniforms in [0, 1) by the inverse CDF; any shape."""
    return torch.special.ndtri(u.clamp(1e-7, 1.0 - 1e-7))


def weighted_choice(u: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Indices drawn with probabilities proportional to ``weights`` from uniforms ``u`` ``(B,)`` -> ``(B,)`` long."""
    w = torch.tensor(weights, dtype=torch.float64)
    edges = (torch.cumsum(w, 0) / w.sum())[:-1].to(device=u.device, dtype=u.dtype)
    return torch.bucketize(u.contiguous(), edges, right=True)


def draw_uniforms(generators: Sequence[torch.Generator], count: int) -> torch.Tensor:
    """One row of ``count`` uniforms per generator, drawn on that generator's device -> ``(B, count)`` fp32."""
    return torch.stack([torch.rand(count, generator=g, device=g.device) for g in generators])


# ---------------------------------------------------------------------------------------------------------------
# Kernels.
# ---------------------------------------------------------------------------------------------------------------


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


def _check_blur_inputs(x: torch.Tensor, kernels: torch.Tensor, name: str) -> None:
    if x.ndim != 4 or kernels.ndim != 3 or kernels.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name}: expected x (B, C, H, W) and kernels (B, k, k), got {tuple(x.shape)} and {tuple(kernels.shape)}"
        )


def blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve each sample with its own kernel (reflect padding, same size).

    Args:
        x: ``(B, C, H, W)``.
        kernels: ``(B, k, k)``.

    Returns:
        ``(B, C, H, W)``.
    """
    _check_blur_inputs(x, kernels, "blur")
    return kornia.filters.filter2d(x, kernels.to(x), border_type="reflect", behaviour="conv")


DOWNSAMPLE_MODES = ("area", "stride", "bicubic")


def downsample(x: torch.Tensor, scale: int, mode: str = "area") -> torch.Tensor:
    """Reduce resolution by an integer factor.

    ``area`` averages s x s blocks (aligned with pixel-shuffle upsampling: LR pixel i covers HR pixels
    ``s*i .. s*i + s - 1``); ``stride`` keeps the top-left pixel of each block; ``bicubic`` is antialiased
    bicubic resampling.

    Args:
        x: ``(B, C, sH, sW)``, sH and sW divisible by s.
        scale: s.
        mode: one of :data:`DOWNSAMPLE_MODES`.

    Returns:
        ``(B, C, H, W)``.
    """
    if mode == "area":
        return F.avg_pool2d(x, scale)
    if mode == "stride":
        return x[..., ::scale, ::scale]
    if mode == "bicubic":
        size = (x.shape[-2] // scale, x.shape[-1] // scale)
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    raise ValueError(f"downsample: mode must be one of {DOWNSAMPLE_MODES}, got {mode!r}")


def blur_downsample(x: torch.Tensor, kernels: torch.Tensor, scale: int, mode: str = "area") -> torch.Tensor:
    """``downsample(blur(x, kernels), scale, mode)``, computed only at the kept pixels where possible.

    For ``area`` and ``stride`` the blur and the downsampling fold into one strided convolution (the
    kernel convolved with the s x s box for ``area``), which costs 1/s^2 of blurring at full resolution and
    gives the same result up to float rounding (the reflect padding is the same).

    Args:
        x: ``(B, C, sH, sW)``.
        kernels: ``(B, k, k)``, odd k.
        scale: s.
        mode: one of :data:`DOWNSAMPLE_MODES`.

    Returns:
        ``(B, C, H, W)``.
    """
    _check_blur_inputs(x, kernels, "blur_downsample")
    if mode == "bicubic":
        return downsample(blur(x, kernels), scale, mode)
    if mode not in DOWNSAMPLE_MODES:
        raise ValueError(f"blur_downsample: mode must be one of {DOWNSAMPLE_MODES}, got {mode!r}")
    b, c, h, w = x.shape
    pad = kernels.shape[-1] // 2
    weight = kernels.to(x).flip(-2, -1)  # correlation weights of the convolution
    if mode == "area":
        box = torch.full((b, scale, scale), 1.0 / scale**2, device=x.device, dtype=x.dtype)
        weight = convolve_kernels(weight, box)
    # Channels as the convolution's batch and samples as its groups: the C planes of a sample share one weight,
    # which the CPU backend exploits (about twice as fast as one group per plane at C = 3).
    padded = F.pad(x.transpose(0, 1), (pad, pad, pad, pad), mode="reflect")
    out = F.conv2d(padded, weight[:, None], stride=scale, groups=b)
    return out[..., : h // scale, : w // scale].transpose(0, 1).contiguous()


def dihedral(kernels: torch.Tensor) -> torch.Tensor:
    """The 8 flips/rotations of each kernel: ``(N, k, k)`` -> ``(8, N, k, k)`` (rot90 by 0..3, then transposed)."""
    rots = [torch.rot90(kernels, r, dims=(-2, -1)) for r in range(4)]
    return torch.stack(rots + [r.transpose(-2, -1) for r in rots])


# ---------------------------------------------------------------------------------------------------------------
# Kernel families, configured from the ``degradation.kernel`` config.
# ---------------------------------------------------------------------------------------------------------------

_MOTION_KEYS = ("length", "steps", "inertia", "jitter", "shake_prob")


def _motion_params(cfg: dict, key: str, window: int) -> dict:
    """Validate the random-walk keys; the path must fit the window it is rasterised in."""
    steps = cfg.get("steps", 32)
    require(
        isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1,
        f"{key}.steps",
        "a positive integer",
        steps,
    )
    length = require_range(cfg.get("length"), f"{key}.length", 0.0, float(max(window - 3, 0)))
    require(
        steps >= 2 * length[1],
        f"{key}.steps",
        f"at least 2 * length high = {2 * length[1]} (steps of at most half a pixel)",
        steps,
    )
    return {
        "length": length,
        "steps": steps,
        "inertia": require_number(cfg.get("inertia", 0.7), f"{key}.inertia", 0.0, 0.999),
        "jitter": require_number(cfg.get("jitter", 0.2), f"{key}.jitter", 0.0),
        "shake_prob": require_number(cfg.get("shake_prob", 0.03), f"{key}.shake_prob", 0.0, 1.0),
    }


class _Defocus:
    """Defocus disk, radius ~ U(radius)."""

    keys = ("radius",)

    def __init__(self, cfg: dict, key: str, size: int):
        self.size = size
        self.radius = require_range(cfg.get("radius"), f"{key}.radius", 0.0, float(size // 2))
        self.n_uniforms = 1

    def build(self, u: torch.Tensor) -> torch.Tensor:
        return disk_kernel(lerp_range(u[:, 0], self.radius), self.size)


class _Motion:
    """Random-walk camera shake, path length ~ U(length)."""

    keys = _MOTION_KEYS

    def __init__(self, cfg: dict, key: str, size: int):
        self.size = size
        self.walk = _motion_params(cfg, key, size)
        self.n_uniforms = 2 + 3 * self.walk["steps"]

    def build(self, u: torch.Tensor) -> torch.Tensor:
        return motion_from_uniforms(u, self.size, **self.walk)


class _DefocusMotion:
    """Defocus disk ⊛ random-walk motion, as in rawSR's ``X_lin ⊛ k_def ⊛ k_mot``."""

    keys = ("radius", *_MOTION_KEYS)

    def __init__(self, cfg: dict, key: str, size: int):
        self.size = size
        radius = require_range(cfg.get("radius"), f"{key}.radius", 0.0, float(size // 2 - 1))
        self.defocus = _Defocus({"radius": radius}, key, 2 * math.ceil(radius[1]) + 1)
        self.motion = _Motion(cfg, key, size - self.defocus.size + 1)
        self.n_uniforms = self.defocus.n_uniforms + self.motion.n_uniforms

    def build(self, u: torch.Tensor) -> torch.Tensor:
        n = self.defocus.n_uniforms
        return convolve_kernels(self.defocus.build(u[:, :n]), self.motion.build(u[:, n:]))


class _Gaussian:
    """Gaussian, sigmas ~ U(sigma) per axis (or one for both if isotropic), theta ~ U(theta) degrees,
    truncated to an odd support drawn uniformly from ``support``."""

    keys = ("sigma", "isotropic", "theta", "support")

    def __init__(self, cfg: dict, key: str, size: int):
        self.size = size
        self.sigma = require_range(cfg.get("sigma"), f"{key}.sigma", 1e-3)
        self.isotropic = require_bool(cfg.get("isotropic", True), f"{key}.isotropic")
        self.theta = require_range(cfg.get("theta", 0.0), f"{key}.theta", -360.0, 360.0)
        support = cfg.get("support", size)
        lo, hi = require_range(support, f"{key}.support", 1, size)
        require(lo % 2 == 1 and hi % 2 == 1, f"{key}.support", f"odd sizes between 1 and {size}", support)
        self.support = (int(lo), int(hi))
        self.n_uniforms = 4

    def build(self, u: torch.Tensor) -> torch.Tensor:
        sx = lerp_range(u[:, 0], self.sigma)
        sy = sx if self.isotropic else lerp_range(u[:, 1], self.sigma)
        theta = torch.deg2rad(lerp_range(u[:, 2], self.theta))
        n_sizes = (self.support[1] - self.support[0]) // 2 + 1
        support = self.support[0] + 2 * (u[:, 3] * n_sizes).floor().clamp(max=n_sizes - 1)
        return truncate_kernel(gaussian_kernel(sx, sy, theta, self.size), support)


class _Bank:
    """A fixed set of kernels generated at construction, drawn uniformly, optionally flipped/rotated.

    Modelled on the 12-kernel test set of USRNet (Zhang et al., CVPR 2020): isotropic Gaussians, rotated
    anisotropic Gaussians and camera-shake kernels, here generated procedurally (motion kernels from ``seed``).
    """

    keys = ("isotropic", "anisotropic", "motion", "transforms", "seed")

    def __init__(self, cfg: dict, key: str, size: int):
        self.size = size
        iso = cfg.get("isotropic", [])
        require(isinstance(iso, Sequence), f"{key}.isotropic", "a list of sigmas", iso)
        sigmas = [require_number(s, f"{key}.isotropic", 1e-3) for s in iso]
        aniso = cfg.get("anisotropic", [])
        require(isinstance(aniso, Sequence), f"{key}.anisotropic", "a list of [sigma_x, sigma_y, theta_deg]", aniso)
        for a in aniso:
            ok = isinstance(a, Sequence) and len(a) == 3 and all(is_number(v) for v in a) and min(a[:2]) > 0
            require(ok, f"{key}.anisotropic", "a list of [sigma_x, sigma_y, theta_deg] with sigmas > 0", aniso)
        seed = cfg.get("seed", 0)
        require(isinstance(seed, int) and not isinstance(seed, bool), f"{key}.seed", "an integer", seed)
        kernels = []
        if sigmas:
            s = torch.tensor(sigmas)
            kernels.append(gaussian_kernel(s, s, torch.zeros_like(s), size))
        if aniso:
            a = torch.tensor([list(map(float, v)) for v in aniso])
            kernels.append(gaussian_kernel(a[:, 0], a[:, 1], torch.deg2rad(a[:, 2]), size))
        motion = cfg.get("motion")
        if motion is not None:
            motion = require_keys(motion, f"{key}.motion", ("count", *_MOTION_KEYS))
            count = motion.get("count", 4)
            require(isinstance(count, int) and count >= 0, f"{key}.motion.count", "a non-negative integer", count)
            walk = _motion_params(motion, f"{key}.motion", size)
            if count:
                gen = torch.Generator().manual_seed(seed)
                kernels.append(
                    motion_kernel(
                        gen,
                        count,
                        size,
                        walk["length"],
                        walk["steps"],
                        walk["inertia"],
                        walk["jitter"],
                        walk["shake_prob"],
                    )
                )
        require(bool(kernels), key, "at least one kernel (isotropic, anisotropic or motion)", cfg)
        bank = torch.cat(kernels)
        self.transforms = require_bool(cfg.get("transforms", True), f"{key}.transforms")
        self.bank = dihedral(bank) if self.transforms else bank[None]  # (T, N, k, k)
        self.n_uniforms = 2

    def build(self, u: torch.Tensor) -> torch.Tensor:
        n_t, n_k = self.bank.shape[:2]
        t = (u[:, 1] * n_t).long().clamp(max=n_t - 1)
        k = (u[:, 0] * n_k).long().clamp(max=n_k - 1)
        return self.bank.to(u.device)[t, k]


FAMILIES = {
    "defocus": _Defocus,
    "motion": _Motion,
    "defocus_motion": _DefocusMotion,
    "gaussian": _Gaussian,
    "bank": _Bank,
}


class KernelSampler:
    """Draws one blur kernel per image from the ``degradation.kernel`` config.

    Config keys:

    - ``mode``: ``blind`` (a kernel per image from ``families``) or ``nonblind`` (the one ``fixed`` kernel).
    - ``size``: odd kernel window k.
    - ``families`` (blind): ``{name: {weight: w, ...family keys}}``, name one of :data:`FAMILIES`; a family is
      picked with probability proportional to its weight, then its parameters are drawn from their ranges.
    - ``fixed`` (nonblind): ``{family: name, seed: int, ...family keys}``; the kernel is drawn once, with
      ``seed``, at construction (give single values instead of ranges to pin it exactly).

    Family keys (ranges are ``[low, high]``, drawn uniformly):

    - ``defocus``: ``radius`` (pixels).
    - ``motion``: ``length`` (path length, pixels), ``steps``, ``inertia``, ``jitter`` (radians per step),
      ``shake_prob`` (see :func:`motion_from_uniforms`).
    - ``defocus_motion``: the keys of both; the disk is convolved with the motion kernel.
    - ``gaussian``: ``sigma``, ``isotropic``, ``theta`` (degrees), ``support`` (odd sizes of truncation).
    - ``bank``: ``isotropic`` (sigmas), ``anisotropic`` ([sigma_x, sigma_y, theta_deg] rows), ``motion``
      (``count`` plus motion keys), ``seed``, ``transforms`` (random flips / 90-degree rotations).
    """

    def __init__(self, cfg: Mapping, key: str = "degradation.kernel"):
        cfg = require_keys(cfg, key, ("mode", "size", "families", "fixed"))
        self.mode = cfg.get("mode", "blind")
        require_choice(self.mode, f"{key}.mode", ("blind", "nonblind"))
        self.size = cfg.get("size")
        require(
            isinstance(self.size, int) and not isinstance(self.size, bool) and self.size >= 1 and self.size % 2 == 1,
            f"{key}.size",
            "a positive odd integer",
            self.size,
        )
        if self.mode == "blind":
            families = cfg.get("families")
            require(
                isinstance(families, Mapping) and len(families) > 0,
                f"{key}.families",
                f"a non-empty mapping of {sorted(FAMILIES)} to their settings",
                families,
            )
            self.families, self.weights = [], []
            for name, fam_cfg in families.items():
                fkey = f"{key}.families.{name}"
                require_choice(name, fkey, FAMILIES)
                fam_cfg = require_keys(fam_cfg, fkey, ("weight", *FAMILIES[name].keys))
                self.weights.append(require_number(fam_cfg.pop("weight", 1.0), f"{fkey}.weight", 0.0))
                self.families.append(FAMILIES[name](fam_cfg, fkey, self.size))
            require(sum(self.weights) > 0, f"{key}.families", "at least one positive weight", families)
            self.n_uniforms = 1 + max(f.n_uniforms for f in self.families)
        else:
            fixed = cfg.get("fixed")
            fkey = f"{key}.fixed"
            require(isinstance(fixed, Mapping), fkey, "a mapping with 'family' and its settings", fixed)
            name = fixed.get("family")
            require_choice(name, f"{fkey}.family", FAMILIES)
            fixed = require_keys(fixed, fkey, ("family", "seed", *FAMILIES[name].keys))
            seed = fixed.pop("seed", 0)
            require(isinstance(seed, int) and not isinstance(seed, bool), f"{fkey}.seed", "an integer", seed)
            family = FAMILIES[fixed.pop("family")](fixed, fkey, self.size)
            u = torch.rand(1, family.n_uniforms, generator=torch.Generator().manual_seed(seed))
            self.kernel = family.build(u)[0]  # (k, k)
            self.n_uniforms = 0

    def __call__(self, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """One kernel per generator, drawn only from that generator -> ``(B, k, k)`` fp32 on their device."""
        return self.from_uniforms(draw_uniforms(generators, self.n_uniforms))

    def from_uniforms(self, u: torch.Tensor) -> torch.Tensor:
        """Kernels from uniforms ``(B, n_uniforms)`` -> ``(B, k, k)``; column 0 picks the family.

        In ``nonblind`` mode ``n_uniforms`` is 0 and every row gets the fixed kernel.
        """
        if self.mode == "nonblind":
            return self.kernel.to(u).expand(u.shape[0], -1, -1).clone()
        choice = weighted_choice(u[:, 0], self.weights)
        out = torch.zeros(u.shape[0], self.size, self.size, device=u.device, dtype=u.dtype)
        for i, family in enumerate(self.families):
            built = family.build(u[:, 1 : 1 + family.n_uniforms])
            out = torch.where((choice == i)[:, None, None], built.to(out), out)
        return out
