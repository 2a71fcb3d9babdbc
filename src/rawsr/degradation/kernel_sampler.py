"""The kernel families and :class:`KernelSampler`, which draws one blur kernel per image from the
``degradation.kernel`` config.

Every family turns a row of uniforms in [0, 1) into one kernel, so that a sample's kernel depends only on its own
random stream.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from rawsr.config import is_number, require, require_bool, require_choice, require_keys, require_number, require_range

from .kernels import (
    convolve_kernels,
    dihedral,
    disk_kernel,
    gaussian_kernel,
    motion_from_uniforms,
    motion_kernel,
    truncate_kernel,
)
from .sampling import draw_uniforms, lerp_range, parse_mixture, weighted_choice

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
      picked with probability proportional to its weight (default 1), then its parameters are drawn from their
      ranges (see :func:`rawsr.degradation.sampling.parse_mixture`).
    - ``fixed`` (nonblind): ``{family: name, seed: int, ...family keys}``; the kernel is drawn once, with
      ``seed``, at construction (give single values instead of ranges to pin it exactly).

    Family keys (ranges are ``[low, high]``, drawn uniformly):

    - ``defocus``: ``radius`` (pixels).
    - ``motion``: ``length`` (path length, pixels), ``steps``, ``inertia``, ``jitter`` (radians per step),
      ``shake_prob`` (see :func:`rawsr.degradation.kernels.motion_from_uniforms`).
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
            # A family's settings block must be a mapping (no null block, unlike noise profiles).
            self.families, self.weights = parse_mixture(
                cfg.get("families"),
                f"{key}.families",
                {name: family.keys for name, family in FAMILIES.items()},
                lambda name, settings, fkey: FAMILIES[name](settings, fkey, self.size),
            )
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
