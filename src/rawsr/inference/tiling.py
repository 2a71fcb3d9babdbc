"""Tiled inference: run a fixed-size network over a whole image, in memory or streaming by rows.

The rawSR network pools its channel attention over the whole input, so its output depends on the input
size; inference therefore runs on tiles of the training crop size (as the released code does). Tiles
start every ``tile - overlap`` pixels, the last one clamped to the border, and every origin is even so that
an RGGB mosaic stays RGGB in every tile.

Overlapping high-resolution tiles are merged by a weighted average:

- ``blend="mean"``: every tile pixel weighs 1, i.e. the average over overlaps with a count mask, the
  paper's protocol;
- ``blend="linear"``: a separable ramp (feathering) window that rises linearly over the overlap from
  the tile border, so a tile fades in where its neighbour fades out and no seam shows. This is this
  project's default for real photographs, not the paper's.

The merged image is clipped to [0, 1], as the released code does when it merges tiles.

:func:`tiled_forward` builds the whole high-resolution image in memory (validation images);
:func:`tiled_rows` streams finished output rows for photographs whose output does not fit in memory:
it only keeps the accumulators for the band of output rows still being written, ``scale * tile`` rows
of the output width. Both share :func:`tile_starts`, :func:`blend_window` and one accumulator.

Images smaller than a tile are extended by reflection about their last row/column, which keeps the
Bayer phase, and the output is cropped back (this project's choice; the released code assumes images
of at least one tile).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import groupby

import torch

TileFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``fn(raw (N, 1, T, T), ref (N, 3, T, T)) -> srgb (N, 3, sT, sT)``: the network on a batch of tiles (or
``(N, C, sT, sT)`` with ``channels=C``, e.g. sRGB and linear concatenated, ``C = 6``)."""

BLENDS = ("linear", "mean")
ALIGN = 2
"""Tile origins are multiples of this, which keeps the 2x2 colour-filter phase of the mosaic."""


def tile_starts(size: int, tile: int, stride: int, align: int = ALIGN) -> list[int]:
    """Tile origins along one axis: ``0, stride, 2*stride, ...`` and a last one clamped to ``size - tile``.

    The tiles ``[s, s + tile)`` cover ``[0, size)``; consecutive origins are at most ``stride`` apart and
    all are multiples of ``align``.

    Raises:
        ValueError: ``tile``, ``stride`` or ``size`` is not a positive multiple of ``align``,
            ``stride > tile``, or ``size < tile`` (pad the image first; :func:`tiled_forward` does).
    """
    for name, value in (("tile", tile), ("stride", stride), ("size", size)):
        if not isinstance(value, int) or value <= 0 or value % align:
            raise ValueError(f"tile_starts: {name} must be a positive multiple of {align}, got {value!r}")
    if stride > tile:
        raise ValueError(f"tile_starts: stride {stride} is larger than the tile {tile}; tiles would leave gaps")
    if size < tile:
        raise ValueError(f"tile_starts: image side {size} is smaller than the tile {tile}; pad the image first")
    return [*range(0, size - tile, stride), size - tile]


def blend_window(
    size: int,
    ramp: int,
    blend: str,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Weight of each pixel of a high-resolution tile: ``(size, size)``, all weights > 0.

    ``blend="mean"`` gives ones. ``blend="linear"`` gives the outer product of a 1-D ramp
    ``min(1, (i + 0.5) / ramp, (size - i - 0.5) / ramp)``, which rises over ``ramp`` pixels from each
    border; two tiles overlapping by exactly ``ramp`` pixels have weights summing to 1 in the overlap.
    ``ramp <= 0`` gives ones.
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {list(BLENDS)}, got {blend!r}")
    if blend == "mean" or ramp <= 0:
        return torch.ones(size, size, device=device, dtype=dtype)
    centre = torch.arange(size, device=device, dtype=dtype) + 0.5
    ramp1d = (torch.minimum(centre, size - centre) / ramp).clamp(max=1.0)
    return ramp1d[:, None] * ramp1d[None, :]


def _reflect_index(n: int, total: int, device: torch.device) -> torch.Tensor:
    """Indices ``(total,)`` into ``[0, n)`` that extend an axis of length ``n >= 2`` by repeated reflection
    about its first and last samples; index parity is preserved, so a Bayer mosaic keeps its phase."""
    period = 2 * (n - 1)
    i = torch.arange(total, device=device) % period
    return torch.where(i >= n, period - i, i)


def _pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Extend ``(B, C, H, W)`` to ``(B, C, max(H, height), max(W, width))`` by reflection at the bottom/right."""
    h, w = x.shape[-2:]
    if h < height:
        x = x.index_select(-2, _reflect_index(h, height, x.device))
    if w < width:
        x = x.index_select(-1, _reflect_index(w, width, x.device))
    return x


def _check(raw: torch.Tensor, ref: torch.Tensor, tile: int, scale: int, overlap: int, blend: str, batch: int) -> None:
    """Validate the arguments shared by :func:`tiled_forward` and :func:`tiled_rows`."""
    if raw.ndim != 4 or raw.shape[:2] != (1, 1):
        raise ValueError(f"tiled inference: raw must have shape (1, 1, H, W), got {tuple(raw.shape)}")
    if ref.ndim != 4 or ref.shape[:2] != (1, 3) or ref.shape[-2:] != raw.shape[-2:]:
        raise ValueError(
            f"tiled inference: ref must have shape (1, 3, H, W) with raw's H, W {tuple(raw.shape[-2:])}, "
            f"got {tuple(ref.shape)}"
        )
    h, w = raw.shape[-2:]
    if h % ALIGN or w % ALIGN or min(h, w) < ALIGN:
        raise ValueError(f"tiled inference: H and W must be even (Bayer phase), got {h}x{w}; trim the mosaic")
    if not isinstance(tile, int) or tile <= 0 or tile % ALIGN:
        raise ValueError(f"tiled inference: tile must be a positive even integer, got {tile!r}")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"tiled inference: scale must be a positive integer, got {scale!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < tile or (tile - overlap) % ALIGN:
        raise ValueError(
            f"tiled inference: overlap must be an integer in [0, tile) with tile - overlap even, got {overlap!r} "
            f"for tile {tile}"
        )
    if blend not in BLENDS:
        raise ValueError(f"tiled inference: blend must be one of {list(BLENDS)}, got {blend!r}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"tiled inference: batch must be a positive integer, got {batch!r}")


def _run_tiles(
    fn: TileFn,
    raw: torch.Tensor,
    ref: torch.Tensor,
    ys: list[int],
    xs: list[int],
    tile: int,
    scale: int,
    batch: int,
    channels: int = 3,
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """Run ``fn`` over all tiles, row by row, ``batch`` tiles per call: a call may take the end of one tile row and
    the start of the next, so every call but the last has ``batch`` tiles.

    Yields ``(y, x_origins, out (n, channels, scale*tile, scale*tile))`` for the tiles of LR row ``y`` in each call,
    rows in order (a call spanning two rows yields twice).
    """
    origins = [(y, x) for y in ys for x in xs]
    for i in range(0, len(origins), batch):
        chunk = origins[i : i + batch]
        raw_tiles = torch.stack([raw[0, :, y : y + tile, x : x + tile] for y, x in chunk])
        ref_tiles = torch.stack([ref[0, :, y : y + tile, x : x + tile] for y, x in chunk])
        out = fn(raw_tiles, ref_tiles)
        expected = (len(chunk), channels, scale * tile, scale * tile)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"tiled inference: the tile function must return shape {expected}, got {got}")
        start = 0
        for y, row in groupby(chunk, key=lambda origin: origin[0]):
            row_xs = [x for _, x in row]
            yield y, row_xs, out[start : start + len(row_xs)]
            start += len(row_xs)


class _Accumulator:
    """Weighted sums of high-resolution tiles over a fixed band of output rows ``[top, top + rows)``.

    Holds ``acc (1, C, rows, width)`` and ``weight (1, 1, rows, width)``, allocated once, on the device and in
    (at least float32) dtype of the first tiles added. :meth:`pop` hands out the finished rows at the top and
    moves the rest up, so the band slides down the image without growing.
    """

    def __init__(self, rows: int, width: int, tile: int, ramp: int, blend: str, channels: int = 3) -> None:
        self.rows, self.width, self.tile, self.ramp, self.blend = rows, width, tile, ramp, blend
        self.channels = channels
        self.top = 0
        self.acc: torch.Tensor | None = None
        self.weight: torch.Tensor | None = None
        self.window: torch.Tensor | None = None

    def add(self, tiles: torch.Tensor, y: int, xs: list[int]) -> None:
        """Add ``tiles (n, C, T, T)`` whose top-left output pixels are ``(y, x)`` for ``x`` in ``xs``."""
        t, r = self.tile, y - self.top
        if not 0 <= r <= self.rows - t:
            raise RuntimeError(f"tile at output row {y} falls outside the band [{self.top}, {self.top + self.rows})")
        if self.acc is None:
            dtype = torch.promote_types(tiles.dtype, torch.float32)
            self.window = blend_window(t, self.ramp, self.blend, device=tiles.device, dtype=dtype)
            self.acc = tiles.new_zeros((1, self.channels, self.rows, self.width), dtype=dtype)
            self.weight = tiles.new_zeros((1, 1, self.rows, self.width), dtype=dtype)
        for out, x in zip(tiles, xs, strict=True):
            self.acc[0, :, r : r + t, x : x + t] += out * self.window
            self.weight[0, 0, r : r + t, x : x + t] += self.window

    def pop(self, bottom: int) -> torch.Tensor:
        """Remove and return the finished rows ``[top, bottom)``, normalised and clipped: ``(1, C, n, width)``."""
        n = bottom - self.top
        rows = (self.acc[:, :, :n] / self.weight[:, :, :n]).clamp_(0.0, 1.0)
        for buffer in (self.acc, self.weight):
            kept = self.rows - n
            if kept > 0:
                buffer[:, :, :kept] = buffer[:, :, n:].clone()
            buffer[:, :, max(kept, 0) :] = 0
        self.top = bottom
        return rows


def _setup(
    raw: torch.Tensor,
    ref: torch.Tensor,
    tile: int,
    scale: int,
    overlap: int | None,
    blend: str,
    batch: int,
    streaming: bool,
    channels: int = 3,
) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int], _Accumulator]:
    """Validate, pad images smaller than a tile, and lay out the tiles.

    Returns the (possibly padded) ``raw (1, 1, H', W')``, ``ref (1, 3, H', W')``, the LR row and column
    origins, and an empty accumulator of output width ``scale * W'`` holding ``scale * H'`` rows, or only
    ``scale * tile`` rows when ``streaming`` (each tile row starts where the previous one's finished rows end,
    so one tile of rows is all that is ever unfinished).
    """
    overlap = tile // 2 if overlap is None else overlap
    _check(raw, ref, tile, scale, overlap, blend, batch)
    raw, ref = _pad_to(raw, tile, tile), _pad_to(ref, tile, tile)
    h, w = raw.shape[-2:]
    stride = tile - overlap
    ys, xs = tile_starts(h, tile, stride), tile_starts(w, tile, stride)
    rows = scale * (tile if streaming else h)
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"tiled inference: channels must be a positive integer, got {channels!r}")
    return raw, ref, ys, xs, _Accumulator(rows, scale * w, scale * tile, scale * overlap, blend, channels)


def tiled_forward(
    fn: TileFn,
    raw: torch.Tensor,
    ref: torch.Tensor,
    tile: int,
    scale: int,
    overlap: int | None = None,
    blend: str = "linear",
    batch: int = 4,
    channels: int = 3,
) -> torch.Tensor:
    """Super-resolve a whole image tile by tile, in memory.

    Args:
        fn: the network on a batch of tiles, ``(N, 1, T, T), (N, 3, T, T) -> (N, 3, sT, sT)`` sRGB; it
            receives crops of ``raw`` and ``ref`` as they are (device, dtype) and may return any float dtype
            on any device; the result is merged there in at least float32.
        raw: ``(1, 1, H, W)`` mosaic, H and W even.
        ref: ``(1, 3, H, W)`` colour reference.
        tile: LR tile side (the training crop), even.
        scale: super-resolution factor.
        overlap: LR overlap of neighbouring tiles, default ``tile // 2`` (the paper's stride ``tile / 2``);
            ``tile - overlap`` must be even.
        blend: ``"linear"`` (feathered, seamless) or ``"mean"`` (the paper's count-mask average).
        batch: tiles per call of ``fn``; a call may span two tile rows, so only the last call has fewer.
        channels: channels ``fn`` returns (3 for sRGB; 6 for sRGB and linear concatenated); all are merged and
            clipped alike.

    Images smaller than a tile are extended by reflection about their last row/column (which keeps the
    Bayer phase) and the output is cropped back.

    Returns:
        ``(1, channels, scale*H, scale*W)`` in [0, 1].
    """
    h, w = raw.shape[-2:]
    raw, ref, ys, xs, accumulator = _setup(raw, ref, tile, scale, overlap, blend, batch, False, channels)
    for y, chunk, out in _run_tiles(fn, raw, ref, ys, xs, tile, scale, batch, channels):
        accumulator.add(out, scale * y, [scale * x for x in chunk])
    return accumulator.pop(scale * raw.shape[-2])[..., : scale * h, : scale * w]


def tiled_rows(
    fn: TileFn,
    raw: torch.Tensor,
    ref: torch.Tensor,
    tile: int,
    scale: int,
    overlap: int | None = None,
    blend: str = "linear",
    batch: int = 4,
    channels: int = 3,
) -> Iterator[torch.Tensor]:
    """Streaming :func:`tiled_forward`: yield finished output rows from top to bottom.

    Arguments as :func:`tiled_forward`. Each tile row is run, then the output rows that no later tile
    touches are normalised, clipped to [0, 1] and yielded as one block ``(1, channels, n, scale*W)``; the blocks
    concatenate to ``tiled_forward``'s result. Only the band of rows still being written is kept, one tile
    (``scale * tile`` rows) high, so memory grows with the image width, not its area.
    """
    h, w = raw.shape[-2:]
    raw, ref, ys, xs, accumulator = _setup(raw, ref, tile, scale, overlap, blend, batch, True, channels)
    row = ys[0]
    for y, chunk, out in _run_tiles(fn, raw, ref, ys, xs, tile, scale, batch, channels):
        if y != row:  # tile row `row` is complete: the rows above this one are finished
            yield from _finished_rows(accumulator, scale * y, scale * h, scale * w)
            row = y
        accumulator.add(out, scale * y, [scale * x for x in chunk])
    yield from _finished_rows(accumulator, scale * raw.shape[-2], scale * h, scale * w)


def _finished_rows(accumulator: _Accumulator, bottom: int, height: int, width: int) -> Iterator[torch.Tensor]:
    """Pop the accumulator's rows above ``bottom``, cropped to the output's ``height`` and ``width`` (the padding of
    an image smaller than a tile removed): one block ``(1, C, n, width)``, or nothing when all of them are padding."""
    top = accumulator.top
    rows = accumulator.pop(bottom)[..., : max(0, height - top), :width]
    if rows.shape[-2]:
        yield rows
