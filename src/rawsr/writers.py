"""Image writers that stream by rows and never leave a half-written file behind.

Every writer writes to a hidden temporary file in the target's directory and moves it into place with
``os.replace`` only once it is complete; on any error (including a failing row source) the temporary
file is removed and the target is left as it was.

- :func:`write_rows`: 16-bit (or 8-bit) PNG or TIFF from an iterator of row blocks ``(h, W, C)``, holding
  one block at a time. The PNG encoder is written here (zlib + struct, "Sub" row filter); TIFF goes
  through ``tifffile`` as zlib-compressed 256x256 tiles.
- :class:`Preview`: a small 8-bit box-downscaled preview computed from the same row blocks as they pass.
- :func:`write_image`: the same for an image held in memory.
- :class:`ImageMetadata`: orientation, camera, capture time and provenance, written by every writer when given:
  PNG iTXt chunks and an eXIf chunk, TIFF tags, JPEG EXIF (built with Pillow's ``Image.Exif``). Images keep the
  source's pixel orientation and carry its Orientation tag (streamed rows cannot be rotated without holding the
  whole image).
"""

from __future__ import annotations

import math
import os
import secrets
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

FORMATS = {".png": "png", ".tif": "tiff", ".tiff": "tiff"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}
"""PNG colour type by channel count: grey, grey+alpha, RGB, RGBA."""
TIFF_TILE = 256
IDAT_SIZE = 1 << 20
SCANLINE_BYTES = 1 << 22
"""About how many bytes of rows the PNG encoder filters and compresses at a time."""


@dataclass(frozen=True)
class ImageMetadata:
    """What an output image says about itself.

    Attributes:
        orientation: TIFF/EXIF Orientation of the pixels (1 upright, 3 180 degrees, 6 rotate 90 degrees clockwise to
            view, 8 counter-clockwise).
        make, model: the camera (``""`` when unknown: not written).
        datetime: capture time, ``"YYYY:MM:DD HH:MM:SS"`` (``None`` when unknown).
        description: one line, e.g. how the image was made.
        software: e.g. ``"rawsr 0.1.0"``.
        text: further ``keyword: value`` pairs (PNG iTXt chunks; appended to the TIFF/JPEG description).
    """

    orientation: int = 1
    make: str = ""
    model: str = ""
    datetime: str | None = None
    description: str = ""
    software: str = ""
    text: dict[str, str] = field(default_factory=dict)

    def exif(self) -> bytes:
        """EXIF as a JPEG APP1 payload (``b"Exif\\0\\0"`` then a TIFF structure): IFD0 Orientation, Make, Model,
        DateTime, ImageDescription, Software, and the EXIF IFD's DateTimeOriginal."""
        from PIL import Image

        exif = Image.Exif()
        exif[274] = int(self.orientation)
        for code, value in ((271, self.make), (272, self.model), (270, self.full_description()), (305, self.software)):
            if value:
                exif[code] = tiff_ascii(value)
        if self.datetime:
            exif[306] = self.datetime
            exif.get_ifd(0x8769)[36867] = self.datetime
        return exif.tobytes()

    def full_description(self) -> str:
        """:attr:`description` followed by the :attr:`text` pairs, ``"; "``-separated."""
        parts = [self.description] if self.description else []
        return "; ".join(parts + [f"{k}: {v}" for k, v in self.text.items()])

    def png_chunks(self) -> bytes:
        """The PNG chunks to write before the image data: an eXIf chunk and iTXt (UTF-8) chunks for Software,
        Description, Source (the camera), Creation Time and each :attr:`text` pair."""
        chunks = [_png_chunk(b"eXIf", self.exif()[6:])]
        camera = " ".join(v for v in (self.make, self.model) if v)
        pairs = {"Software": self.software, "Description": self.description, "Source": camera}
        pairs["Creation Time"] = self.datetime or ""
        for key, value in {**pairs, **self.text}.items():
            if value:
                chunks.append(_png_itxt(key, value))
        return b"".join(chunks)

    def tiff_tags(self) -> tuple[dict, list[tuple]]:
        """``(keyword arguments, extratags)`` for ``tifffile.imwrite``: description, software, datetime; Make,
        Model, Orientation and DateTimeOriginal as tags."""
        kwargs = {"description": tiff_ascii(self.full_description()) or None, "software": self.software or None}
        kwargs["datetime"] = self.datetime
        tags = [(274, "H", 1, (int(self.orientation),), True)]
        for code, value in ((271, self.make), (272, self.model), (36867, self.datetime)):
            if value:
                tags.append((code, "s", 0, tiff_ascii(value), True))
        return kwargs, tags


def tiff_ascii(text: str) -> str:
    """``text`` as 7-bit ASCII, which TIFF and EXIF strings must be (other characters as ``\\xNN`` escapes)."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _png_itxt(keyword: str, text: str) -> bytes:
    """An uncompressed iTXt chunk: Latin-1 keyword (1-79 characters), UTF-8 text."""
    key = keyword.encode("latin-1")[:79]
    return _png_chunk(b"iTXt", key + b"\0\0\0\0\0" + text.encode("utf-8"))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; move it onto ``path`` when the block succeeds.

    The temporary file is created empty (mode 0o666 less the umask, like a plain ``open``), synced to
    disk before the move, and deleted if the block raises.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist")
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.part"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(file)`` on a temporary binary file beside ``path``, then move it onto ``path``.

    Nothing is left at ``path`` (nor a temporary file) when ``write`` raises.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
    return Path(path)


def checked_rows(
    blocks: Iterable[np.ndarray], path: Path, height: int, width: int, channels: int, dtype: np.dtype
) -> Iterator[np.ndarray]:
    """Pass through row blocks ``(h, width, channels)`` of ``dtype``, checking them and their total height."""
    done = 0
    for block in blocks:
        if not isinstance(block, np.ndarray) or block.dtype != dtype or block.shape[1:] != (width, channels):
            got = (block.dtype, block.shape) if isinstance(block, np.ndarray) else type(block).__name__
            raise ValueError(f"{path}: row blocks must be {dtype} arrays of shape (h, {width}, {channels}), got {got}")
        done += block.shape[0]
        if done > height:
            raise ValueError(f"{path}: received more than the {height} rows announced")
        yield block
    if done != height:
        raise ValueError(f"{path}: received {done} rows, expected {height}")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_scanlines(block: np.ndarray) -> bytes:
    """PNG scanlines of ``block (h, W, C)`` (uint8 or uint16): big-endian samples, "Sub" filter (type 1)."""
    h = block.shape[0]
    big_endian = np.ascontiguousarray(block, dtype=block.dtype.newbyteorder(">"))
    data = big_endian.view(np.uint8).reshape(h, -1)
    step = block.shape[2] * block.dtype.itemsize
    filtered = np.empty((h, data.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = 1
    filtered[:, 1 : step + 1] = data[:, :step]
    np.subtract(data[:, step:], data[:, :-step], out=filtered[:, step + 1 :])
    return filtered.tobytes()


def _write_png(
    handle,
    blocks: Iterable[np.ndarray],
    height: int,
    width: int,
    channels: int,
    dtype: np.dtype,
    level: int,
    chunks: bytes = b"",
) -> None:
    """Encode row blocks as a non-interlaced PNG onto a binary file ``handle``; ``chunks`` go before the data."""
    header = struct.pack(">IIBBBBB", width, height, 8 * dtype.itemsize, PNG_COLOUR_TYPES[channels], 0, 0, 0)
    handle.write(PNG_SIGNATURE + _png_chunk(b"IHDR", header) + chunks)
    compressor = zlib.compressobj(level)
    pending: list[bytes] = []
    size = 0
    for block in blocks:
        step = max(1, SCANLINE_BYTES // (block.shape[1] * block.shape[2] * block.dtype.itemsize))
        for i in range(0, block.shape[0], step):  # bounded temporaries whatever the block height
            pending.append(compressor.compress(_png_scanlines(block[i : i + step])))
            size += len(pending[-1])
            if size >= IDAT_SIZE:
                handle.write(_png_chunk(b"IDAT", b"".join(pending)))
                pending, size = [], 0
    pending.append(compressor.flush())
    handle.write(_png_chunk(b"IDAT", b"".join(pending)))
    handle.write(_png_chunk(b"IEND", b""))


def _rebatch(blocks: Iterable[np.ndarray], rows: int) -> Iterator[np.ndarray]:
    """Regroup row blocks ``(h, W, C)`` into blocks of exactly ``rows`` rows (the last may be shorter)."""
    buffered: list[np.ndarray] = []
    count = 0
    for block in blocks:
        buffered.append(block)
        count += block.shape[0]
        while count >= rows:
            merged = np.concatenate(buffered)
            yield merged[:rows]
            buffered, count = [merged[rows:]], count - rows
    if count:
        yield np.concatenate(buffered)


def _tiff_tiles(blocks: Iterable[np.ndarray], width: int) -> Iterator[np.ndarray]:
    """TIFF tiles ``(<=T, <=T, C)`` in row-major tile order from row blocks ``(h, W, C)``."""
    for band in _rebatch(blocks, TIFF_TILE):
        for x in range(0, width, TIFF_TILE):
            yield band[:, x : x + TIFF_TILE]


def _write_tiff(
    path: Path,
    blocks: Iterable[np.ndarray],
    height: int,
    width: int,
    channels: int,
    dtype: np.dtype,
    metadata: ImageMetadata | None = None,
) -> None:
    import tifffile

    kwargs, tags = metadata.tiff_tags() if metadata is not None else ({}, [])
    tifffile.imwrite(
        path,
        data=_tiff_tiles(blocks, width),
        shape=(height, width, channels),
        dtype=dtype,
        photometric="rgb" if channels in (3, 4) else "minisblack",
        tile=(TIFF_TILE, TIFF_TILE),
        compression="zlib",
        predictor=True,
        metadata=None,
        extratags=tags,
        **kwargs,
    )


def image_format(path: str | Path) -> str:
    """``"png"`` or ``"tiff"`` from the file suffix (case-insensitive); ``ValueError`` otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unknown image format {suffix!r}, expected one of {sorted(FORMATS)}")
    return FORMATS[suffix]


def write_rows(
    path: str | Path,
    blocks: Iterable[np.ndarray],
    height: int,
    width: int,
    channels: int = 3,
    dtype: np.dtype | type = np.uint16,
    compress_level: int = 6,
    metadata: ImageMetadata | None = None,
) -> Path:
    """Write an image streamed as row blocks, atomically.

    Args:
        path: target file, ``.png`` or ``.tif``/``.tiff``.
        blocks: row blocks ``(h, width, channels)`` from top to bottom, ``h`` free per block, summing to
            ``height``; only one block (PNG) or one 256-row band (TIFF) is held at a time.
        height, width, channels: image shape; channels 1, 2, 3 or 4 for PNG, 1, 3 or 4 for TIFF.
        dtype: ``uint16`` (16-bit) or ``uint8``.
        compress_level: zlib level of the PNG stream (0-9).
        metadata: written as PNG iTXt/eXIf chunks or TIFF tags (:class:`ImageMetadata`); ``None``: none.

    Raises:
        ValueError: naming ``path``, for a bad format, dtype, block shape or row count; the target is then
            left untouched.
    """
    path, dtype = Path(path), np.dtype(dtype)
    fmt = image_format(path)
    if dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise ValueError(f"{path}: dtype must be uint8 or uint16, got {dtype}")
    if channels not in PNG_COLOUR_TYPES or (fmt == "tiff" and channels == 2):
        raise ValueError(f"{path}: cannot write {channels} channels as {fmt}")
    if height <= 0 or width <= 0:
        raise ValueError(f"{path}: image size must be positive, got {height}x{width}")
    rows = checked_rows(blocks, path, height, width, channels, dtype)
    with atomic_path(path) as tmp:
        if fmt == "png":
            with open(tmp, "wb") as handle:
                chunks = metadata.png_chunks() if metadata is not None else b""
                _write_png(handle, rows, height, width, channels, dtype, compress_level, chunks)
        else:
            _write_tiff(tmp, rows, height, width, channels, dtype, metadata)
    return path


def write_image(path: str | Path, image: np.ndarray, compress_level: int = 6) -> Path:
    """Write ``image (H, W, C)`` or ``(H, W)`` (uint8 or uint16) as PNG or TIFF, atomically."""
    image = image[..., None] if image.ndim == 2 else image
    h, w, c = image.shape
    return write_rows(path, [image], h, w, c, image.dtype, compress_level)


class Preview:
    """An 8-bit preview of an image streamed by row blocks, box-downscaled by an integer factor.

    The factor is the smallest integer that brings the longest side to at most ``max_side``; blocks at the
    right and bottom borders average the pixels they have. Besides the preview itself (allocated up front),
    only one row of sums is held.

    Args:
        height, width, channels: full image size.
        max_side: longest side of the preview, default 2048 (this project's choice).
    """

    def __init__(self, height: int, width: int, channels: int = 3, max_side: int = 2048) -> None:
        if max_side <= 0:
            raise ValueError(f"Preview: max_side must be positive, got {max_side}")
        self.factor = f = max(1, math.ceil(max(height, width) / max_side))
        self._col_starts = np.arange(0, width, f)
        self._col_counts = np.diff(np.append(self._col_starts, width))[:, None]
        self._out = np.zeros((math.ceil(height / f), len(self._col_starts), channels), dtype=np.uint8)
        self._sum = np.zeros(self._out.shape[1:], dtype=np.float64)
        self._rows_in_sum = 0
        self._rows_done = 0

    def add(self, block: np.ndarray) -> None:
        """Take the next row block ``(h, width, C)`` of uint8/uint16 (full range) or float in [0, 1]."""
        full = np.iinfo(block.dtype).max if block.dtype.kind in "ui" else 1.0
        columns = np.add.reduceat(block, self._col_starts, axis=1, dtype=np.float64)
        columns /= full
        i = 0
        while i < columns.shape[0]:
            take = min(self.factor - self._rows_in_sum, columns.shape[0] - i)
            self._sum += columns[i : i + take].sum(axis=0)
            self._rows_in_sum += take
            i += take
            if self._rows_in_sum == self.factor:
                self._emit()

    def _emit(self) -> None:
        if self._rows_done == len(self._out):
            raise ValueError(f"Preview: more rows added than the {len(self._out) * self.factor} announced")
        mean = self._sum / (self._rows_in_sum * self._col_counts)
        self._out[self._rows_done] = np.round(np.clip(mean, 0.0, 1.0) * 255)
        self._rows_done += 1
        self._sum[:] = 0
        self._rows_in_sum = 0

    def tap(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Pass row blocks through unchanged, adding each to the preview on the way."""
        for block in blocks:
            self.add(block)
            yield block

    def image(self) -> np.ndarray:
        """The preview ``(ceil(H / f), ceil(W / f), C)`` uint8 of the rows added so far."""
        if self._rows_in_sum:
            self._emit()
        if not self._rows_done:
            raise ValueError("Preview: no rows were added")
        return self._out[: self._rows_done]


def write_preview(
    path: str | Path, image: np.ndarray, quality: int = 90, metadata: ImageMetadata | None = None
) -> Path:
    """Write an 8-bit ``image (H, W, 3)`` as JPEG (``.jpg``/``.jpeg``) or PNG (``.png``), atomically, with
    ``metadata`` as EXIF when given."""
    from PIL import Image

    path = Path(path)
    suffix = path.suffix.lower()
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}
    if suffix not in formats:
        raise ValueError(f"{path}: preview format must be one of {sorted(formats)}, got {suffix!r}")
    options = {"quality": quality} if formats[suffix] == "JPEG" else {}
    if metadata is not None:
        options["exif"] = metadata.exif()
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format=formats[suffix], **options)
    return path
