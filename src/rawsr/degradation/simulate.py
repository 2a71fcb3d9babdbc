"""The imaging-process simulation that turns HR linear images into rawSR training inputs.

rawSR's degradation (Xu et al., TPAMI 2021): ``X_raw = f_Bayer(f_down(X_lin ⊛ k_def ⊛ k_mot)) + n`` with
heteroscedastic Gaussian noise ``n`` on the linear mosaic, plus an LR colour reference rendered from the
degraded raw through the same camera pipeline as the ground truth. :class:`Degradation` runs it batched on
whatever device the batch is on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from rawsr.config import require, require_bool, require_choice, require_keys, require_range, require_scale
from rawsr.imaging import demosaic, mosaic_rggb, render_srgb

from .jpeg import JPEG_CODECS, jpeg_compress
from .kernel_sampler import KernelSampler
from .noise import add_noise, quantise
from .noise_sampler import NoiseSampler
from .resample import DOWNSAMPLE_MODES, blur_downsample
from .sampling import draw_uniforms, lerp_range

REFERENCE_SOURCES = ("degraded", "clean")

log = logging.getLogger(__name__)


def _plain(cfg: Any) -> Any:
    """Turn (possibly OmegaConf) mappings and lists into plain dicts and lists."""
    if isinstance(cfg, Mapping):
        return {k: _plain(v) for k, v in cfg.items()}
    if isinstance(cfg, Sequence) and not isinstance(cfg, str):
        return [_plain(v) for v in cfg]
    return cfg


def _require_bits(value: Any, key: str, optional: bool) -> int | None:
    if optional and value is None:
        return None
    ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 16
    require(ok, key, "an integer bit depth in [1, 16]" + (" or null" if optional else ""), value)
    return value


class Degradation:
    """Batched, seeded rawSR imaging-process simulation.

    Args:
        scale: super-resolution factor s.
        kernel: ``degradation.kernel`` config, see :class:`rawsr.degradation.kernel_sampler.KernelSampler`.
        noise: ``degradation.noise`` config, see :class:`rawsr.degradation.noise_sampler.NoiseSampler`.
        downsample: ``area`` (mean of s x s blocks, aligned with pixel-shuffle upsampling), ``stride`` (top-left
            pixel of each block) or ``bicubic`` (antialiased).
        bits: sensor bit depth the noisy mosaic is quantised to (null: no quantisation).
        clip: clip the noisy mosaic to [0, 1].
        reference: LR colour reference settings: ``source`` (``degraded``: demosaic of the noisy mosaic, as at
            real-image test time; ``clean``: the blurred, downsampled linear image before mosaicking and noise),
            ``bits`` (quantisation of the rendered reference, default 8), ``jpeg`` (null, or a ``[low, high]``
            quality range drawn per image for JPEG compression), ``jpeg_codec`` (``auto``: libjpeg for CPU
            batches, kornia's batched codec on accelerators; or ``libjpeg`` / ``kornia``, see
            :mod:`rawsr.degradation.jpeg`).
        tone: apply the smoothstep tone curve when rendering the target and the reference.
        compile: run the renderer (the chain of element-wise passes that makes the HR target and the reference,
            most of the simulation's time on a CPU) through ``torch.compile``, which fuses it into one loop. Each
            new batch shape costs a one-time compilation (about 20 s on a CPU); where compilation fails (no C++
            compiler, an unsupported device) a warning says so once and the renderer runs eagerly.

    Calling it with ``batch`` and ``seeds`` returns a new dict (all fp32, on the batch's device):

    - ``lr_raw (B, 1, H, W)``: noisy RGGB mosaic, linear camera raw, not white-balanced;
    - ``lr_ref (B, 3, H, W)``: LR sRGB colour reference;
    - ``hr_srgb (B, 3, sH, sW)``: ``render_srgb(hr_linear, wb, ccm, tone)``, the target;
    - ``hr_linear``, ``wb``, ``ccm``: the inputs (fp32);
    - ``kernel (B, k, k)``, ``shot (B,)``, ``read (B,)``: what was sampled.

    Sample i's random draws come only from a generator seeded with ``seeds[i]`` on the batch's device, so its
    output does not depend on the other samples or its position in the batch: bit for bit on the CPU; on CUDA
    the draws are identical and the values agree to float rounding (cuBLAS/cuDNN choose algorithms by batch
    shape, which can flip a rare quantisation step). The same seed gives different draws on CPU and CUDA
    (different generators), with the same statistics.
    """

    def __init__(
        self,
        scale: int,
        kernel: dict,
        noise: dict,
        downsample: str = "area",
        bits: int | None = 12,
        clip: bool = True,
        reference: dict | None = None,
        tone: bool = False,
        compile: bool = False,
    ):
        self.scale = require_scale(scale, "degradation.scale")
        self.kernels = KernelSampler(_plain(kernel), "degradation.kernel")
        self.noise = NoiseSampler(_plain(noise), "degradation.noise")
        require_choice(downsample, "degradation.downsample", DOWNSAMPLE_MODES)
        self.downsample = downsample
        self.bits = _require_bits(bits, "degradation.bits", optional=True)
        self.clip = require_bool(clip, "degradation.clip")
        self.tone = require_bool(tone, "degradation.tone")
        self.compile = require_bool(compile, "degradation.compile")
        self._compiled: Callable | None = None
        ref = require_keys(_plain(reference) or {}, "degradation.reference", ("source", "bits", "jpeg", "jpeg_codec"))
        self.ref_source = ref.get("source", "degraded")
        require_choice(self.ref_source, "degradation.reference.source", REFERENCE_SOURCES)
        self.ref_bits = _require_bits(ref.get("bits", 8), "degradation.reference.bits", optional=False)
        jpeg = ref.get("jpeg")
        self.jpeg = None if jpeg is None else require_range(jpeg, "degradation.reference.jpeg", 1.0, 100.0)
        self.jpeg_codec = ref.get("jpeg_codec", "auto")
        require_choice(self.jpeg_codec, "degradation.reference.jpeg_codec", JPEG_CODECS)

    def __repr__(self) -> str:
        return (
            f"Degradation(scale={self.scale}, kernel={self.kernels.mode}/{self.kernels.size}, "
            f"downsample={self.downsample}, bits={self.bits}, clip={self.clip}, tone={self.tone}, "
            f"reference={self.ref_source}/{self.ref_bits}/jpeg={self.jpeg}/{self.jpeg_codec}, compile={self.compile})"
        )

    def _check_batch(self, batch: Mapping, seeds: torch.Tensor) -> tuple[torch.Tensor, ...]:
        for name in ("hr_linear", "wb", "ccm"):
            if name not in batch:
                raise KeyError(f"Degradation: batch['{name}'] is missing (expected hr_linear, wb, ccm)")
        hr, wb, ccm = batch["hr_linear"], batch["wb"], batch["ccm"]
        multiple = 2 * self.scale
        if hr.ndim != 4 or hr.shape[1] != 3 or hr.shape[-2] % multiple or hr.shape[-1] % multiple:
            raise ValueError(
                f"Degradation: batch['hr_linear'] must be (B, 3, sH, sW) with sH and sW multiples of "
                f"2 * scale = {multiple}, got {tuple(hr.shape)}"
            )
        b = hr.shape[0]
        if tuple(wb.shape) != (b, 3) or tuple(ccm.shape) != (b, 3, 3):
            raise ValueError(
                f"Degradation: expected batch['wb'] ({b}, 3) and batch['ccm'] ({b}, 3, 3), got "
                f"{tuple(wb.shape)} and {tuple(ccm.shape)}"
            )
        if not isinstance(seeds, torch.Tensor) or tuple(seeds.shape) != (b,) or seeds.is_floating_point():
            shape = tuple(seeds.shape) if isinstance(seeds, torch.Tensor) else type(seeds).__name__
            raise ValueError(f"Degradation: seeds must be an integer tensor of shape ({b},), got {shape}")
        return hr, wb.to(hr.device), ccm.to(hr.device)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_compiled": None}  # compiled functions do not pickle; compile again on use

    def render(self, linear_cam: torch.Tensor, wb: torch.Tensor, ccm: torch.Tensor) -> torch.Tensor:
        """:func:`rawsr.imaging.render_srgb` with this simulation's tone setting, compiled if configured."""
        if not self.compile:
            return render_srgb(linear_cam, wb, ccm, self.tone)
        if self._compiled is None:
            self._compiled = torch.compile(render_srgb)
        try:
            return self._compiled(linear_cam, wb, ccm, self.tone)
        except Exception as error:  # the backend's failures have no common type (compiler, device, platform)
            log.warning("degradation.compile: torch.compile failed, rendering eagerly from now on (%s)", error)
            self.compile = False
            return render_srgb(linear_cam, wb, ccm, self.tone)

    @torch.no_grad()
    def __call__(self, batch: dict, seeds: torch.Tensor) -> dict:
        """Degrade a batch; see the class docstring for the keys. ``seeds``: ``(B,)`` int64, one per sample."""
        hr, wb, ccm = self._check_batch(batch, seeds)
        device = hr.device
        generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds.tolist()]
        with torch.autocast(device_type=device.type, enabled=False):
            hr, wb, ccm = hr.float(), wb.float(), ccm.float()
            n_k, n_n = self.kernels.n_uniforms, self.noise.n_uniforms
            u = draw_uniforms(generators, n_k + n_n + 1)
            kernel = self.kernels.from_uniforms(u[:, :n_k])
            shot, read = self.noise.from_uniforms(u[:, n_k : n_k + n_n])

            lr_linear = blur_downsample(hr, kernel, self.scale, self.downsample).clamp(0.0, 1.0)
            raw = add_noise(mosaic_rggb(lr_linear), shot, read, generators)
            if self.clip:
                raw = raw.clamp(0.0, 1.0)
            if self.bits is not None:
                raw = quantise(raw, self.bits)

            source = demosaic(raw) if self.ref_source == "degraded" else lr_linear
            ref = quantise(self.render(source, wb, ccm), self.ref_bits)
            if self.jpeg is not None:
                quality = lerp_range(u[:, -1], self.jpeg).round()
                ref = quantise(jpeg_compress(ref, quality, self.jpeg_codec), self.ref_bits)

            return {
                "lr_raw": raw,
                "lr_ref": ref,
                "hr_srgb": self.render(hr, wb, ccm),
                "hr_linear": hr,
                "wb": wb,
                "ccm": ccm,
                "kernel": kernel,
                "shot": shot,
                "read": read,
            }
