"""Tiled inference: run a fixed-size network over a whole image, in memory or streaming by rows.

The rawSR network pools its channel attention over the whole input, so its output depends on the input
size; inference therefore runs on tiles of the training crop size (as the released code does). Tiles
start every ``tile - overlap`` pixels, the last one clamped to the border, and every origin is even so that
an RGGB mosaic stays RGGB in every tile (odd along an axis that the self-ensemble below reverses).

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
of the output width. Both share :func:`tile_starts`, :func:`blend_window` and one accumulator, and both run the
network on ``batch`` tiles per call taken in row order across tile-row boundaries (and across the transforms of the
self-ensemble), so that only an image's last call is smaller.

Images smaller than a tile are extended by reflection about their last row/column, which keeps the
Bayer phase, and the output is cropped back (this project's choice; the released code assumes images
of at least one tile).

Two options of this project, both off by default (the paper's protocol):

- ``pad``: the image is mirror-extended by ``pad`` LR pixels on every side before tiling and the output is
  cropped back, so that the image's own border lies inside the tiles. The network darkens the outermost pixels
  of whatever it is given (its convolutions pad with zeros, its transposed convolutions under-cover the edge);
  inside an image the blend hides that, but at the image's border only one tile covers it.
- ``tta``: the self-ensemble. Every tile position is also run through the seven other flips and transposes of
  :mod:`rawsr.inference.geometry`, each undone on the output, and the eight results are averaged: the output is
  the mean over the transforms ``g`` of ``dihedral_inverse(tiled(dihedral_transform(image, g)), g, scale)``, each
  tiled and blended on its own, computed tile row by tile row of the original image so that it streams; eight
  times the network time. (An image smaller than a tile is extended about its own border in every orientation,
  where the definition would extend each transformed image about its far end.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import groupby

import torch

from rawsr.inference.geometry import DIHEDRAL, IDENTITY, Dihedral, orient, reflect_extend, reversed_axes, unorient

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


def blend_ramp(
    size: int,
    ramp: int,
    blend: str,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The 1-D profile ``(size,)`` of :func:`blend_window`: ones for ``blend="mean"`` or ``ramp <= 0``, else
    ``min(1, (i + 0.5) / ramp, (size - i - 0.5) / ramp)``."""
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {list(BLENDS)}, got {blend!r}")
    if blend == "mean" or ramp <= 0:
        return torch.ones(size, device=device, dtype=dtype)
    centre = torch.arange(size, device=device, dtype=dtype) + 0.5
    return (torch.minimum(centre, size - centre) / ramp).clamp(max=1.0)


def feathered_overlap(tile: int) -> int:
    """The overlap ``rawsr.predict`` uses by default (``overlap=auto``): about a sixteenth of the tile, ``2 * (tile //
    32)`` (16 for a tile of 256, 4 for 64), even so that ``tile - overlap`` is even for every even tile.

    On the real raw files of docs/results.md, feathered tiles (``blend="linear"``) with this overlap show no seam
    (:func:`seam_ratio` at most 1.04) and stay within 54 dB PSNR of the half-tile overlap (an RMS difference of half a
    level of 255), while the network runs on about 1.2x the photo's area instead of 3.5x.
    """
    return 2 * (tile // 32)


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
    ramp1d = blend_ramp(size, ramp, blend, device=device, dtype=dtype)
    return ramp1d[:, None] * ramp1d[None, :]


def _check(
    raw: torch.Tensor,
    ref: torch.Tensor,
    tile: int,
    scale: int,
    overlap: int,
    blend: str,
    batch: int,
    pad: int,
    tta: bool,
) -> None:
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
    if not isinstance(pad, int) or isinstance(pad, bool) or pad < 0 or pad % ALIGN:
        raise ValueError(f"tiled inference: pad must be an even integer >= 0 (Bayer phase), got {pad!r}")
    if not isinstance(tta, bool):
        raise ValueError(f"tiled inference: tta must be True or False, got {tta!r}")


def _origins(image: int, tile: int, stride: int, reverse: bool, margin: int) -> list[int]:
    """Tile origins, in increasing order, along one axis of the extended image (``margin`` mirrored pixels, the
    ``image`` pixels extended to at least a tile, ``margin`` more) for a transform that keeps (``reverse=False``)
    or reverses this axis.

    A kept axis is tiled from the image's first pixel: ``margin + tile_starts(max(image, tile))``. A reversed one
    is tiled as :func:`tiled_forward` tiles the reversed axis of
    :func:`rawsr.inference.geometry.dihedral_transform`: its ``image + 2 * margin`` pixels (at least a tile), from
    their far end; its origins are then odd in image coordinates, so that the reversed tiles start with an R pixel.
    """
    if not reverse:
        return [margin + s for s in tile_starts(max(image, tile), tile, stride)]
    size = max(image + 2 * margin, tile)
    return [size - tile - s for s in reversed(tile_starts(size, tile, stride))]


def _coverage(origins: list[int], size: int, tile: int, scale: int, ramp: int, blend: str) -> torch.Tensor:
    """``(scale * size,)`` float64: the sum of the 1-D blend profiles of tiles at ``origins`` (LR) along an axis
    of ``size`` LR pixels. The 2-D weight sum of a tile grid is the outer product of its two axes' sums."""
    profile = blend_ramp(scale * tile, scale * ramp, blend, dtype=torch.float64)
    total = torch.zeros(scale * size, dtype=torch.float64)
    for o in origins:
        total[scale * o : scale * (o + tile)] += profile
    return total


@dataclass
class _Layout:
    """The tiles to run and where the image lies among them.

    ``raw (1, 1, Hx, Wx)`` and ``ref (1, 3, Hx, Wx)`` are the image mirror-extended (by ``pad``, to a tile, and
    by one more pixel on every side for the self-ensemble); ``rows`` lists the tile rows by increasing LR origin
    ``y``, each with its tiles ``(x, g)``: LR origin and transform. The image is ``[top, top + height) x
    [left, left + width)`` of the extended one. ``norms`` (self-ensemble only) holds per transform the 1-D weight
    sums of its tile grid over the extended output's rows and columns, so that each transform's tiles are
    normalised on their own and the transforms weigh alike.
    """

    raw: torch.Tensor
    ref: torch.Tensor
    rows: list[tuple[int, list[tuple[int, Dihedral]]]]
    top: int
    left: int
    height: int
    width: int
    norms: dict[Dihedral, tuple[torch.Tensor, torch.Tensor]] | None

    def weights(self, y: int, tiles: list[tuple[int, Dihedral]], size: int) -> torch.Tensor | None:
        """``(n, size, size)`` float64 factors of the blend window of the HR tiles at output row ``y`` and output
        columns ``x`` of ``tiles``: one over their transform's weight sum there; ``None`` without self-ensemble."""
        if self.norms is None:
            return None
        factors = []
        for x, g in tiles:
            rows, cols = self.norms[g]
            factors.append(1.0 / (rows[y : y + size, None] * cols[None, x : x + size]))
        return torch.stack(factors)


def _run_tiles(
    fn: TileFn,
    layout: _Layout,
    tile: int,
    scale: int,
    batch: int,
    channels: int = 3,
) -> Iterator[tuple[int, list[tuple[int, Dihedral]], bool, torch.Tensor]]:
    """Run ``fn`` over all tiles of ``layout``, tile row by tile row, ``batch`` tiles per call: a call may take the
    end of one tile row and the start of the next (or several short rows), so every call but the last has ``batch``
    tiles. Each LR tile ``(x, g)`` is transformed by ``g`` (:func:`rawsr.inference.geometry.orient`) and its output
    transformed back.

    Yields ``(y, tiles, complete, out (n, channels, scale*tile, scale*tile))`` for the ``tiles`` ``(x, g)`` of the
    tile row at LR row ``y`` in each call, rows in order (a call spanning two rows yields twice), ``out`` in the
    image's orientation; ``complete`` says that these are the row's last tiles.
    """
    queue = [(y, x, g, i == len(tiles) - 1) for y, tiles in layout.rows for i, (x, g) in enumerate(tiles)]
    for i in range(0, len(queue), batch):
        chunk = queue[i : i + batch]
        raw_tiles = torch.stack([orient(layout.raw[0, :, y : y + tile, x : x + tile], g) for y, x, g, _ in chunk])
        ref_tiles = torch.stack([orient(layout.ref[0, :, y : y + tile, x : x + tile], g) for y, x, g, _ in chunk])
        out = fn(raw_tiles, ref_tiles)
        expected = (len(chunk), channels, scale * tile, scale * tile)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"tiled inference: the tile function must return shape {expected}, got {got}")
        if any(g != IDENTITY for _, _, g, _ in chunk):
            out = torch.stack([unorient(o, g) for o, (_, _, g, _) in zip(out, chunk, strict=True)])
        start = 0
        for y, group in groupby(chunk, key=lambda item: item[0]):
            row = list(group)
            yield y, [(x, g) for _, x, g, _ in row], row[-1][3], out[start : start + len(row)]
            start += len(row)


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

    def add(self, tiles: torch.Tensor, y: int, xs: list[int], factors: torch.Tensor | None = None) -> None:
        """Add ``tiles (n, C, T, T)`` whose top-left output pixels are ``(y, x)`` for ``x`` in ``xs``, weighted by
        the blend window, times ``factors (n, T, T)`` when given."""
        t, r = self.tile, y - self.top
        if not 0 <= r <= self.rows - t:
            raise RuntimeError(f"tile at output row {y} falls outside the band [{self.top}, {self.top + self.rows})")
        if self.acc is None:
            dtype = torch.promote_types(tiles.dtype, torch.float32)
            self.window = blend_window(t, self.ramp, self.blend, device=tiles.device, dtype=dtype)
            self.acc = tiles.new_zeros((1, self.channels, self.rows, self.width), dtype=dtype)
            self.weight = tiles.new_zeros((1, 1, self.rows, self.width), dtype=dtype)
        if factors is not None:
            factors = factors.to(self.window)
        for i, (out, x) in enumerate(zip(tiles, xs, strict=True)):
            window = self.window if factors is None else self.window * factors[i]
            self.acc[0, :, r : r + t, x : x + t] += out * window
            self.weight[0, 0, r : r + t, x : x + t] += window

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
    pad: int = 0,
    tta: bool = False,
) -> tuple[_Layout, _Accumulator]:
    """Validate, mirror-extend the image and lay out the tiles.

    The image is extended by ``pad`` on every side, then, where smaller than a tile, at the bottom/right to a
    tile, then, for the self-ensemble, by one pixel on every side (the margin of
    :func:`rawsr.inference.geometry.dihedral_transform`). The accumulator has the extended output's width and
    holds all its rows, or only ``scale * tile`` rows when ``streaming`` (each tile row starts where the previous
    one's finished rows end, so one tile of rows is all that is ever unfinished).
    """
    overlap = tile // 2 if overlap is None else overlap
    _check(raw, ref, tile, scale, overlap, blend, batch, pad, tta)
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"tiled inference: channels must be a positive integer, got {channels!r}")
    h, w = raw.shape[-2:]
    height, width = max(h + 2 * pad, tile), max(w + 2 * pad, tile)
    margin = 1 if tta else 0
    extended = []
    for x in (raw, ref):
        x = reflect_extend(x, -pad, -pad, h + 2 * pad, w + 2 * pad)
        x = reflect_extend(x, -margin, -margin, height + 2 * margin, width + 2 * margin)
        extended.append(x)
    stride = tile - overlap
    transforms = DIHEDRAL if tta else (IDENTITY,)
    rows: dict[int, list[tuple[int, Dihedral]]] = {}
    norms = {} if tta else None
    for g in transforms:
        rev_rows, rev_cols = reversed_axes(g)
        ys = _origins(h + 2 * pad, tile, stride, rev_rows, margin)
        xs = _origins(w + 2 * pad, tile, stride, rev_cols, margin)
        for y in ys:
            rows.setdefault(y, []).extend((x, g) for x in xs)
        if norms is not None:
            norms[g] = (
                _coverage(ys, height + 2 * margin, tile, scale, overlap, blend),
                _coverage(xs, width + 2 * margin, tile, scale, overlap, blend),
            )
    layout = _Layout(*extended, sorted(rows.items()), margin + pad, margin + pad, h, w, norms)
    band = scale * (tile if streaming else height + 2 * margin)
    accumulator = _Accumulator(band, scale * (width + 2 * margin), scale * tile, scale * overlap, blend, channels)
    return layout, accumulator


def _add_tiles(
    layout: _Layout,
    accumulator: _Accumulator,
    y: int,
    tiles: list[tuple[int, Dihedral]],
    out: torch.Tensor,
    tile: int,
    scale: int,
) -> None:
    """Add the outputs ``out`` of ``tiles`` ``(x, g)`` of the tile row at LR row ``y`` to ``accumulator``."""
    factors = layout.weights(scale * y, [(scale * x, g) for x, g in tiles], scale * tile)
    accumulator.add(out, scale * y, [scale * x for x, _ in tiles], factors)


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
    pad: int = 0,
    tta: bool = False,
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
        batch: tiles per call of ``fn``; calls take the tiles of all tile rows in order (with their transforms),
            across row boundaries, so only the last call has fewer.
        channels: channels ``fn`` returns (3 for sRGB; 6 for sRGB and linear concatenated); all are merged and
            clipped alike.
        pad: LR pixels of mirror image added on every side before tiling and cropped from the output, even
            (0, the paper's protocol: the image's border is a tile's border).
        tta: the self-ensemble over the eight flips and transposes (eight times the tiles); see the module
            docstring.

    Images smaller than a tile are extended by reflection about their last row/column (which keeps the
    Bayer phase) and the output is cropped back.

    Returns:
        ``(1, channels, scale*H, scale*W)`` in [0, 1].
    """
    layout, accumulator = _setup(raw, ref, tile, scale, overlap, blend, batch, False, channels, pad, tta)
    for y, tiles, _, out in _run_tiles(fn, layout, tile, scale, batch, channels):
        _add_tiles(layout, accumulator, y, tiles, out, tile, scale)
    out = accumulator.pop(scale * layout.raw.shape[-2])
    top, left = scale * layout.top, scale * layout.left
    return out[..., top : top + scale * layout.height, left : left + scale * layout.width]


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
    pad: int = 0,
    tta: bool = False,
) -> Iterator[torch.Tensor]:
    """Streaming :func:`tiled_forward`: yield finished output rows from top to bottom.

    Arguments as :func:`tiled_forward`. As soon as the last tile of a tile row has run (calls of ``fn`` span tile
    rows, as in :func:`tiled_forward`), the output rows that no later tile touches are normalised, clipped to [0, 1]
    and yielded as one block ``(1, channels, n, scale*W)``, before the next call; the blocks concatenate to
    ``tiled_forward``'s result. Only the band of rows still being written is kept, one tile
    (``scale * tile`` rows) high, so memory grows with the image width, not its area.
    """
    layout, accumulator = _setup(raw, ref, tile, scale, overlap, blend, batch, True, channels, pad, tta)
    ys = [y for y, _ in layout.rows]
    finished = dict(zip(ys, [scale * y for y in ys[1:]] + [scale * layout.raw.shape[-2]], strict=True))
    first, last = scale * layout.top, scale * (layout.top + layout.height)
    left = scale * layout.left
    for y, tiles, complete, out in _run_tiles(fn, layout, tile, scale, batch, channels):
        _add_tiles(layout, accumulator, y, tiles, out, tile, scale)
        if not complete:
            continue
        # tile row y is complete: the output rows above the next tile row are finished
        top, bottom = accumulator.top, finished[y]
        block = accumulator.pop(bottom)
        start, stop = max(first, top), min(last, bottom)
        if stop > start:
            yield block[..., start - top : stop - top, left : left + scale * layout.width]


def seam_ratio(image: torch.Tensor, starts: list[int], tile: int, scale: int) -> float:
    """Mean |difference| of neighbouring pixels across tile borders over that inside tiles: 1 for no seam.

    ``image (1, C, H, W)`` was tiled with LR tile origins ``starts`` on both axes (square, ``H == W``); borders are
    the output rows and columns where a tile begins or ends (multiples of ``scale``). Inside pairs are taken at the
    same sub-pixel phase, between output pixels ``i - 1`` and ``i`` with ``i`` a multiple of ``scale``, so that an
    upsampling that repeats pixels does not bias the ratio.
    """
    n = image.shape[-1]
    edges = sorted({scale * s for s in starts[1:]} | {scale * (s + tile) for s in starts[:-1]})
    at_edge = torch.zeros(n - 1, dtype=torch.bool)
    at_edge[[e - 1 for e in edges if 0 < e < n]] = True
    same_phase = torch.arange(1, n) % scale == 0
    inside = ~at_edge & same_phase
    rows = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(dim=(0, 1, 3)).cpu()
    cols = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(dim=(0, 1, 2)).cpu()
    across = torch.cat([rows[at_edge], cols[at_edge]]).mean()
    within = torch.cat([rows[inside], cols[inside]]).mean()
    return float(across / within)
