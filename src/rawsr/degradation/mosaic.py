"""RGGB Bayer sampling and the packed 4-channel raw layout.

The colour filter array is RGGB throughout the project: R at (0, 0), G at (0, 1) and (1, 0), B at (1, 1) of
every 2x2 cell, as in the released rawSR code (``bayerprocess`` / ``pack_raw``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_image(x: torch.Tensor, channels: int, name: str, even: bool = True) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``x`` is a ``(B, channels, H, W)`` tensor (H, W even if asked)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a tensor of shape (B, {channels}, H, W), got {shape}")
    if even and (x.shape[-2] % 2 or x.shape[-1] % 2):
        raise ValueError(f"{name}: H and W must be even for an RGGB mosaic, got {tuple(x.shape[-2:])}")


def mosaic_rggb(x: torch.Tensor) -> torch.Tensor:
    """Sample an RGGB Bayer mosaic from a full-colour image.

    Args:
        x: ``(B, 3, H, W)`` camera RGB, H and W even.

    Returns:
        ``(B, 1, H, W)`` mosaic: R at (0, 0), G at (0, 1) and (1, 0), B at (1, 1) of each 2x2 cell.
    """
    check_image(x, 3, "mosaic_rggb")
    m = x.new_empty(x.shape[0], 1, *x.shape[-2:])
    m[:, 0, 0::2, 0::2] = x[:, 0, 0::2, 0::2]
    m[:, 0, 0::2, 1::2] = x[:, 1, 0::2, 1::2]
    m[:, 0, 1::2, 0::2] = x[:, 1, 1::2, 0::2]
    m[:, 0, 1::2, 1::2] = x[:, 2, 1::2, 1::2]
    return m


def pack_raw(m: torch.Tensor) -> torch.Tensor:
    """Pack an RGGB mosaic into four half-resolution planes.

    Args:
        m: ``(B, 1, H, W)`` RGGB mosaic, H and W even.

    Returns:
        ``(B, 4, H/2, W/2)`` planes (R, G1, G2, B) = ``m[0::2, 0::2], m[0::2, 1::2], m[1::2, 0::2], m[1::2, 1::2]``.
    """
    check_image(m, 1, "pack_raw")
    return F.pixel_unshuffle(m, 2)


def unpack_raw(p: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`pack_raw`.

    Args:
        p: ``(B, 4, h, w)`` planes (R, G1, G2, B).

    Returns:
        ``(B, 1, 2h, 2w)`` RGGB mosaic.
    """
    check_image(p, 4, "unpack_raw", even=False)
    return F.pixel_shuffle(p, 2)
