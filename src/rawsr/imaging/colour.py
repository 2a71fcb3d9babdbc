"""Colour constants shared by camera I/O and the simulation."""

from __future__ import annotations

#: Linear sRGB (D65) to CIE XYZ, IEC 61966-2-1; row = XYZ component.
XYZ_FROM_SRGB = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
