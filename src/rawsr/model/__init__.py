"""The rawSR network: DCA blocks, the restoration and colour branches, and :class:`RawSRNet`."""

from rawsr.model.blocks import ChannelAttention, DCABlock, FusionGate, deconv_geometry, init_weights
from rawsr.model.network import (
    ColourBranch,
    RawSRNet,
    RestorationBranch,
    apply_colour_transform,
    unpack_colour_planes,
)

__all__ = [
    "ChannelAttention",
    "ColourBranch",
    "DCABlock",
    "FusionGate",
    "RawSRNet",
    "RestorationBranch",
    "apply_colour_transform",
    "deconv_geometry",
    "init_weights",
    "unpack_colour_planes",
]
