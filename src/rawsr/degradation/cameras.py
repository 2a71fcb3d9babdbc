"""Random cameras for the simulation: white-balance gains and colour matrices drawn from Brooks et al.'s priors
("Unprocessing Images for Learned Raw Denoising", CVPR 2019)."""

from __future__ import annotations

import torch

from rawsr.imaging.colour import XYZ_FROM_SRGB

# XYZ -> camera matrices of four cameras, as published with Brooks et al.'s unprocessing code (their
# ``random_ccm``); the first is the Canon EOS 5D Mark II's. Row = camera channel.
XYZ2CAMS = (
    ((1.0234, -0.2969, -0.2266), (-0.5625, 1.6328, -0.0469), (-0.0703, 0.2188, 0.6406)),
    ((0.4913, -0.0541, -0.0202), (-0.6130, 1.3513, 0.2906), (-0.1564, 0.2151, 0.7183)),
    ((0.8380, -0.2630, -0.0639), (-0.2887, 1.0725, 0.2496), (-0.0627, 0.1427, 0.5438)),
    ((0.6596, -0.2079, -0.0562), (-0.4782, 1.3016, 0.1933), (-0.0970, 0.1581, 0.5181)),
)
# Brooks et al.'s white-balance priors: red and blue gains, green fixed at 1.
RED_GAIN_RANGE = (1.9, 2.4)
BLUE_GAIN_RANGE = (1.5, 1.9)


def sample_camera(
    generator: torch.Generator, batch: int, device: torch.device | str, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw white balance and colour matrix from Brooks et al.'s priors.

    Red gain ~ U(1.9, 2.4), blue gain ~ U(1.5, 1.9), green 1. The CCM is the inverse of a random convex
    combination of :data:`XYZ2CAMS` times :data:`rawsr.imaging.colour.XYZ_FROM_SRGB`, each row of that
    sRGB -> camera matrix normalised to sum 1, so the CCM's rows also sum to 1 (white stays white).

    Args:
        generator: random source; its device is where the numbers are drawn.
        batch: number of samples B.
        device, dtype: of the returned tensors.

    Returns:
        ``wb (B, 3)`` and ``ccm (B, 3, 3)`` (camera RGB -> linear sRGB).
    """
    gen_device = generator.device
    u = torch.rand(batch, 2, generator=generator, device=gen_device, dtype=torch.float64)
    red = RED_GAIN_RANGE[0] + (RED_GAIN_RANGE[1] - RED_GAIN_RANGE[0]) * u[:, 0]
    blue = BLUE_GAIN_RANGE[0] + (BLUE_GAIN_RANGE[1] - BLUE_GAIN_RANGE[0]) * u[:, 1]
    wb = torch.stack([red, torch.ones_like(red), blue], dim=1)

    weights = torch.rand(batch, len(XYZ2CAMS), generator=generator, device=gen_device, dtype=torch.float64)
    weights = weights / weights.sum(dim=1, keepdim=True)
    xyz2cams = torch.tensor(XYZ2CAMS, device=gen_device, dtype=torch.float64)
    xyz2cam = torch.einsum("bn,nij->bij", weights, xyz2cams)
    rgb2cam = xyz2cam @ torch.tensor(XYZ_FROM_SRGB, device=gen_device, dtype=torch.float64)
    rgb2cam = rgb2cam / rgb2cam.sum(dim=2, keepdim=True)
    ccm = torch.linalg.inv(rgb2cam)
    return wb.to(device=device, dtype=dtype), ccm.to(device=device, dtype=dtype)
