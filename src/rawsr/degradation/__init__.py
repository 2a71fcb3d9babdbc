"""The imaging-process simulation: random cameras, blur kernels, resampling, sensor noise, the reference's JPEG, and
the batched :class:`Degradation` that makes rawSR training inputs from HR linear images. The camera pipeline it
renders with is :mod:`rawsr.imaging`.

Modules: ``cameras`` (random white balance and colour matrices), ``kernels`` (kernel maths), ``resample`` (blurring
and downsampling), ``sampling`` (uniform draws and the weighted-mixture config), ``kernel_sampler`` (kernel
families, :class:`KernelSampler`), ``noise`` (noise priors and model), ``noise_sampler`` (noise profiles,
:class:`NoiseSampler`), ``jpeg`` (the reference's JPEG) and ``simulate`` (:class:`Degradation`)."""

from .cameras import sample_camera
from .kernel_sampler import KernelSampler
from .kernels import convolve_kernels, disk_kernel, gaussian_kernel, motion_kernel
from .noise import (
    add_noise,
    quantise,
    sample_brooks,
    sample_bsraw_hetero,
    sample_bsraw_natural,
    sample_uniform,
)
from .noise_sampler import NoiseSampler
from .resample import blur, blur_downsample, downsample
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
