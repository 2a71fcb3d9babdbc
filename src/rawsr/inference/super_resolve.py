"""The network on whole images: one tile function and one tiled super-resolution for validation, ``rawsr.evaluate``
and ``rawsr.predict``."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from rawsr.inference.tiling import TileFn, tiled_forward

PRECISIONS = ("32", "bf16")
"""Precisions a tile function can force: ``"32"`` (float32, autocast off) or ``"bf16"`` (bfloat16 autocast)."""


def _camera(value: torch.Tensor | np.ndarray | Sequence | None, shape: tuple[int, ...], device: torch.device):
    """``wb`` or ``ccm`` as a float32 tensor of ``shape`` with a leading batch of one on ``device`` (or ``None``)."""
    if value is None:
        return None
    return (
        torch.as_tensor(np.asarray(value, dtype=np.float32) if not torch.is_tensor(value) else value)
        .to(device=device, dtype=torch.float32)
        .reshape(1, *shape)
    )


def tile_function(
    net: nn.Module,
    wb: torch.Tensor | np.ndarray | None = None,
    ccm: torch.Tensor | np.ndarray | None = None,
    device: torch.device | str | None = None,
    precision: str | None = None,
    linear: bool = False,
) -> TileFn:
    """Wrap the network for :mod:`rawsr.inference.tiling`.

    Args:
        net: a :class:`rawsr.model.RawSRNet` (any module with its ``forward(raw, ref, wb=, ccm=)``).
        wb: the image's ``(3,)`` white-balance gains, passed to every tile (used by the fixed-pipeline ablation).
        ccm: the image's ``(3, 3)`` camera-to-sRGB matrix, likewise.
        device: where the network runs; default: the device of its parameters.
        precision: ``None`` runs under whatever autocast the caller set (Lightning's precision in validation);
            ``"32"`` turns autocast off; ``"bf16"`` runs under bfloat16 autocast.
        linear: also return the network's ``linear`` output (HR camera RGB, before the colour branch), after
            ``srgb``: one network run gives both, tiled together with ``channels=6``.

    Returns:
        ``fn(raw (N, 1, T, T), ref (N, 3, T, T)) -> srgb (N, 3, sT, sT)`` float32 on ``device``, or
        ``cat([srgb, linear]) (N, 6, sT, sT)`` with ``linear=True``. The tiles may come from any device; ``ref``
        is float in [0, 1] or uint8 (divided by 255).
    """
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"tile_function: precision must be None or one of {list(PRECISIONS)}, got {precision!r}")
    device = torch.device(device) if device is not None else next(net.parameters()).device
    wb_t, ccm_t = _camera(wb, (3,), device), _camera(ccm, (3, 3), device)

    def fn(raw: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        n = raw.shape[0]
        raw = raw.to(device=device, dtype=torch.float32, non_blocking=True)
        ref = ref.to(device=device, non_blocking=True)
        ref = ref.to(torch.float32) / 255.0 if ref.dtype == torch.uint8 else ref.to(torch.float32)
        wb_n = None if wb_t is None else wb_t.expand(n, 3)
        ccm_n = None if ccm_t is None else ccm_t.expand(n, 3, 3)
        if precision is None:
            context = contextlib.nullcontext()
        else:
            context = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        with context:
            out = net(raw, ref, wb=wb_n, ccm=ccm_n)
        if linear:
            return torch.cat([out["srgb"].float(), out["linear"].float()], dim=1)
        return out["srgb"].float()

    return fn


@torch.no_grad()
def super_resolve(
    net: nn.Module,
    raw: torch.Tensor,
    ref: torch.Tensor,
    tile: int,
    scale: int,
    wb: torch.Tensor | None = None,
    ccm: torch.Tensor | None = None,
    blend: str = "mean",
    overlap: int | None = None,
    batch: int = 4,
    precision: str | None = None,
    pad: int = 0,
    tta: bool = False,
) -> torch.Tensor:
    """Tile-wise sRGB prediction of whole images held in memory (validation and ``rawsr.evaluate``).

    Args:
        net: the network.
        raw: ``(B, 1, H, W)`` mosaics, H and W even.
        ref: ``(B, 3, H, W)`` colour references in [0, 1].
        tile: LR tile side, the training crop (the channel attention pools over the tile).
        scale: super-resolution factor.
        wb: ``(B, 3)`` camera white balance per image, or ``None``.
        ccm: ``(B, 3, 3)`` camera colour matrices, or ``None``.
        blend: ``"mean"`` (the paper's protocol) or ``"linear"``; see :mod:`rawsr.inference.tiling`.
        overlap: LR overlap of neighbouring tiles; ``None`` is half a tile (the paper's stride).
        batch: tiles per network call.
        precision: see :func:`tile_function`.
        pad: LR pixels of mirror image added around each image before tiling and cropped from the output, even;
            0 (the paper's protocol) leaves the image's border at a tile's border, where the network darkens it.
        tta: average the outputs of the eight flips and transposes (the self-ensemble, eight times the network
            time); see :mod:`rawsr.inference.tiling`.

    Returns:
        ``(B, 3, scale*H, scale*W)`` float32 sRGB, clipped to [0, 1].
    """
    outputs = []
    for i in range(raw.shape[0]):
        fn = tile_function(
            net,
            None if wb is None else wb[i],
            None if ccm is None else ccm[i],
            device=raw.device,
            precision=precision,
        )
        image = tiled_forward(
            fn, raw[i : i + 1], ref[i : i + 1], tile, scale, overlap=overlap, blend=blend, batch=batch, pad=pad, tta=tta
        )
        outputs.append(image)
    return torch.cat(outputs).float().clamp(0, 1)
