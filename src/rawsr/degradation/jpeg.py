"""JPEG compression of a batch of 8-bit images, each with its own quality.

Two codecs, one interface:

- ``libjpeg``: Pillow's libjpeg, one image at a time on the host: the exact bytes a camera or an image library
  would store (4:2:0 chroma subsampling, integer DCT, real rounding). It is what the released dataset's
  reference files are, and on a CPU it is several times faster than the alternative.
- ``kornia``: ``kornia.enhance.jpeg_codec_differentiable``, batched on the tensors' device (4:2:0, float DCT,
  a smooth approximation of rounding). It keeps the simulation on an accelerator.

``auto`` (the default) picks ``libjpeg`` for CPU tensors and ``kornia`` elsewhere. The two agree closely but not
bit for bit (``tests/test_jpeg.py`` measures it); pick one explicitly to make CPU and GPU runs use the same codec.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from kornia.enhance import jpeg_codec_differentiable
from PIL import Image

JPEG_CODECS = ("auto", "libjpeg", "kornia")


def resolve_codec(codec: str, device: torch.device) -> str:
    """``auto`` -> ``libjpeg`` on the CPU, ``kornia`` on any other device; other names pass through."""
    if codec not in JPEG_CODECS:
        raise ValueError(f"jpeg codec must be one of {JPEG_CODECS}, got {codec!r}")
    if codec == "auto":
        return "libjpeg" if device.type == "cpu" else "kornia"
    return codec


def _round_trip(pixels: np.ndarray, quality: int, out: np.ndarray) -> None:
    """Encode ``pixels (H, W, 3)`` uint8 as a JPEG of ``quality`` and decode it into ``out``."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as image:
        out[...] = np.asarray(image.convert("RGB"))


def jpeg_libjpeg(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Encode and decode each image with Pillow's libjpeg, one after the other (threads do not speed it up).

    Args:
        images: ``(B, 3, H, W)`` RGB in [0, 1], rounded to 8-bit levels before encoding.
        quality: ``(B,)`` JPEG quality per image, 1..100 (rounded to integers).

    Returns:
        ``(B, 3, H, W)`` decoded images in [0, 1] (multiples of 1/255), on ``images``' device and dtype.
    """
    pixels = images.detach().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1)
    pixels = pixels.contiguous().cpu().numpy()
    decoded = np.empty_like(pixels)
    for i, q in enumerate(quality.round().long().tolist()):
        _round_trip(pixels[i], int(q), decoded[i])
    out = torch.from_numpy(decoded).to(images.device).permute(0, 3, 1, 2)
    return out.to(images.dtype) / 255.0


def jpeg_compress(images: torch.Tensor, quality: torch.Tensor, codec: str = "auto") -> torch.Tensor:
    """JPEG round trip of a batch, one quality per image.

    Args:
        images: ``(B, 3, H, W)`` RGB in [0, 1].
        quality: ``(B,)`` JPEG quality per image, 1..100.
        codec: ``auto``, ``libjpeg`` or ``kornia`` (module docstring).

    Returns:
        ``(B, 3, H, W)`` decoded images in [0, 1], on ``images``' device and dtype.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"jpeg_compress: images must be (B, 3, H, W), got {tuple(images.shape)}")
    if tuple(quality.shape) != (images.shape[0],):
        raise ValueError(f"jpeg_compress: quality must be ({images.shape[0]},), got {tuple(quality.shape)}")
    if resolve_codec(codec, images.device) == "libjpeg":
        return jpeg_libjpeg(images, quality)
    return jpeg_codec_differentiable(images, quality.to(images)).clamp(0.0, 1.0)
