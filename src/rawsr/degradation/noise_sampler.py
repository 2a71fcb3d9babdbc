"""The noise profiles and :class:`NoiseSampler`, which draws per-image noise levels (``shot (B,)``, ``read (B,)``)
from the ``degradation.noise`` config; the priors and the noise model are in :mod:`rawsr.degradation.noise`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from rawsr.config import require_keys, require_number, require_range

from .noise import (
    BROOKS,
    BSRAW_HETERO,
    BSRAW_NATURAL,
    UNIFORM,
    NoiseLevels,
    loglinear_levels,
    loguniform_levels,
    sigma_levels,
)
from .sampling import draw_uniforms, parse_mixture, weighted_choice


class _LogLinear:
    keys = ("shot", "slope", "intercept", "std")
    n_uniforms = 2

    def __init__(self, cfg: dict, key: str, base: float, defaults: dict):
        cfg = {**defaults, **cfg}
        self.base = base
        self.shot = require_range(cfg["shot"], f"{key}.shot", 1e-12, 1.0)
        self.slope = require_number(cfg["slope"], f"{key}.slope")
        self.intercept = require_number(cfg["intercept"], f"{key}.intercept")
        self.std = require_number(cfg["std"], f"{key}.std", 0.0)

    def levels(self, u: torch.Tensor) -> NoiseLevels:
        return loglinear_levels(u, self.shot, self.slope, self.intercept, self.std, self.base)


def _brooks(cfg: dict, key: str) -> _LogLinear:
    return _LogLinear(cfg, key, math.e, BROOKS)


def _bsraw_natural(cfg: dict, key: str) -> _LogLinear:
    return _LogLinear(cfg, key, 10.0, BSRAW_NATURAL)


class _Sigmas:
    keys = ("sigma1", "sigma2")
    n_uniforms = 2

    def __init__(self, cfg: dict, key: str):
        cfg = {**BSRAW_HETERO, **cfg}
        self.sigma1 = require_range(cfg["sigma1"], f"{key}.sigma1", 0.0, 1.0)
        self.sigma2 = require_range(cfg["sigma2"], f"{key}.sigma2", 0.0, 1.0)

    def levels(self, u: torch.Tensor) -> NoiseLevels:
        return sigma_levels(u, self.sigma1, self.sigma2)


class _LogUniform:
    keys = ("shot", "read")
    n_uniforms = 2

    def __init__(self, cfg: dict, key: str):
        cfg = {**UNIFORM, **cfg}
        self.shot = require_range(cfg["shot"], f"{key}.shot", 1e-12, 1.0)
        self.read = require_range(cfg["read"], f"{key}.read", 1e-12, 1.0)

    def levels(self, u: torch.Tensor) -> NoiseLevels:
        return loguniform_levels(u, self.shot, self.read)


PROFILES = {
    "brooks": (_brooks, _LogLinear.keys),
    "bsraw_natural": (_bsraw_natural, _LogLinear.keys),
    "bsraw_hetero": (_Sigmas, _Sigmas.keys),
    "uniform": (_LogUniform, _LogUniform.keys),
}


class NoiseSampler:
    """Draws per-image noise levels from the ``degradation.noise`` config.

    Config: ``profiles: {name: {weight: w, ...profile keys}}`` with name one of :data:`PROFILES`; each image
    picks a profile with probability proportional to its weight (default 1), then draws its levels. Profile keys
    (omitted keys take the published values in :mod:`rawsr.degradation.noise`):

    - ``brooks`` / ``bsraw_natural``: ``shot`` [low, high] variance, ``slope``, ``intercept``, ``std``
      (logarithms in base e / base 10 respectively).
    - ``bsraw_hetero``: ``sigma1`` [low, high], ``sigma2`` [low, high] (standard deviations).
    - ``uniform``: ``shot`` [low, high], ``read`` [low, high] (variances, log-uniform).
    """

    def __init__(self, cfg: Mapping, key: str = "degradation.noise"):
        cfg = require_keys(cfg, key, ("profiles",))
        # A profile may be given as a bare name (a null settings block): all its keys take their defaults.
        self.profiles, self.weights = parse_mixture(
            cfg.get("profiles"),
            f"{key}.profiles",
            {name: keys for name, (_, keys) in PROFILES.items()},
            lambda name, settings, pkey: PROFILES[name][0](settings, pkey),
            allow_null=True,
        )
        self.n_uniforms = 1 + max(p.n_uniforms for p in self.profiles)

    def __call__(self, generators: Sequence[torch.Generator]) -> NoiseLevels:
        """Levels for each image, drawn only from its own generator -> ``shot (B,)``, ``read (B,)``."""
        return self.from_uniforms(draw_uniforms(generators, self.n_uniforms))

    def from_uniforms(self, u: torch.Tensor) -> NoiseLevels:
        """Levels from uniforms ``(B, n_uniforms)``; column 0 picks the profile."""
        choice = weighted_choice(u[:, 0], self.weights)
        shot = torch.zeros_like(u[:, 0])
        read = torch.zeros_like(u[:, 0])
        for i, profile in enumerate(self.profiles):
            s, r = profile.levels(u[:, 1 : 1 + profile.n_uniforms])
            shot = torch.where(choice == i, s, shot)
            read = torch.where(choice == i, r, read)
        return shot, read
