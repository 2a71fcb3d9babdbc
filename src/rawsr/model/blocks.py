"""Building blocks of the rawSR network: conv helpers, the dense channel-attention (DCA) block, weight init.

Conventions follow the released TPAMI model: every convolution is followed by LeakyReLU(0.2) unless a
caller says otherwise, 'same'-size padding, a bias, no normalisation layers, xavier-uniform weights and
zero biases.
"""

from __future__ import annotations

import math

import torch
from torch import nn

NEGATIVE_SLOPE = 0.2
"""Slope of the LeakyReLU used after (almost) every convolution of the network."""


def conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, act: bool = True) -> nn.Module:
    """A 'same'-padded ``kernel_size`` convolution, followed by LeakyReLU(0.2) when ``act``.

    Maps ``(B, in_channels, H, W)`` to ``(B, out_channels, H / stride, W / stride)`` (H, W divisible by
    ``stride``). For the 3x3 stride-2 case the padding is symmetric (1, 1) where TF 'SAME' pads (0, 1);
    the two differ only by a one-pixel shift of the sampling grid, which is irrelevant when training
    from scratch.
    """
    layer = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
    return nn.Sequential(layer, nn.LeakyReLU(NEGATIVE_SLOPE)) if act else layer


def deconv_geometry(stride: int) -> tuple[int, int, int]:
    """Kernel size, padding and output padding of a transposed conv that multiplies H and W by ``stride``.

    The released model uses 4x4 kernels: ``(4, 1, 0)`` for stride 2 and ``(4, 0, 0)`` for stride 4, both
    identical in output size to TF 'SAME'. Other strides are this project's generalisation: kernel
    ``max(4, stride)`` (so every output pixel is covered), padding ``ceil((k - stride) / 2)`` and the output
    padding that makes the output exactly ``stride`` times the input. ``stride`` must be >= 2.
    """
    if stride < 2:
        raise ValueError(f"deconvolution stride must be an integer >= 2, got {stride}")
    kernel = max(4, stride)
    padding = math.ceil((kernel - stride) / 2)
    return kernel, padding, 2 * padding - (kernel - stride)


def deconv(in_channels: int, out_channels: int, stride: int = 2) -> nn.Module:
    """Transposed convolution + LeakyReLU(0.2): ``(B, in, H, W)`` -> ``(B, out, stride*H, stride*W)``."""
    kernel, padding, output_padding = deconv_geometry(stride)
    layer = nn.ConvTranspose2d(
        in_channels, out_channels, kernel, stride=stride, padding=padding, output_padding=output_padding
    )
    return nn.Sequential(layer, nn.LeakyReLU(NEGATIVE_SLOPE))


class ChannelAttention(nn.Module):
    """Squeeze-excitation without channel reduction: ``sigmoid(FC(ReLU(FC(GAP(y)))))``, both FCs ``c -> c``.

    Maps ``(B, C, H, W)`` to per-channel weights ``(B, C, 1, 1)`` in (0, 1). The global average is taken
    over the whole input, so the weights (and the network output) depend on the tile size: infer with the
    tile size used in training.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, channels), nn.Sigmoid())

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """``y (B, C, H, W)`` -> attention weights ``(B, C, 1, 1)``."""
        return self.fc(y.mean(dim=(2, 3)))[..., None, None]


class DCABlock(nn.Module):
    """Dense channel-attention block: ``x + a * y`` (or ``x + y`` without attention).

    ``f_0 = x``; ``f_i = LReLU(conv3x3(cat[f_0 .. f_{i-1}]) -> growth)`` for ``i = 1 .. layers``;
    ``y = conv1x1(cat[f_0 .. f_layers]) -> channels`` with no activation; ``a = ChannelAttention(y)``.
    The released model uses ``channels=128, growth=16, layers=8``. ``attention=False`` is the
    "no channel attention" ablation. Shape preserving: ``(B, channels, H, W)`` -> ``(B, channels, H, W)``.
    """

    def __init__(self, channels: int = 128, growth: int = 16, layers: int = 8, attention: bool = True) -> None:
        super().__init__()
        self.dense = nn.ModuleList(conv(channels + i * growth, growth) for i in range(layers))
        self.fuse = nn.Conv2d(channels + layers * growth, channels, 1)
        self.attention = ChannelAttention(channels) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C, H, W)`` -> ``(B, C, H, W)``."""
        features = [x]
        for layer in self.dense:
            features.append(layer(torch.cat(features, dim=1)))
        y = self.fuse(torch.cat(features, dim=1))
        if self.attention is not None:
            y = self.attention(y) * y
        return x + y


def init_weights(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every conv, transposed conv and linear layer in ``module``.

    Matches the TF-slim defaults of the released code; every :class:`FusionGate` is then reset to zero.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, FusionGate):
            m.reset_parameters()


class FusionGate(nn.Module):
    """Injects restoration-branch features into the colour branch: ``x + LReLU(conv1x1(guide))``.

    ``x (B, channels, H, W)``, ``guide (B, guide_channels, H, W)`` -> ``(B, channels, H, W)``. The 1x1 conv
    starts at exactly zero (weights and bias), as in the released code, so at initialisation the gate is
    switched off and the colour branch sees only its reference image.
    """

    def __init__(self, guide_channels: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(guide_channels, channels, 1)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero the 1x1 conv (weights and bias)."""
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """``x (B, C, H, W)``, ``guide (B, G, H, W)`` -> ``(B, C, H, W)``."""
        return x + self.act(self.proj(guide))
