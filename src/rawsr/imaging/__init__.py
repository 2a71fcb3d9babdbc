"""The camera pipeline that the camera I/O, the simulation, the network and inference share (the bottom layer).

- :mod:`rawsr.imaging.bayer`: the RGGB mosaic, its 2x2 packing and its demosaicing.
- :mod:`rawsr.imaging.isp`: the one renderer (:func:`render_srgb`, linear camera RGB to sRGB) and its inverse
  (:func:`unprocess`). Targets, references, the no-colour-branch ablation and predictions all go through it.
- :mod:`rawsr.imaging.colour`: colour constants.

Nothing here imports any other part of rawsr but :mod:`rawsr.config`.
"""

from rawsr.imaging.bayer import check_image, demosaic, mosaic_rggb, pack_raw, unpack_raw
from rawsr.imaging.colour import XYZ_FROM_SRGB
from rawsr.imaging.isp import (
    apply_ccm,
    apply_gains,
    inverse_tone_map,
    linear_to_srgb,
    render_srgb,
    srgb_to_linear,
    tone_map,
    unprocess,
)

__all__ = [
    "XYZ_FROM_SRGB",
    "apply_ccm",
    "apply_gains",
    "check_image",
    "demosaic",
    "inverse_tone_map",
    "linear_to_srgb",
    "mosaic_rggb",
    "pack_raw",
    "render_srgb",
    "srgb_to_linear",
    "tone_map",
    "unpack_raw",
    "unprocess",
]
