"""The rawSR network: DCA blocks, the restoration and colour branches, and :class:`RawSRNet`."""

from rawsr.model.blocks import ChannelAttention, DCABlock, FusionGate, deconv_geometry, init_weights
from rawsr.model.network import (
    ColorBranch,
    RawSRNet,
    RestorationBranch,
    apply_color_transform,
    unpack_color_planes,
)

__all__ = [
    "ChannelAttention",
    "ColorBranch",
    "DCABlock",
    "FusionGate",
    "RawSRNet",
    "RestorationBranch",
    "apply_color_transform",
    "deconv_geometry",
    "init_weights",
    "unpack_color_planes",
]
