"""The imaging-process simulation: camera pipeline, Bayer sampling, blur kernels, sensor noise, and the batched
:class:`Degradation` that makes rawSR training inputs from HR linear images."""

from .isp import (
    apply_ccm,
    apply_gains,
    demosaic,
    inverse_tone_map,
    linear_to_srgb,
    render_srgb,
    sample_camera,
    srgb_to_linear,
    tone_map,
    unprocess,
)
from .kernels import (
    KernelSampler,
    blur,
    blur_downsample,
    convolve_kernels,
    disk_kernel,
    downsample,
    gaussian_kernel,
    motion_kernel,
)
from .mosaic import mosaic_rggb, pack_raw, unpack_raw
from .noise import (
    NoiseSampler,
    add_noise,
    quantise,
    sample_brooks,
    sample_bsraw_hetero,
    sample_bsraw_natural,
    sample_uniform,
)
from .simulate import Degradation

__all__ = [
    "Degradation",
    "KernelSampler",
    "NoiseSampler",
    "add_noise",
    "apply_ccm",
    "apply_gains",
    "blur",
    "blur_downsample",
    "convolve_kernels",
    "demosaic",
    "disk_kernel",
    "downsample",
    "gaussian_kernel",
    "inverse_tone_map",
    "linear_to_srgb",
    "mosaic_rggb",
    "motion_kernel",
    "pack_raw",
    "quantise",
    "render_srgb",
    "sample_brooks",
    "sample_bsraw_hetero",
    "sample_bsraw_natural",
    "sample_camera",
    "sample_uniform",
    "srgb_to_linear",
    "tone_map",
    "unpack_raw",
    "unprocess",
]
