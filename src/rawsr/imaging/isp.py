"""The camera pipeline, forward (render) and inverse (unprocess), after Brooks et al., "Unprocessing Images for
Learned Raw Denoising", CVPR 2019.

Forward: linear camera RGB -> white-balance gains -> clip at the sensor's white -> colour-correction matrix
(camera RGB to linear sRGB) -> clip to [0, 1] -> optional smoothstep tone curve -> sRGB OETF. :func:`render_srgb`
is the one renderer used for targets, the LR reference, ablations and previews; :func:`unprocess` is its exact
inverse on in-gamut pixels.

Clipping the white-balanced camera RGB at 1 before the colour matrix is dcraw's and LibRaw's default highlight
mode ("clip"): a pixel saturated in every raw channel, ``(1, 1, 1)``, becomes ``wb >= 1`` after white balance and
would render pink (green lowest) through the matrix; clipped at 1 first, it renders white, as cameras show it.
"""

from __future__ import annotations

import torch
from kornia.color import linear_rgb_to_rgb, rgb_to_linear_rgb

from rawsr.imaging.bayer import check_image


def _check_params(x: torch.Tensor, wb: torch.Tensor | None, ccm: torch.Tensor | None, name: str) -> None:
    check_image(x, 3, name, even=False)
    batch = x.shape[0]
    if wb is not None and tuple(wb.shape) != (batch, 3):
        raise ValueError(f"{name}: expected wb of shape ({batch}, 3), got {tuple(wb.shape)}")
    if ccm is not None and tuple(ccm.shape) != (batch, 3, 3):
        raise ValueError(f"{name}: expected ccm of shape ({batch}, 3, 3), got {tuple(ccm.shape)}")


def apply_gains(x: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """White-balance camera RGB.

    Args:
        x: ``(B, 3, H, W)`` linear camera RGB.
        wb: ``(B, 3)`` gains (R, G, B) with G = 1.

    Returns:
        ``(B, 3, H, W)`` white-balanced camera RGB, ``x * wb``.
    """
    _check_params(x, wb, None, "apply_gains")
    return x * wb.to(x)[:, :, None, None]


def apply_ccm(x: torch.Tensor, ccm: torch.Tensor) -> torch.Tensor:
    """Apply a per-sample 3x3 colour matrix to every pixel.

    Args:
        x: ``(B, 3, H, W)`` white-balanced camera RGB.
        ccm: ``(B, 3, 3)`` camera RGB -> linear sRGB; row = output channel, rows sum to 1.

    Returns:
        ``(B, 3, H, W)`` linear sRGB (unclipped).
    """
    _check_params(x, None, ccm, "apply_ccm")
    return torch.einsum("bij,bjhw->bihw", ccm.to(x), x)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """sRGB OETF (IEC 61966-2-1) on values clipped to [0, 1].

    Args:
        x: ``(B, 3, H, W)`` linear RGB.

    Returns:
        ``(B, 3, H, W)`` sRGB in [0, 1].
    """
    return linear_rgb_to_rgb(x.clamp(0.0, 1.0))


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """Inverse sRGB OETF on values clipped to [0, 1].

    Args:
        x: ``(B, 3, H, W)`` sRGB.

    Returns:
        ``(B, 3, H, W)`` linear RGB in [0, 1].
    """
    return rgb_to_linear_rgb(x.clamp(0.0, 1.0))


def tone_map(x: torch.Tensor) -> torch.Tensor:
    """Smoothstep tone curve ``3x^2 - 2x^3`` on values clipped to [0, 1]; any shape."""
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def inverse_tone_map(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`tone_map`, ``0.5 - sin(asin(1 - 2y) / 3)``, on values clipped to [0, 1]; any shape."""
    y = y.clamp(0.0, 1.0)
    return 0.5 - torch.sin(torch.asin(1.0 - 2.0 * y) / 3.0)


def render_srgb(linear_cam: torch.Tensor, wb: torch.Tensor, ccm: torch.Tensor, tone: bool = False) -> torch.Tensor:
    """Render linear camera RGB to display sRGB: gains, clip at 1, CCM, clip to [0, 1], optional tone curve, OETF.

    Args:
        linear_cam: ``(B, 3, H, W)`` linear camera RGB (not white-balanced).
        wb: ``(B, 3)`` white-balance gains.
        ccm: ``(B, 3, 3)`` camera RGB -> linear sRGB.
        tone: apply the smoothstep tone curve before the OETF.

    Returns:
        ``(B, 3, H, W)`` sRGB in [0, 1].
    """
    _check_params(linear_cam, wb, ccm, "render_srgb")
    # Clipping the white-balanced value at 1 (module docstring) is clipping the camera value at 1 / wb; the gains
    # then fold into the matrix, ccm @ diag(wb): two passes over the pixels instead of four.
    wb = wb.to(linear_cam)
    clipped = torch.minimum(linear_cam, (1.0 / wb)[:, :, None, None])
    lin = apply_ccm(clipped, ccm.to(linear_cam) * wb[:, None, :]).clamp_(0.0, 1.0)
    if tone:
        lin = tone_map(lin)
    return linear_rgb_to_rgb(lin)


def unprocess(srgb: torch.Tensor, wb: torch.Tensor, ccm: torch.Tensor, tone: bool = False) -> torch.Tensor:
    """Invert :func:`render_srgb`: inverse OETF, optional inverse tone curve, inverse CCM, inverse gains.

    ``render_srgb(unprocess(x)) == x`` for every x in [0, 1] whose white-balanced camera RGB ``inv(ccm) @ lin``
    is at most 1 (all but a few saturated colours: the inverse matrix's rows sum to 1 with small negative
    entries); ``unprocess(render_srgb(c)) == c`` wherever ``wb * c <= 1`` and the rendered linear sRGB of c was
    in [0, 1] (in gamut).

    Args:
        srgb: ``(B, 3, H, W)`` sRGB in [0, 1].
        wb: ``(B, 3)`` white-balance gains.
        ccm: ``(B, 3, 3)`` camera RGB -> linear sRGB.
        tone: the image was rendered with the tone curve.

    Returns:
        ``(B, 3, H, W)`` linear camera RGB (may leave [0, 1] for colours outside the camera's gamut).
    """
    _check_params(srgb, wb, ccm, "unprocess")
    lin = srgb_to_linear(srgb)
    if tone:
        lin = inverse_tone_map(lin)
    inv_ccm = torch.linalg.inv(ccm.to(device=srgb.device, dtype=torch.float64)).to(srgb.dtype)
    return apply_ccm(lin, inv_ccm) / wb.to(srgb)[:, :, None, None]
