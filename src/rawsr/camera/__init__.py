"""Camera raw I/O: :func:`read_raw` decodes a Bayer raw file, :func:`write_dng` writes a synthetic one."""

from rawsr.camera.dng import write_dng
from rawsr.camera.raw import RAW_EXTENSIONS, RawImage, RawReadError, check_adjust_maximum, read_raw

__all__ = ["RAW_EXTENSIONS", "RawImage", "RawReadError", "check_adjust_maximum", "read_raw", "write_dng"]
