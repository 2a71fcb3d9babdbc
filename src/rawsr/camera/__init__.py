"""Camera raw I/O: :func:`read_raw` decodes a Bayer raw file (pixels and :class:`CameraMetadata`), :func:`write_dng`
writes a synthetic one, :func:`write_linear_dng` a super-resolved linear one."""

from rawsr.camera.dng import write_dng
from rawsr.camera.metadata import CameraMetadata
from rawsr.camera.raw import RAW_EXTENSIONS, RawImage, RawReadError, check_adjust_maximum, read_raw

__all__ = [
    "RAW_EXTENSIONS",
    "CameraMetadata",
    "RawImage",
    "RawReadError",
    "check_adjust_maximum",
    "read_raw",
    "write_dng",
]
