"""Inference on whole images, one path for validation, ``rawsr.evaluate`` and ``rawsr.predict``.

- :mod:`rawsr.inference.tiling`: the network on tiles of its training crop, merged in memory or streamed by rows;
  the image's border mirrored into the tiles, and the self-ensemble over flips and transposes.
- :mod:`rawsr.inference.geometry`: the mirror extension and the eight flips and transposes that keep a mosaic RGGB.
- :mod:`rawsr.inference.super_resolve`: the network wrapped as a tile function; whole images in memory.
- :mod:`rawsr.inference.reference`: the LR colour reference of a real photograph.
- :mod:`rawsr.inference.streaming`: 16-bit rows computed in a background thread while earlier ones are written.
- :mod:`rawsr.inference.accelerate`: the network readied for fast inference (memory format, ``torch.compile``).
"""

from rawsr.inference.reference import render_reference
from rawsr.inference.streaming import prefetch, to_uint16
from rawsr.inference.super_resolve import PRECISIONS, super_resolve, tile_function
from rawsr.inference.tiling import BLENDS, tiled_forward, tiled_rows

__all__ = [
    "BLENDS",
    "PRECISIONS",
    "prefetch",
    "render_reference",
    "super_resolve",
    "tile_function",
    "tiled_forward",
    "tiled_rows",
    "to_uint16",
]
