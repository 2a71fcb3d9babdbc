"""What a raw developer needs besides the pixels: camera identity, orientation, capture EXIF, colour calibration.

:func:`read_metadata` builds a :class:`CameraMetadata` from an open rawpy object and, for raws in a TIFF container
(DNG, CR2, NEF, ARW, PEF, ...), that container's tags read with ``tifffile``:

* make, model, unique camera model: TIFF tags Make, Model and (DNG) UniqueCameraModel. rawpy does not expose
  LibRaw's make/model, so files without TIFF tags (CRW, ...) leave them ``""``.
* orientation: LibRaw's ``flip`` (0 upright, 3 180 degrees, 5 90 degrees counter-clockwise, 6 90 degrees clockwise,
  as ``sizes.flip``), for every format; :attr:`CameraMetadata.exif_orientation` gives the TIFF/EXIF value.
* capture EXIF (exposure time, f-number, ISO, focal length, date/time): from the TIFF container's EXIF IFD (or IFD0,
  TIFF/EP style) when there is a container, from LibRaw otherwise; zero or unset values are ``None``, never guessed.
  LibRaw's timestamp is the camera's wall clock read as local time (``mktime`` of the EXIF string) for most formats,
  but the camera's wall clock counted as UTC for Canon CIFF (CRW) files: each is turned back into the wall clock.
* colour: ``color_matrix1`` is the XYZ-to-camera matrix: the DNG's ColorMatrix1, else LibRaw's ``rgb_xyz_matrix``
  (its built-in table for the camera, which LibRaw itself renders with). DNGs may add ColorMatrix2 and the
  calibration illuminants (EXIF LightSource codes: 17 Standard light A, 21 D65, ...), AsShotNeutral and
  BaselineExposure. For other raws the as-shot neutral is ``1 / gains`` of LibRaw's as-shot (camera) white balance,
  when the file has one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime as _datetime
from datetime import timezone
from pathlib import Path
from typing import Any

import numpy as np

#: LibRaw's ``flip`` -> TIFF/EXIF Orientation (LibRaw maps Orientation o to ``"50132467"[o & 7]``).
FLIP_TO_ORIENTATION = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_CIFF_MAGIC = (b"II", b"HEAPCCDR")  # bytes 0-1 and 6-13 of a Canon CRW file
_EXIF_KEYS = {  # CameraMetadata field: (EXIF IFD name, IFD0 tag code)
    "exposure_time": ("ExposureTime", 33434),
    "f_number": ("FNumber", 33437),
    "iso": ("ISOSpeedRatings", 34855),
    "focal_length": ("FocalLength", 37386),
    "datetime": ("DateTimeOriginal", 36867),
}


@dataclass(frozen=True, eq=False)
class CameraMetadata:
    """Camera metadata of a raw file; empty strings and ``None`` where the file does not say.

    Attributes:
        make, model, unique_model: camera identity (TIFF Make, Model, DNG UniqueCameraModel).
        flip: LibRaw's orientation code (0, 3, 5 or 6 in practice).
        exposure_time: seconds. f_number: the f-number. iso: ISO speed. focal_length: millimetres.
        datetime: capture time as EXIF writes it, ``"YYYY:MM:DD HH:MM:SS"``.
        color_matrix1: float64 ``(3, 3)`` XYZ to camera RGB. color_matrix2: a second one (DNG), or ``None``.
        illuminant1, illuminant2: the EXIF LightSource codes the matrices were calibrated under (DNG), or ``None``.
        as_shot_neutral: float64 ``(3,)`` camera RGB of a neutral grey under the scene's light, or ``None``.
        baseline_exposure: EV (DNG BaselineExposure), or ``None``.
    """

    make: str = ""
    model: str = ""
    unique_model: str = ""
    flip: int = 0
    exposure_time: float | None = None
    f_number: float | None = None
    iso: float | None = None
    focal_length: float | None = None
    datetime: str | None = None
    color_matrix1: np.ndarray | None = None
    color_matrix2: np.ndarray | None = None
    illuminant1: int | None = None
    illuminant2: int | None = None
    as_shot_neutral: np.ndarray | None = None
    baseline_exposure: float | None = None

    @property
    def exif_orientation(self) -> int:
        """TIFF/EXIF Orientation (1 upright ... 8) of :attr:`flip`."""
        return FLIP_TO_ORIENTATION.get(int(self.flip), 1)

    @property
    def camera(self) -> str:
        """``"Make Model"`` without repeating a make the model already starts with; the unique model as fallback."""
        make, model = self.make, self.model or self.unique_model
        return model if model.lower().startswith(make.lower()) else f"{make} {model}".strip()


def _number(value: Any, rational: bool = True) -> float | None:
    """A tag's value as a positive finite float; ``None`` otherwise.

    With ``rational`` a pair is a TIFF (S)RATIONAL ``(num, den)``; without it (an integer array such as EXIF's
    ISOSpeedRatings, which may hold several values) the first value counts.
    """
    if isinstance(value, tuple | list) and len(value) == 2 and rational:
        value = value[0] / value[1] if value[1] else 0.0
    elif isinstance(value, tuple | list) and value:
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _rationals(value: Any, count: int) -> np.ndarray | None:
    """``count`` numbers from a flat TIFF (S)RATIONAL tuple ``(n0, d0, n1, d1, ...)``; ``None`` when malformed."""
    values = np.asarray(value, dtype=np.float64).ravel()
    if values.size != 2 * count or np.any(values[1::2] == 0):
        return None
    out = values[0::2] / values[1::2]
    return out if np.all(np.isfinite(out)) else None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).strip("\x00 ") if value is not None else ""


def tiff_tags(path: Path) -> dict[int, Any] | None:
    """IFD0's tags of a TIFF container as ``{code: value}`` (the EXIF IFD as a dict under 34665), or ``None``
    when the file is not a TIFF or ``tifffile`` cannot parse it."""
    with open(path, "rb") as f:
        if f.read(4) not in _TIFF_MAGICS:
            return None
    import tifffile

    tiff_log = logging.getLogger("tifffile")  # tifffile logs every malformed tag it meets
    level = tiff_log.level
    tiff_log.setLevel(logging.CRITICAL + 1)
    try:
        with tifffile.TiffFile(path) as tif:
            return {tag.code: tag.value for tag in tif.pages[0].tags.values()}
    except Exception:  # a container tifffile cannot parse: nothing can be concluded from its tags
        return None
    finally:
        tiff_log.setLevel(level)


def _exif_from_tags(tags: dict[int, Any]) -> dict[str, Any]:
    exif = tags.get(34665) if isinstance(tags.get(34665), dict) else {}
    out: dict[str, Any] = {}
    for name, (exif_name, code) in _EXIF_KEYS.items():
        value = exif.get(exif_name, tags.get(code))
        if name == "datetime":
            out[name] = _text(value) or None
        else:
            out[name] = _number(value, rational=name != "iso")
    return out


def is_ciff(path: Path) -> bool:
    """Whether ``path`` is a Canon CIFF (CRW) file."""
    with open(path, "rb") as f:
        head = f.read(14)
    return head[:2] == _CIFF_MAGIC[0] and head[6:14] == _CIFF_MAGIC[1]


def _libraw_datetime(stamp, ciff: bool) -> str | None:
    """The capture wall clock ``"YYYY:MM:DD HH:MM:SS"`` of rawpy's ``other.timestamp``, or ``None`` when unset.

    rawpy turns LibRaw's ``time_t`` into a local-time datetime; for CIFF files that ``time_t`` is the wall clock
    counted as UTC, so it is converted back with UTC instead.
    """
    if stamp is None:
        return None
    seconds = stamp.timestamp()  # LibRaw's time_t (a naive datetime is local time, its fold kept)
    if seconds <= 0:
        return None
    if ciff:
        stamp = _datetime.fromtimestamp(seconds, timezone.utc)
    return stamp.strftime("%Y:%m:%d %H:%M:%S")


def _exif_from_libraw(raw, ciff: bool) -> dict[str, Any]:
    other = raw.other
    return {
        "exposure_time": _number(other.shutter_speed),
        "f_number": _number(other.aperture),
        "iso": _number(other.iso_speed),
        "focal_length": _number(other.focal_length),
        "datetime": _libraw_datetime(other.timestamp, ciff),
    }


def _colour_from_tags(tags: dict[int, Any]) -> dict[str, Any]:
    """DNG colour tags: ColorMatrix1/2, CalibrationIlluminant1/2, AsShotNeutral, BaselineExposure."""
    out: dict[str, Any] = {}
    for key, code in (("color_matrix1", 50721), ("color_matrix2", 50722)):
        matrix = _rationals(tags[code], 9) if code in tags else None
        out[key] = None if matrix is None or not np.any(matrix) else matrix.reshape(3, 3)
    for key, code in (("illuminant1", 50778), ("illuminant2", 50779)):
        value = tags.get(code)
        out[key] = int(value[0] if isinstance(value, tuple | list) else value) if value is not None else None
    neutral = _rationals(tags[50728], 3) if 50728 in tags else None
    out["as_shot_neutral"] = neutral if neutral is not None and np.all(neutral > 0) else None
    baseline = _rationals(tags[50730], 1) if 50730 in tags else None
    out["baseline_exposure"] = float(baseline[0]) if baseline is not None else None
    return out


def _colour_from_libraw(raw, camera_wb: np.ndarray | None) -> dict[str, Any]:
    xyz2cam = np.asarray(raw.rgb_xyz_matrix, dtype=np.float64)[:3]
    return {
        "color_matrix1": xyz2cam.copy() if np.any(xyz2cam != 0) and np.all(np.isfinite(xyz2cam)) else None,
        "as_shot_neutral": None if camera_wb is None else 1.0 / np.asarray(camera_wb, dtype=np.float64),
    }


def read_metadata(raw, tags: dict[int, Any] | None, camera_wb: np.ndarray | None, ciff: bool = False) -> CameraMetadata:
    """Collect a file's :class:`CameraMetadata` (see the module docstring for the sources).

    Args:
        raw: an open ``rawpy.RawPy``.
        tags: :func:`tiff_tags` of the file, or ``None`` when it is not a TIFF container.
        camera_wb: ``(3,)`` gains (R, G, B) of the file's as-shot white balance, or ``None`` when it has none.
        ciff: the file is a Canon CIFF (CRW) file (:func:`is_ciff`), whose LibRaw timestamp counts in UTC.
    """
    fields: dict[str, Any] = {"flip": int(raw.sizes.flip)}
    if tags is not None:
        fields.update(
            make=_text(tags.get(271)),
            model=_text(tags.get(272)),
            unique_model=_text(tags.get(50708)),
            **_exif_from_tags(tags),
        )
    else:
        fields.update(_exif_from_libraw(raw, ciff))
    colour = _colour_from_libraw(raw, camera_wb)
    if tags is not None:
        dng = _colour_from_tags(tags)
        colour = {**colour, **{k: v for k, v in dng.items() if v is not None}}
    return CameraMetadata(**fields, **colour)
