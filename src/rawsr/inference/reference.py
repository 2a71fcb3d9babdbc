"""The LR colour reference of a real photograph: the camera rendering of its own mosaic, as in training.

The released code uses LibRaw's default rendering; this project renders the reference with the same pipeline as its
training data (:mod:`rawsr.imaging`: bilinear demosaic, camera white balance, colour matrix, sRGB OETF, 8 bits), so
that the references the network sees in training and on photographs match.
"""

from __future__ import annotations

import numpy as np
import torch

from rawsr.imaging import demosaic, render_srgb

REFERENCE_BAND_PIXELS = 1 << 18
"""LR pixels rendered at a time by :func:`render_reference` (its float temporaries take about 180 bytes per
pixel, so about 45 MiB whatever the image size)."""
DEMOSAIC_HALO = 4
"""Extra LR rows above and below each band; bilinear demosaicing reads one row either side."""


def render_reference(
    mosaic: np.ndarray,
    wb: np.ndarray,
    ccm: np.ndarray,
    device: torch.device | str = "cpu",
    band_pixels: int = REFERENCE_BAND_PIXELS,
) -> np.ndarray:
    """The camera rendering of a mosaic, quantised to 8 bits, computed in bands of rows.

    Args:
        mosaic: ``(H, W)`` float RGGB mosaic in [0, 1], H and W even.
        wb: ``(3,)`` white-balance gains (R, G, B).
        ccm: ``(3, 3)`` camera RGB -> linear sRGB.
        device: where the rendering runs; the result is on the CPU.
        band_pixels: about how many LR pixels to render per step (whole even numbers of rows, at least 2);
            only that many pixels of float data exist at a time.

    Returns:
        ``(H, W, 3)`` uint8 sRGB: ``round(255 * render_srgb(demosaic(mosaic), wb, ccm))``.
    """
    h, w = mosaic.shape
    out = np.empty((h, w, 3), dtype=np.uint8)
    wb_t = torch.as_tensor(np.asarray(wb, dtype=np.float32), device=device)[None]
    ccm_t = torch.as_tensor(np.asarray(ccm, dtype=np.float32), device=device)[None]
    halo = DEMOSAIC_HALO
    band = max(2, band_pixels // w // 2 * 2)
    for y0 in range(0, h, band):
        y1 = min(h, y0 + band)
        top, bottom = max(0, y0 - halo), min(h, y1 + halo)
        chunk = torch.as_tensor(np.ascontiguousarray(mosaic[top:bottom], dtype=np.float32), device=device)
        srgb = render_srgb(demosaic(chunk[None, None]), wb_t, ccm_t)[0, :, y0 - top : y1 - top]
        out[y0:y1] = srgb.mul(255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return out
