"""Write a minimal Bayer DNG that LibRaw reads back exactly: synthetic raw files for tests and demonstrations.

The file is an uncompressed 16-bit CFA image (one strip of little-endian samples) with the DNG tags LibRaw needs:
DNGVersion, DNGBackwardVersion, UniqueCameraModel, CFARepeatPatternDim, CFAPattern, BlackLevel (with
BlackLevelRepeatDim for per-site levels), WhiteLevel, ColorMatrix1 with CalibrationIlluminant1 = D65, and
AsShotNeutral. LibRaw refuses images smaller than 22 pixels on a side.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from rawsr.camera.metadata import CameraMetadata
from rawsr.camera.raw import BAYER_RED_SITE
from rawsr.imaging.colour import XYZ_FROM_SRGB
from rawsr.writers import checked_rows

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
    orientation: int = 1,
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
        orientation: TIFF Orientation (1 upright, 3, 6 or 8), written only when not 1.

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
    if orientation != 1:
        tags.append((274, "H", 1, (int(orientation),), True))  # Orientation
    if active_area is not None:
        tags.append((50829, "I", 4, tuple(int(v) for v in active_area), True))  # ActiveArea
    path = Path(path)
    tifffile.imwrite(path, mosaic, photometric=32803, extratags=sorted(tags))
    return path


LINEAR_RAW = 34892
"""TIFF PhotometricInterpretation of a demosaiced (linear) DNG."""
DNG_TILE = 256
"""Tile side of :func:`write_linear_dng` (LibRaw reads tiled uncompressed LinearRaw DNGs)."""
LINEAR_WHITE = 65535


def _ascii(code: int, text: str) -> tuple:
    from rawsr.writers import tiff_ascii

    return (code, "s", 0, tiff_ascii(text), True)


def linear_dng_tags(
    metadata: CameraMetadata,
    wb: Sequence[float],
    ccm: np.ndarray,
    description: str = "",
    software: str = "rawsr",
    fallback_model: str = "unknown camera",
) -> list[tuple]:
    """The DNG tags (tifffile ``extratags``) of a linear DNG of camera RGB from a source with ``metadata``.

    Args:
        metadata: the source's :class:`CameraMetadata`.
        wb: ``(3,)`` white-balance gains (R, G, B) the image is rendered with: AsShotNeutral is ``1 / wb``.
        ccm: ``(3, 3)`` camera RGB to linear sRGB, used for ColorMatrix1 (:func:`color_matrix1`) only when the
            source has no XYZ-to-camera matrix.
        description: ImageDescription; software: Software.
        fallback_model: UniqueCameraModel (which DNG requires) when the source names no camera.

    Returns:
        ``[(code, dtype, count, value, writeonce), ...]``: DNGVersion 1.4, BlackLevel 0, WhiteLevel 65535, the
        colour calibration, Make, Model, UniqueCameraModel, Orientation and the capture EXIF the source has (in
        IFD0, as TIFF/EP allows), sorted by code.
    """
    wb = np.asarray(wb, dtype=np.float64)
    if wb.shape != (3,) or not np.all(wb > 0) or not np.all(np.isfinite(wb)):
        raise ValueError(f"linear DNG: wb must be three positive gains, got {wb.tolist()}")
    matrix1 = metadata.color_matrix1 if metadata.color_matrix1 is not None else color_matrix1(ccm)
    tags = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        _ascii(50708, metadata.unique_model or metadata.camera or fallback_model),  # UniqueCameraModel
        (274, "H", 1, (metadata.exif_orientation,), True),  # Orientation
        (50714, "I", 1, (0,), True),  # BlackLevel
        (50717, "I", 1, (LINEAR_WHITE,), True),  # WhiteLevel
        (50721, "2i", 9, _rationals(np.ravel(matrix1), signed=True), True),  # ColorMatrix1
        (50728, "2I", 3, _rationals(1.0 / wb, signed=False), True),  # AsShotNeutral
        _ascii(305, software),  # Software
    ]
    if description:
        tags.append(_ascii(270, description))  # ImageDescription
    texts = ((271, metadata.make), (272, metadata.model), (306, metadata.datetime), (36867, metadata.datetime))
    for code, text in texts:
        if text:
            tags.append(_ascii(code, text))  # Make, Model, DateTime (read by LibRaw), DateTimeOriginal
    if metadata.color_matrix1 is not None and metadata.illuminant1 is not None:
        tags.append((50778, "H", 1, (metadata.illuminant1,), True))  # CalibrationIlluminant1
    if metadata.color_matrix2 is not None:
        tags.append((50722, "2i", 9, _rationals(metadata.color_matrix2.ravel(), signed=True), True))  # ColorMatrix2
        if metadata.illuminant2 is not None:
            tags.append((50779, "H", 1, (metadata.illuminant2,), True))  # CalibrationIlluminant2
    if metadata.baseline_exposure is not None:
        tags.append((50730, "2i", 1, _rationals([metadata.baseline_exposure], signed=True), True))  # BaselineExp.
    for code, value in ((33434, metadata.exposure_time), (33437, metadata.f_number), (37386, metadata.focal_length)):
        if value is not None:
            tags.append((code, "2I", 1, _rationals([value], signed=False), True))  # ExposureTime, FNumber, FocalLength
    if metadata.iso is not None:
        tags.append((34855, "H", 1, (min(65535, round(metadata.iso)),), True))  # ISOSpeedRatings
    return sorted(tags)


def _tiles(blocks: Iterable[np.ndarray], width: int, tile: int) -> Iterator[np.ndarray]:
    """Tiles ``(<=tile, <=tile, C)`` in row-major tile order from row blocks ``(h, width, C)``."""
    buffered: list[np.ndarray] = []
    count = 0

    def band_tiles(band: np.ndarray) -> Iterator[np.ndarray]:
        for x in range(0, width, tile):
            yield band[:, x : x + tile]

    for block in blocks:
        buffered.append(block)
        count += block.shape[0]
        while count >= tile:
            merged = np.concatenate(buffered)
            yield from band_tiles(merged[:tile])
            buffered, count = [merged[tile:]], count - tile
    if count:
        yield from band_tiles(np.concatenate(buffered))


def write_linear_dng(
    path: str | os.PathLike, blocks: Iterable[np.ndarray], height: int, width: int, tags: list[tuple]
) -> Path:
    """Write a linear (demosaiced) DNG streamed as row blocks, atomically.

    Args:
        path: the ``.dng`` to write (its folder must exist).
        blocks: uint16 row blocks ``(h, width, 3)`` of linear camera RGB (0 black, 65535 white), top to bottom,
            ``h`` free per block, summing to ``height``; only one band of :data:`DNG_TILE` rows is held at a time.
        height, width: image size.
        tags: :func:`linear_dng_tags`.

    The file is uncompressed (LibRaw reads no integer Deflate DNG), 16-bit, 3 samples, PhotometricInterpretation
    LinearRaw, in :data:`DNG_TILE`-square tiles. Nothing is left at ``path`` when a block or the writer fails.

    Raises:
        ValueError: naming ``path``, for a block of the wrong dtype or shape or a wrong row count.
    """
    import tifffile

    from rawsr.writers import atomic_path

    path = Path(path)
    # tifffile writes Software and DateTime itself: hand them over as its arguments
    own = {code: value for code, _, _, value, _ in tags if code in (305, 306)}
    tags = [tag for tag in tags if tag[0] not in own]
    if height <= 0 or width <= 0:
        raise ValueError(f"{path}: image size must be positive, got {height}x{width}")
    rows = checked_rows(blocks, path, height, width, 3, np.dtype(np.uint16))
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            data=_tiles(rows, width, DNG_TILE),
            shape=(height, width, 3),
            dtype=np.uint16,
            photometric=LINEAR_RAW,
            planarconfig="contig",
            tile=(DNG_TILE, DNG_TILE),
            subfiletype=0,
            software=own.get(305, "rawsr"),
            datetime=own.get(306),
            extratags=tags,
            metadata=None,
        )
    return path
