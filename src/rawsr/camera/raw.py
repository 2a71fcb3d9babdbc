"""Read a camera raw file into a normalised RGGB mosaic with its white balance and colour matrix.

:func:`read_raw` decodes a file with LibRaw (``rawpy``) and returns a :class:`RawImage`:

* ``mosaic``: float32 ``(H, W)``, the visible sensor area only (``raw_image_visible``, masked margins dropped),
  black level subtracted per CFA channel and divided by ``white - black``. Negative values (noise below black)
  are clipped to 0 and values above white to 1, so the mosaic lies in [0, 1]. Many sensors saturate below the
  white level their files declare (the Canon EOS D30 at about 94% of it); as LibRaw does by default
  (``adjust_maximum_thr = 0.75``), when the brightest value of the mosaic lies between ``adjust_maximum`` and 1
  the mosaic is divided by it, so that clipped highlights reach 1 in every channel and render white rather than
  pink. ``saturation`` records that brightest value (1.0 when no adjustment was made). The mosaic is aligned so
  that its top-left 2x2 cell is R, G, G, B whatever the sensor's pattern: one row and/or one column is dropped for
  BGGR, GRBG and GBRG sensors (no demosaicing or re-mosaicing), then H and W are trimmed to even sizes.
* ``wb``: camera white-balance gains (R, G, B) with G = 1, from the file's as-shot white balance; when the file
  has none (LibRaw reports -1 or 0), from LibRaw's daylight multipliers; failing both, a grey-world estimate on
  the mosaic. ``wb_source`` says which.
* ``ccm``: 3x3 matrix from white-balanced camera RGB to linear sRGB (D65) with rows summing to 1, built as
  dcraw does: ``cam_from_srgb = xyz2cam @ srgb2xyz`` with rows normalised to sum 1, then inverted. ``xyz2cam``
  is LibRaw's ``rgb_xyz_matrix``; for DNG files, where LibRaw leaves it at zero, LibRaw's ``color_matrix``
  (camera to sRGB, already derived from the DNG's ColorMatrix) is used instead. ``ccm_source`` says which, or
  ``"identity"`` when the file carries no usable colour matrix.

Every failure is a :class:`RawReadError` whose message starts with the path. LibRaw's own messages on stderr are
silenced while it runs.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rawsr.camera.metadata import CameraMetadata, is_ciff, read_metadata, tiff_tags
from rawsr.config import is_number, require
from rawsr.imaging.colour import XYZ_FROM_SRGB

#: The four 2x2 Bayer layouts, read row by row, and the (row, column) of their red site.
# fmt: off
RAW_EXTENSIONS = frozenset({
    ".3fr", ".ari", ".arw", ".bay", ".cap", ".cr2", ".cr3", ".crw", ".dcr", ".dcs", ".dng", ".drf", ".eip",
    ".erf", ".fff", ".gpr", ".iiq", ".k25", ".kdc", ".mdc", ".mef", ".mos", ".mrw", ".nef", ".nrw", ".orf",
    ".pef", ".ptx", ".pxn", ".r3d", ".raf", ".raw", ".rw2", ".rwl", ".rwz", ".sr2", ".srf", ".srw", ".x3f",
})
# fmt: on
"""Suffixes (lower case) of the camera raw files taken when a folder is scanned (compared case-insensitively)."""

BAYER_RED_SITE = {"RGGB": (0, 0), "GRBG": (0, 1), "GBRG": (1, 0), "BGGR": (1, 1)}

_TIFF_CAMERA_TAGS = {"make": 271, "model": 272, "dng_version": 50706, "unique_model": 50708}


class RawReadError(Exception):
    """A file could not be read as a Bayer camera raw file; the message is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # keep the two-argument constructor across process boundaries
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True, eq=False)
class RawImage:
    """A decoded camera raw file (see the module docstring for the conventions).

    Attributes:
        path: the file read.
        mosaic: float32 ``(H, W)`` RGGB-aligned mosaic in [0, 1], H and W even.
        cfa: the sensor's pattern at the top-left of its visible area, e.g. ``"GRBG"``.
        origin: ``(row, column)`` of ``mosaic[0, 0]`` in the visible area (non-zero for non-RGGB sensors).
        black_level: per-channel black levels in LibRaw's channel order ``(R, G, B, G2)``, in raw units.
        white_level: the white level the file declares, in raw units.
        saturation: the fraction of ``white_level - black_level`` the mosaic was divided by (its brightest value,
            when above ``adjust_maximum``), or 1.0 when none was applied.
        wb: float32 ``(3,)`` camera white-balance gains (R, G, B), G = 1.
        wb_source: ``"camera"``, ``"daylight"`` or ``"grey_world"``.
        ccm: float32 ``(3, 3)`` white-balanced camera RGB to linear sRGB, rows summing to 1.
        ccm_source: ``"rgb_xyz_matrix"``, ``"color_matrix"`` or ``"identity"``.
        camera: make and model from the file's TIFF tags, ``""`` when the container has none (e.g. CRW):
            LibRaw's own make/model fields are not exposed by rawpy.
        metadata: orientation, capture EXIF, colour matrices, as-shot neutral, ...
            (:class:`rawsr.camera.metadata.CameraMetadata`).
    """

    path: Path
    mosaic: np.ndarray = field(repr=False)
    cfa: str
    origin: tuple[int, int]
    black_level: tuple[float, float, float, float]
    white_level: float
    saturation: float
    wb: np.ndarray
    wb_source: str
    ccm: np.ndarray
    ccm_source: str
    camera: str = ""
    metadata: CameraMetadata = field(default_factory=CameraMetadata, repr=False)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to ``/dev/null`` for the duration (LibRaw prints there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _camera_tags(tags: dict[int, Any] | None) -> dict[str, str] | None:
    """The camera-identifying entries of :func:`rawsr.camera.metadata.tiff_tags` by name (``""`` when absent)."""
    if tags is None:
        return None
    return {name: str(tags.get(code, "")).strip("\x00 ") for name, code in _TIFF_CAMERA_TAGS.items()}


def _camera_name(tags: dict[str, str] | None) -> str:
    if not tags:
        return ""
    make, model = tags["make"], tags["model"] or tags["unique_model"]
    return model if model.lower().startswith(make.lower()) else f"{make} {model}".strip()


def is_plain_tiff(tags: dict[str, str] | None) -> bool:
    """Whether TIFF tags describe an ordinary image rather than a camera raw file.

    LibRaw accepts a plain 16-bit greyscale TIFF as if it were a Bayer raw. Every camera raw in a TIFF container
    (DNG, NEF, CR2, ARW, PEF, ...) names its camera (Make/Model or UniqueCameraModel) or is a DNG (DNGVersion);
    a TIFF with none of these tags is an ordinary image.
    """
    return tags is not None and not any(tags.values())


def _bayer_pattern(raw) -> tuple[str, np.ndarray]:
    """Return the 2x2 pattern at the top-left of the visible area, as letters and as LibRaw channel indices.

    Returns:
        ``(cfa, sites)``: e.g. ``("GRBG", [[1, 0], [2, 3]])``; ``sites`` indexes LibRaw's channels (R, G, B, G2).
        ``raw_pattern`` is relative to the full sensor area in rawpy; the visible area starts at the margins.
    """
    pattern = raw.raw_pattern
    colors = raw.color_desc.decode("ascii", "replace")
    if pattern is None:
        raise ValueError(
            "no colour filter array: LibRaw reports a stacked or linear image "
            "(Foveon, linear/demosaiced DNG, sRAW, or a YRGB/RGB file), not a Bayer mosaic"
        )
    if raw.num_colors == 1 or pattern.shape == (1, 1):
        raise ValueError("monochrome sensor (no colour filter array)")
    if pattern.shape != (2, 2):
        kind = "X-Trans" if pattern.shape == (6, 6) else "non-Bayer"
        raise ValueError(f"{kind} colour filter array of period {pattern.shape[0]}, a 2x2 Bayer pattern is expected")
    if colors != "RGBG" or raw.num_colors not in (3, 4):
        raise ValueError(f"colour filters '{colors}' ({raw.num_colors} colours): an RGB Bayer sensor is expected")
    sizes = raw.sizes
    rows, cols = (sizes.top_margin + np.arange(2)) % 2, (sizes.left_margin + np.arange(2)) % 2
    sites = pattern[np.ix_(rows, cols)].astype(np.int64)
    cfa = "".join(colors[c] for c in sites.ravel())
    if cfa not in BAYER_RED_SITE:
        raise ValueError(f"colour filter pattern {cfa} is not a Bayer layout (RGGB, BGGR, GRBG or GBRG)")
    return cfa, sites


def normalise_mosaic(raw_visible: np.ndarray, cfa: str, black: np.ndarray, white: float) -> np.ndarray:
    """Black-subtract, white-normalise and RGGB-align a visible raw area.

    Args:
        raw_visible: ``(H, W)`` integer raw values with the Bayer layout ``cfa`` at (0, 0).
        cfa: 2x2 Bayer layout at (0, 0), one of :data:`BAYER_RED_SITE`.
        black: ``(2, 2)`` black level of each site of the 2x2 cell at (0, 0) (same layout as ``cfa``).
        white: saturation level.

    Returns:
        float32 ``(H', W')`` mosaic, RGGB at (0, 0), H' and W' even: ``(raw - black) / (white - black)``
        clipped to [0, 1]. One row (column) is dropped at the top (left) when the sensor's red site is on the
        second row (column), and the last row/column when the size is then odd.
    """
    dy, dx = BAYER_RED_SITE[cfa]
    h, w = raw_visible.shape
    aligned = raw_visible[dy : dy + (h - dy) // 2 * 2, dx : dx + (w - dx) // 2 * 2]
    cell = np.roll(np.asarray(black, dtype=np.float32), (-dy, -dx), axis=(0, 1))[None, :, None, :]
    hh, ww = aligned.shape
    out = (aligned.reshape(hh // 2, 2, ww // 2, 2).astype(np.float32) - cell) / (np.float32(white) - cell)
    return np.clip(out, 0.0, 1.0, out=out).reshape(hh, ww)


def grey_world_wb(mosaic: np.ndarray) -> np.ndarray:
    """Grey-world white balance of an RGGB mosaic: gains (G/R, 1, G/B) of the mean unsaturated site values.

    Args:
        mosaic: ``(H, W)`` RGGB mosaic in [0, 1], H and W even.

    Returns:
        float32 ``(3,)`` gains; 1 for a channel with no usable signal.
    """
    planes = (mosaic[0::2, 0::2], np.concatenate([mosaic[0::2, 1::2], mosaic[1::2, 0::2]]), mosaic[1::2, 1::2])
    means = np.array([float(p[p < 1.0].mean()) if np.any(p < 1.0) else 0.0 for p in planes])
    gains = np.ones(3)
    ok = means > 0
    if ok[1]:
        gains[ok] = means[1] / means[ok]
    return gains.astype(np.float32)


def wb_gains(multipliers, desc: str = "RGBG") -> np.ndarray | None:
    """Turn LibRaw's multipliers ``(c0, c1, c2, c3)`` into gains (R, G, B) with G = 1, or ``None`` when unset.

    LibRaw marks an unset white balance with -1 or 0 in the first entry; daylight multipliers that are all equal
    are LibRaw's placeholder for "unknown" and count as unset too.
    """
    m = np.asarray(multipliers, dtype=np.float64)
    rgb = np.array([m[desc.index(c)] for c in "RGB"])
    if m[0] <= 0 or not np.all(np.isfinite(rgb)) or np.any(rgb <= 0) or np.all(rgb == rgb[0]):
        return None
    return (rgb / rgb[1]).astype(np.float32)


def ccm_from_xyz2cam(xyz2cam: np.ndarray) -> np.ndarray | None:
    """White-balanced camera RGB to linear sRGB from an XYZ-to-camera matrix (dcraw's ``cam_xyz_coeff``).

    Args:
        xyz2cam: ``(3, 3)`` XYZ to camera RGB.

    Returns:
        ``(3, 3)`` camera to sRGB with rows summing to 1, or ``None`` when the matrix is unusable.
    """
    cam_from_srgb = _row_normalised(np.asarray(xyz2cam, dtype=np.float64) @ np.asarray(XYZ_FROM_SRGB))
    if cam_from_srgb is None or abs(np.linalg.det(cam_from_srgb)) < 1e-8:
        return None
    return normalised_ccm(np.linalg.inv(cam_from_srgb))


def _row_normalised(m: np.ndarray) -> np.ndarray | None:
    """``m`` with each row divided by its sum; ``None`` when not finite or a row sums to about 0."""
    if not np.all(np.isfinite(m)):
        return None
    sums = m.sum(axis=1, keepdims=True)
    return None if np.any(np.abs(sums) < 1e-6) else m / sums


def normalised_ccm(ccm: np.ndarray | None) -> np.ndarray | None:
    """Scale the rows of a camera-to-sRGB matrix to sum 1; ``None`` when it is zero, singular or not finite."""
    if ccm is None:
        return None
    m = _row_normalised(np.asarray(ccm, dtype=np.float64))
    if m is None or abs(np.linalg.det(m)) < 1e-8:
        return None
    return m.astype(np.float32)


def _colour_matrix(raw) -> tuple[np.ndarray, str]:
    xyz2cam = np.asarray(raw.rgb_xyz_matrix, dtype=np.float64)[:3]
    ccm = ccm_from_xyz2cam(xyz2cam) if np.any(xyz2cam != 0) else None
    if ccm is not None:
        return ccm, "rgb_xyz_matrix"
    ccm = normalised_ccm(np.asarray(raw.color_matrix, dtype=np.float64)[:, :3])
    if ccm is not None:
        return ccm, "color_matrix"
    return np.eye(3, dtype=np.float32), "identity"


def check_adjust_maximum(value: Any, key: str = "adjust_maximum") -> None:
    """Refuse an ``adjust_maximum`` threshold that is not a number in [0, 1), with a ConfigError naming ``key``."""
    require(is_number(value) and 0 <= value < 1, key, "a number in [0, 1)", value)


def adjust_saturation(mosaic: np.ndarray, threshold: float) -> float:
    """Rescale a normalised mosaic in place so that its brightest value becomes 1 (LibRaw's ``adjust_maximum``).

    Args:
        mosaic: float32 ``(H, W)`` mosaic in [0, 1], modified in place.
        threshold: rescale only when the brightest value is above it (and below 1); 0 disables.

    Returns:
        the value divided by, 1.0 when the mosaic was left as it was.
    """
    peak = float(mosaic.max()) if mosaic.size else 0.0
    if threshold <= 0 or not threshold < peak < 1.0:
        return 1.0
    np.divide(mosaic, np.float32(peak), out=mosaic)  # the brightest value becomes exactly 1
    return peak


def _decode(raw, path: Path, adjust_maximum: float, tags: dict[int, Any] | None = None) -> RawImage:
    """Inspect an open rawpy object and build the :class:`RawImage` (raises on non-Bayer data)."""
    cfa, sites = _bayer_pattern(raw)
    black = np.asarray(raw.black_level_per_channel, dtype=np.float64)
    white = float(raw.white_level)
    if not np.all(black < white):
        raise ValueError(f"black level {black.tolist()} is not below the white level {white}")
    visible = raw.raw_image_visible
    if visible.ndim != 2 or min(visible.shape) < 2:
        raise ValueError(f"visible raw area of shape {visible.shape} is not a 2-D mosaic")
    mosaic = normalise_mosaic(visible, cfa, black[sites], white)
    if mosaic.size == 0:
        raise ValueError(f"visible raw area of shape {visible.shape} is empty after alignment")
    saturation = adjust_saturation(mosaic, adjust_maximum)
    desc = raw.color_desc.decode("ascii")
    wb, wb_source = wb_gains(raw.camera_whitebalance, desc), "camera"
    if wb is None:
        wb, wb_source = wb_gains(raw.daylight_whitebalance, desc), "daylight"
    if wb is None:
        wb, wb_source = grey_world_wb(mosaic), "grey_world"
    ccm, ccm_source = _colour_matrix(raw)
    metadata = read_metadata(raw, tags, wb if wb_source == "camera" else None, tags is None and is_ciff(path))
    return RawImage(
        path=path,
        mosaic=mosaic,
        cfa=cfa,
        origin=BAYER_RED_SITE[cfa],
        black_level=tuple(float(b) for b in black),
        white_level=white,
        saturation=saturation,
        wb=wb,
        wb_source=wb_source,
        ccm=ccm,
        ccm_source=ccm_source,
        metadata=metadata,
    )


def read_raw(path: str | os.PathLike, adjust_maximum: float = 0.75) -> RawImage:
    """Read a Bayer camera raw file (any format LibRaw decodes: CR2, NEF, ARW, DNG, CRW, ...).

    Args:
        path: the raw file.
        adjust_maximum: when the mosaic's brightest value (a fraction of the declared white level) lies between
            this and 1, divide the mosaic by it (LibRaw's default threshold, 0.75); 0 keeps the declared level.

    Returns:
        a :class:`RawImage` with an RGGB-aligned float32 ``(H, W)`` mosaic in [0, 1].

    Raises:
        rawsr.config.ConfigError: ``adjust_maximum`` is not a number in [0, 1).
        RawReadError: the path is missing, unreadable or a directory; LibRaw cannot decode it; it is truncated
            or corrupt; the sensor is not an RGB Bayer sensor (X-Trans, Foveon, linear DNG, monochrome, Kodak
            YRGB, ...); or it is a plain TIFF image rather than a camera raw file.
    """
    import rawpy

    check_adjust_maximum(adjust_maximum)
    path = Path(path)
    if path.is_dir():
        raise RawReadError(path, "is a directory, not a raw file")
    if not path.is_file():
        raise RawReadError(path, "no such file")
    try:
        all_tags = tiff_tags(path)
    except OSError as e:
        raise RawReadError(path, f"cannot be read ({e.strerror or e})") from e
    tags = _camera_tags(all_tags)
    if is_plain_tiff(tags):
        raise RawReadError(path, "a plain TIFF image (no camera Make/Model or DNGVersion tag), not a camera raw file")
    try:
        with quiet_stderr(), rawpy.imread(str(path)) as raw:
            image = _decode(raw, path, adjust_maximum, all_tags)
    except rawpy.LibRawError as e:
        reason = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise RawReadError(path, f"LibRaw cannot decode it ({type(e).__name__}: {reason})") from e
    except (ValueError, RuntimeError, NotImplementedError, OSError, IndexError, MemoryError) as e:
        raise RawReadError(path, str(e) or type(e).__name__) from e
    return RawImage(**{**image.__dict__, "camera": _camera_name(tags)})
