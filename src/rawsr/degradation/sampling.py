"""Random draws shared by the samplers of this package, and the weighted-mixture config they are chosen from.

Every sampler turns a row of uniforms in [0, 1) into one draw, so that a sample's draw depends only on its own
random stream: :func:`draw_uniforms` makes one row per generator, the other functions map uniforms to values.
:func:`parse_mixture` reads a config of named, weighted entries (the kernel families of
:class:`rawsr.degradation.kernel_sampler.KernelSampler`, the noise profiles of
:class:`rawsr.degradation.noise_sampler.NoiseSampler`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch

from rawsr.config import require, require_choice, require_keys, require_number

T = TypeVar("T")


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


def parse_mixture(
    cfg: Any,
    key: str,
    kinds: Mapping[str, Sequence[str]],
    build: Callable[[str, dict, str], T],
    *,
    allow_null: bool = False,
) -> tuple[list[T], list[float]]:
    """Read a weighted mixture ``{name: {weight: w, ...settings}}`` and build its entries.

    Each name must be one of ``kinds``, whose value lists the settings keys that kind accepts (``weight`` is always
    accepted). ``weight`` defaults to 1 and must be a number >= 0, and at least one weight must be positive.
    Entries are built in config order by ``build(name, settings, entry_key)``, with ``settings`` a plain dict
    without ``weight`` and ``entry_key`` ``f"{key}.{name}"`` (for the entry's own error messages).

    Args:
        cfg: the mixture mapping.
        key: its config key, e.g. ``degradation.noise.profiles``.
        kinds: ``{name: settings keys}`` of the entries allowed.
        build: makes one entry.
        allow_null: accept a null settings block (``name:`` with nothing under it) as empty settings.

    Returns:
        The built entries and their probabilities (the weights normalised to sum to 1), in config order.

    Raises:
        rawsr.config.ConfigError: naming the offending key.
    """
    require(
        isinstance(cfg, Mapping) and len(cfg) > 0,
        key,
        f"a non-empty mapping of {sorted(kinds)} to their settings",
        cfg,
    )
    entries, weights = [], []
    for name, settings in cfg.items():
        entry_key = f"{key}.{name}"
        require_choice(name, entry_key, kinds)
        if allow_null and settings is None:
            settings = {}
        settings = require_keys(settings, entry_key, ("weight", *kinds[name]))
        weights.append(require_number(settings.pop("weight", 1.0), f"{entry_key}.weight", 0.0))
        entries.append(build(name, settings, entry_key))
    total = sum(weights)
    require(total > 0, key, "at least one positive weight", cfg)
    return entries, [w / total for w in weights]
