"""The imaging-process simulation: random cameras, blur kernels, resampling, sensor noise, the reference's JPEG, and
the batched :class:`Degradation` that makes rawSR training inputs from HR linear images. The camera pipeline it
renders with is :mod:`rawsr.imaging`."""

from .cameras import sample_camera
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
    "blur",
    "blur_downsample",
    "convolve_kernels",
    "disk_kernel",
    "downsample",
    "gaussian_kernel",
    "motion_kernel",
    "quantise",
    "sample_brooks",
    "sample_bsraw_hetero",
    "sample_bsraw_natural",
    "sample_camera",
    "sample_uniform",
]
