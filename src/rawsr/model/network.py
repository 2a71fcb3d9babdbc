"""The two-branch rawSR network (Xu et al., TPAMI 2021): raw restoration plus reference-guided colour correction.

Branch 1 (restoration) packs the RGGB mosaic into (R, G1, G2, B) planes at half resolution, runs an
encoder-decoder of DCA blocks and pixel-shuffles to a high-resolution linear image ``X_lin``. Branch 2
(colour) reads the low-resolution sRGB reference and predicts, directly at output resolution, a per-pixel
3x3 matrix ``A`` and offset ``B``; the output is ``sRGB = A . X_lin + B`` per pixel. Two zero-initialised
1x1 "fusion" convolutions feed restoration features into the colour branch.

At ``width=128, growth=16, dense_layers=8`` the topology is the released model's, layer for layer
(5,163,324 parameters at x2, 5,495,244 at x4).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rawsr.config import SCALES
from rawsr.imaging import pack_raw, render_srgb
from rawsr.model.blocks import DCABlock, FusionGate, conv, deconv, init_weights

INPUTS = ("raw", "srgb")


def unpack_color_planes(t: torch.Tensor, factor: int) -> torch.Tensor:
    """Depth-to-space per colour: ``(B, 3 * factor**2, h, w)`` -> ``(B, 3, factor*h, factor*w)``.

    Colour ``c`` is built from channels ``[c * factor**2, (c + 1) * factor**2)``; output pixel
    ``(factor*y + i, factor*x + j)`` takes channel ``c * factor**2 + factor*i + j`` at ``(y, x)``.
    """
    return F.pixel_shuffle(t, factor)


def apply_color_transform(m: torch.Tensor, linear: torch.Tensor) -> torch.Tensor:
    """Per-pixel affine colour transform ``A(p) . linear(p) + B(p)``.

    ``m (B, 12, H, W)``: channels 0..8 are ``A`` row-major (row = output channel), 9..11 are ``B``.
    ``linear (B, 3, H, W)`` -> ``(B, 3, H, W)``, unbounded (clip only for display or metrics).
    """
    a = m[:, :9].unflatten(1, (3, 3))
    return torch.einsum("bijhw,bjhw->bihw", a, linear) + m[:, 9:12]


class RestorationBranch(nn.Module):
    """Encoder-decoder of DCA blocks: packed input -> HR linear image plus the two fusion features.

    ``packed (B, in_channels, h, w)`` (h, w even) -> ``linear (B, 3, 2*scale*h, 2*scale*w)``,
    ``fc11 (B, width, h/2, w/2)``, ``fc12 (B, 2*width, h, w)``.
    """

    def __init__(
        self, in_channels: int, scale: int, width: int, growth: int, dense_layers: int, attention: bool
    ) -> None:
        super().__init__()
        w = width
        self.scale = scale
        self.conv_in = conv(in_channels, w)
        self.dense0 = DCABlock(w, growth, dense_layers, attention)
        self.down = conv(w, w, stride=2)
        self.dense1 = DCABlock(w, growth, dense_layers, attention)
        self.dense2 = DCABlock(w, growth, dense_layers, attention)
        self.bottleneck_low = conv(3 * w, w, kernel_size=1)
        self.up = nn.Sequential(deconv(w, w, stride=2), conv(w, w))
        self.dense3 = DCABlock(w, growth, dense_layers, attention)
        self.bottleneck_high = conv(4 * w, 2 * w, kernel_size=1)
        self.conv_out = conv(2 * w, 12 * scale**2)

    def forward(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, C, h, w)`` -> ``(linear (B, 3, 2sh, 2sw), fc11 (B, W, h/2, w/2), fc12 (B, 2W, h, w))``."""
        x0 = self.conv_in(packed)
        d0 = self.dense0(x0)
        p = self.down(d0)
        d1 = self.dense1(p)
        d2 = self.dense2(d1)
        fc11 = self.bottleneck_low(torch.cat([d2, d1, p], dim=1))
        u = self.up(fc11)
        d3 = self.dense3(u)
        fc12 = self.bottleneck_high(torch.cat([x0, d0, u, d3], dim=1))
        linear = unpack_color_planes(self.conv_out(fc12), 2 * self.scale)
        return linear, fc11, fc12


class ColorBranch(nn.Module):
    """Reference-guided colour branch: LR sRGB reference -> per-pixel affine parameters ``M`` at HR.

    ``ref (B, 3, H, W)`` (H, W divisible by 4), optional ``fc11 (B, width, H/4, W/4)`` and
    ``fc12 (B, 2*width, H/2, W/2)`` -> ``M (B, 12, scale*H, scale*W)``. With ``fusion=False`` there are no
    fusion gates and the restoration features are ignored.
    """

    def __init__(self, scale: int, width: int, fusion: bool) -> None:
        super().__init__()
        w = width
        self.pool = nn.AvgPool2d(2)
        self.conv0 = conv(3, w)
        self.conv1 = conv(w, w)
        self.conv2 = conv(w, w)
        self.fuse_low = FusionGate(w, 2 * w) if fusion else None
        self.mid = nn.Sequential(conv(2 * w, 2 * w), deconv(2 * w, w, stride=2), conv(w, w))
        self.fuse_high = FusionGate(2 * w, 2 * w) if fusion else None
        self.up = nn.Sequential(conv(2 * w, 2 * w), deconv(2 * w, w, stride=2), conv(w, w), deconv(w, w, stride=scale))
        self.head = conv(w, 12, act=False)

    def forward(
        self, ref: torch.Tensor, fc11: torch.Tensor | None = None, fc12: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``ref (B, 3, H, W)`` -> ``M (B, 12, sH, sW)``; see the class docstring for the fusion inputs."""
        r0 = self.pool(self.conv0(ref))
        r1 = self.pool(self.conv1(r0))
        fc21 = torch.cat([self.conv2(r1), r1], dim=1)
        if self.fuse_low is not None:
            fc21 = self.fuse_low(fc21, fc11)
        fc22 = torch.cat([self.mid(fc21), r0], dim=1)
        if self.fuse_high is not None:
            fc22 = self.fuse_high(fc22, fc12)
        return self.head(self.up(fc22))


def _require(ok: bool, name: str, expected: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"RawSRNet argument '{name}': expected {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class RawSRNet(nn.Module):
    """The rawSR two-branch network.

    Args:
        scale: super-resolution factor, one of :data:`rawsr.config.SCALES`. 2 and 4 are the paper's; for 3 the
            final colour-branch deconvolution uses this project's generalised geometry (see ``deconv_geometry``).
        width: base channel count (released model: 128); every 128/256 channel count scales with it.
        growth: channels added per dense layer in a DCA block (released: 16).
        dense_layers: dense 3x3 layers per DCA block (released: 8).
        attention: channel attention in the DCA blocks; ``False`` is the "no channel attention" ablation.
        fusion: the two zero-initialised fusion gates from the restoration to the colour branch; ``False``
            removes both. Only meaningful with ``color_branch=True``.
        color_branch: ``False`` drops the colour branch and renders ``srgb`` from ``linear`` with the
            camera white balance and colour matrix (:func:`rawsr.imaging.render_srgb`).
        input: ``"raw"`` (the RGGB mosaic feeds the restoration branch) or ``"srgb"`` (the ablation where the
            sRGB reference, packed to 12 channels, feeds it instead).
        reference_skip: this project's option, not the paper's (default ``False``): add the bicubic upsampling of
            the reference to the colour transform, ``sRGB = A . X_lin + B + up(ref)``, and start the colour
            branch's last convolution at zero, so that the untrained network answers with bicubic upsampling and
            learns a correction of it (a global residual, as in VDSR). Short runs on a CPU then beat bicubic and
            keep the reference's colours; needs the colour branch.

    The channel attention pools over the whole input, so outputs depend on the input size: run inference
    on tiles of the training crop size. H and W must be multiples of :attr:`SIZE_MULTIPLE`.
    """

    SIZE_MULTIPLE = 4
    """Input height and width must be divisible by this (packing and two stride-2 stages)."""

    def __init__(
        self,
        scale: int = 2,
        width: int = 128,
        growth: int = 16,
        dense_layers: int = 8,
        attention: bool = True,
        fusion: bool = True,
        color_branch: bool = True,
        input: str = "raw",
        reference_skip: bool = False,
    ) -> None:
        super().__init__()
        _require(_is_int(scale) and scale in SCALES, "scale", f"one of {list(SCALES)}", scale)
        for name, value in (("width", width), ("growth", growth), ("dense_layers", dense_layers)):
            _require(_is_int(value) and value > 0, name, "a positive integer", value)
        flags = (("attention", attention), ("fusion", fusion), ("color_branch", color_branch))
        for name, value in (*flags, ("reference_skip", reference_skip)):
            _require(isinstance(value, bool), name, "a bool", value)
        _require(input in INPUTS, "input", f"one of {list(INPUTS)}", input)
        _require(color_branch or not reference_skip, "reference_skip", "False without the colour branch", True)

        self.scale = scale
        self.input = input
        self.restoration = RestorationBranch(4 if input == "raw" else 12, scale, width, growth, dense_layers, attention)
        self.color = ColorBranch(scale, width, fusion) if color_branch else None
        self.reference_skip = reference_skip
        init_weights(self)
        if reference_skip:  # the untrained network answers with bicubic upsampling
            nn.init.zeros_(self.color.head.weight)

    def num_parameters(self) -> int:
        """Total number of parameters."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        raw: torch.Tensor | None,
        ref: torch.Tensor | None,
        wb: torch.Tensor | None = None,
        ccm: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Super-resolve one batch.

        Args:
            raw: ``(B, 1, H, W)`` RGGB mosaic, linear, not white-balanced (may be ``None`` when
                ``input="srgb"``).
            ref: ``(B, 3, H, W)`` sRGB reference in [0, 1] (may be ``None`` without colour branch and with
                ``input="raw"``).
            wb: ``(B, 3)`` camera white-balance gains, needed only with ``color_branch=False``.
            ccm: ``(B, 3, 3)`` camera-to-sRGB matrix, needed only with ``color_branch=False``.

        Returns:
            ``{"srgb": (B, 3, sH, sW), "linear": (B, 3, sH, sW)}``; ``srgb`` is unbounded.
        """
        source = self._check_inputs(raw, ref)
        linear, fc11, fc12 = self.restoration(pack_raw(source))
        if self.color is None:
            return {"srgb": self._render(linear, wb, ccm), "linear": linear}
        m = self.color(ref, fc11, fc12)
        srgb = apply_color_transform(m, linear)
        if self.reference_skip:
            srgb = srgb + F.interpolate(ref, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return {"srgb": srgb, "linear": linear}

    def _check_inputs(self, raw: torch.Tensor | None, ref: torch.Tensor | None) -> torch.Tensor:
        """Validate the shapes of ``raw (B, 1, H, W)`` and ``ref (B, 3, H, W)``; return the restoration input."""
        needed = {"raw": self.input == "raw", "ref": self.input == "srgb" or self.color is not None}
        shapes = {}
        for name, tensor, channels in (("raw", raw, 1), ("ref", ref, 3)):
            if tensor is None:
                if needed[name]:
                    raise ValueError(f"RawSRNet.forward: '{name}' is required by this model, got None")
                continue
            if not (isinstance(tensor, torch.Tensor) and tensor.is_floating_point()):
                raise ValueError(f"RawSRNet.forward: '{name}' must be a floating-point tensor, got {tensor!r}")
            if tensor.ndim != 4 or tensor.shape[1] != channels:
                raise ValueError(
                    f"RawSRNet.forward: '{name}' must have shape (B, {channels}, H, W), got {tuple(tensor.shape)}"
                )
            h, w = tensor.shape[-2:]
            if h % self.SIZE_MULTIPLE or w % self.SIZE_MULTIPLE:
                raise ValueError(
                    f"RawSRNet.forward: '{name}' height and width must be divisible by {self.SIZE_MULTIPLE}, "
                    f"got {h}x{w}"
                )
            shapes[name] = (tensor.shape[0], h, w)
        if len(shapes) == 2 and shapes["raw"] != shapes["ref"]:
            raise ValueError(
                f"RawSRNet.forward: 'raw' and 'ref' must share batch size, height and width; got (B, H, W) "
                f"{shapes['raw']} and {shapes['ref']}"
            )
        return raw if self.input == "raw" else ref

    @staticmethod
    def _render(linear: torch.Tensor, wb: torch.Tensor | None, ccm: torch.Tensor | None) -> torch.Tensor:
        """Fixed camera pipeline for the no-colour-branch ablation: ``(B, 3, H, W)`` -> ``(B, 3, H, W)``."""
        missing = [name for name, value in (("wb", wb), ("ccm", ccm)) if value is None]
        if missing:
            raise ValueError(
                "RawSRNet(color_branch=False) renders sRGB with the camera pipeline: forward() needs "
                f"'wb' (B, 3) and 'ccm' (B, 3, 3), got None for {missing}"
            )
        return render_srgb(linear, wb, ccm)
