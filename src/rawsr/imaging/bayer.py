"""The RGGB Bayer mosaic: sampling it from camera RGB, packing its 2x2 cells into channels, demosaicing it.

The colour filter array is RGGB throughout the project: R at (0, 0), G at (0, 1) and (1, 0), B at (1, 1) of
every 2x2 cell, as in the released rawSR code (``bayerprocess`` / ``pack_raw``). :func:`rawsr.camera.read_raw`
aligns every camera's mosaic to it; the simulation samples it (:func:`mosaic_rggb`), the network packs it
(:func:`pack_raw`) and the LR colour reference demosaics it (:func:`demosaic`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.color import CFA, raw_to_rgb


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


def pack_raw(x: torch.Tensor) -> torch.Tensor:
    """Pack every 2x2 cell into channels.

    Args:
        x: ``(B, C, H, W)``, H and W even; an RGGB mosaic has ``C = 1``.

    Returns:
        ``(B, 4C, H/2, W/2)``. For a mosaic the planes are (R, G1, G2, B) = ``x[0::2, 0::2], x[0::2, 1::2],
        x[1::2, 0::2], x[1::2, 1::2]``, the released ``pack_raw`` order; for ``C`` channels, channel ``4c + k`` is
        site ``k`` of channel ``c``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"pack_raw: expected a tensor of shape (B, C, H, W), got {shape}")
    check_image(x, x.shape[1], "pack_raw")
    return F.pixel_unshuffle(x, 2)


def unpack_raw(p: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`pack_raw`.

    Args:
        p: ``(B, 4C, h, w)`` packed planes.

    Returns:
        ``(B, C, 2h, 2w)``; an RGGB mosaic for ``4C = 4``.
    """
    if not isinstance(p, torch.Tensor) or p.ndim != 4 or p.shape[1] % 4:
        shape = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
        raise ValueError(f"unpack_raw: expected a tensor of shape (B, 4C, h, w), got {shape}")
    return F.pixel_shuffle(p, 2)


def demosaic(mosaic: torch.Tensor) -> torch.Tensor:
    """Bilinear demosaic of an RGGB mosaic (kornia; in OpenCV naming an RGGB sensor is ``CFA.BG``).

    Args:
        mosaic: ``(B, 1, H, W)`` RGGB mosaic, H and W even.

    Returns:
        ``(B, 3, H, W)`` camera RGB.
    """
    check_image(mosaic, 1, "demosaic")
    return raw_to_rgb(mosaic, CFA.BG)
