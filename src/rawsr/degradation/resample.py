"""Blurring with per-image kernels and integer-factor downsampling, fused where possible.

Blurring is a convolution (``x ⊛ k``) with reflect padding; kernels are ``(B, k, k)`` batches from
:mod:`rawsr.degradation.kernels`.
"""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F

from .kernels import convolve_kernels


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
