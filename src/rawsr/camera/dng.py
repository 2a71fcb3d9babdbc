"""Write a minimal Bayer DNG that LibRaw reads back exactly: synthetic raw files for tests and demonstrations.

The file is an uncompressed 16-bit CFA image (one strip of little-endian samples) with the DNG tags LibRaw needs:
DNGVersion, DNGBackwardVersion, UniqueCameraModel, CFARepeatPatternDim, CFAPattern, BlackLevel (with
BlackLevelRepeatDim for per-site levels), WhiteLevel, ColorMatrix1 with CalibrationIlluminant1 = D65, and
AsShotNeutral. LibRaw refuses images smaller than 22 pixels on a side.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from rawsr.camera.raw import BAYER_RED_SITE
from rawsr.imaging.colour import XYZ_FROM_SRGB

_CFA_CODES = {"R": 0, "G": 1, "B": 2}
_D65 = 21
_INT32 = 2**31 - 1


def _rationals(values: Sequence[float], signed: bool) -> list[int]:
    """Flatten ``values`` into ``[num0, den0, num1, den1, ...]`` TIFF (S)RATIONALs (denominator <= 10**6)."""
    out: list[int] = []
    for v in values:
        f = Fraction(float(v)).limit_denominator(10**6)
        if not (-_INT32 <= f.numerator <= _INT32) or (not signed and f < 0):
            raise ValueError(f"write_dng: value {v} does not fit a TIFF {'S' if signed else ''}RATIONAL")
        out += [f.numerator, f.denominator]
    return out


def color_matrix1(ccm: np.ndarray | None) -> np.ndarray:
    """DNG ColorMatrix1 (XYZ to camera) of a camera whose white-balanced RGB maps to linear sRGB by ``ccm``.

    Args:
        ccm: ``(3, 3)`` camera RGB to linear sRGB (``None``: identity, i.e. the camera sees sRGB primaries).

    Returns:
        ``(3, 3)`` ``inv(ccm) @ inv(XYZ_FROM_SRGB)``; a reader's ``xyz2cam @ XYZ_FROM_SRGB`` gives ``inv(ccm)`` back.
    """
    ccm = np.eye(3) if ccm is None else np.asarray(ccm, dtype=np.float64)
    if ccm.shape != (3, 3) or not np.all(np.isfinite(ccm)) or abs(np.linalg.det(ccm)) < 1e-8:
        raise ValueError(f"write_dng: ccm must be an invertible finite 3x3 matrix, got {ccm.tolist()}")
    return np.linalg.inv(ccm) @ np.linalg.inv(XYZ_FROM_SRGB)


def write_dng(
    path: str | os.PathLike,
    mosaic: np.ndarray,
    cfa: str = "RGGB",
    black_level: int | Sequence[int] = 0,
    white_level: int | None = None,
    wb: Sequence[float] = (1.0, 1.0, 1.0),
    ccm: np.ndarray | None = None,
    bits: int | None = None,
    camera: str = "rawsr synthetic",
    active_area: tuple[int, int, int, int] | None = None,
) -> Path:
    """Write a Bayer mosaic as a DNG file.

    Args:
        path: output file (its folder must exist).
        mosaic: uint16 ``(H, W)`` raw values.
        cfa: ``"RGGB"``, ``"BGGR"``, ``"GRBG"`` or ``"GBRG"``: the layout at the top-left of the active area
            (the DNG convention), which is (0, 0) unless ``active_area`` says otherwise.
        black_level: one level, or four levels for the sites of the 2x2 cell read row by row.
        white_level: saturation level; default ``2**bits - 1``, or 65535 when ``bits`` is not given.
        wb: camera white-balance gains (R, G, B); written as AsShotNeutral = ``1 / wb``.
        ccm: ``(3, 3)`` white-balanced camera RGB to linear sRGB (rows summing to 1 are what readers return);
            ``None`` for identity. Written as ColorMatrix1 (see :func:`color_matrix1`).
        bits: sensor bit depth (samples are stored in 16 bits whatever it is); values above ``2**bits - 1``
            are refused.
        camera: UniqueCameraModel and Model.
        active_area: ``(top, left, bottom, right)`` of the visible area (DNG ActiveArea); ``None`` = all.

    Returns:
        the path written.
    """
    import tifffile

    mosaic = np.asarray(mosaic)
    if mosaic.dtype != np.uint16 or mosaic.ndim != 2:
        raise ValueError(f"write_dng: mosaic must be a 2-D uint16 array, got {mosaic.dtype} {mosaic.shape}")
    if cfa not in BAYER_RED_SITE:
        raise ValueError(f"write_dng: cfa must be one of {sorted(BAYER_RED_SITE)}, got {cfa!r}")
    if bits is not None and not (isinstance(bits, int) and 1 <= bits <= 16):
        raise ValueError(f"write_dng: bits must be an integer in 1..16, got {bits!r}")
    if white_level is None:
        white_level = 2**bits - 1 if bits is not None else 65535
    if bits is not None and int(mosaic.max(initial=0)) > 2**bits - 1:
        raise ValueError(f"write_dng: mosaic maximum {int(mosaic.max())} exceeds {bits} bits")
    blacks = [int(black_level)] if np.ndim(black_level) == 0 else [int(b) for b in black_level]
    if len(blacks) not in (1, 4) or min(blacks) < 0 or max(blacks) >= white_level:
        raise ValueError(f"write_dng: black_level must be 1 or 4 levels in [0, white_level), got {black_level!r}")
    wb = np.asarray(wb, dtype=np.float64)
    if wb.shape != (3,) or not np.all(wb > 0):
        raise ValueError(f"write_dng: wb must be three positive gains, got {wb.tolist()}")

    tags = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, camera, True),  # UniqueCameraModel
        (272, "s", 0, camera, True),  # Model
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, tuple(_CFA_CODES[c] for c in cfa), True),  # CFAPattern
        (50717, "I", 1, (int(white_level),), True),  # WhiteLevel
        (50721, "2i", 9, _rationals(color_matrix1(ccm).ravel(), signed=True), True),  # ColorMatrix1
        (50778, "H", 1, (_D65,), True),  # CalibrationIlluminant1
        (50728, "2I", 3, _rationals(1.0 / wb, signed=False), True),  # AsShotNeutral
    ]
    if len(blacks) == 4:
        tags.append((50713, "H", 2, (2, 2), True))  # BlackLevelRepeatDim
    tags.append((50714, "I", len(blacks), tuple(blacks), True))  # BlackLevel
    if active_area is not None:
        tags.append((50829, "I", 4, tuple(int(v) for v in active_area), True))  # ActiveArea
    path = Path(path)
    tifffile.imwrite(path, mosaic, photometric=32803, extratags=sorted(tags))
    return path
