"""Geometry that keeps an RGGB mosaic RGGB: mirror extension, and the eight flips and transposes of the
self-ensemble.

**Mirror extension** (:func:`reflect_extend`) reflects an image about its first and last rows and columns (the
pixel centres, as ``numpy.pad(mode="reflect")``), repeatedly when more is needed than the image holds. Reflection
about a pixel centre maps an index to one of the same parity, so an RGGB mosaic extended by an even number of
pixels on its top and left is still RGGB, and it is a true mirror image: the reference, extended the same way,
stays registered with it.

**The dihedral group** (:data:`DIHEDRAL`): the identity, the three flips and rotations, and the four transposes.
A flipped RGGB mosaic is not RGGB (a reversed row of even length starts with G), so :func:`dihedral_transform`
first extends every axis it reverses by one mirrored pixel at each end, which makes the reversed axis start on a
pixel of the right colour; :func:`dihedral_inverse` undoes the flips and transposes and crops that pixel, ``scale``
output pixels, from each end. A transpose keeps an RGGB mosaic RGGB by itself (it swaps the two greens).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Dihedral(NamedTuple):
    """One of the eight flips and transposes: transpose first (swap H and W), then reverse the rows (the H axis)
    and/or the columns (the W axis) of the result."""

    transpose: bool
    flip_rows: bool
    flip_cols: bool


DIHEDRAL = tuple(Dihedral(t, r, c) for t in (False, True) for r in (False, True) for c in (False, True))
"""The eight elements, the identity first."""
IDENTITY = DIHEDRAL[0]


def reflect_index(n: int, start: int, total: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Indices ``(total,)`` into ``[0, n)`` of the positions ``start, ..., start + total - 1`` of an axis of
    length ``n >= 2`` extended by repeated reflection about its first and last samples. Every index has the
    parity of its position."""
    if n < 2:
        raise ValueError(f"reflect_index: an axis of length {n} cannot be reflected; it needs at least 2 samples")
    period = 2 * (n - 1)
    i = (torch.arange(total, device=device) + start) % period
    return torch.where(i >= n, period - i, i)


def reflect_extend(x: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """The window ``[top, top + height) x [left, left + width)`` of ``x (..., H, W)`` mirror-extended
    (:func:`reflect_index`): ``(..., height, width)``; ``top, left < 0`` reach above and left of the image. ``x``
    itself when the window is the image."""
    h, w = x.shape[-2:]
    if (top, height) != (0, h):
        x = x.index_select(-2, reflect_index(h, top, height, x.device))
    if (left, width) != (0, w):
        x = x.index_select(-1, reflect_index(w, left, width, x.device))
    return x


def reversed_axes(g: Dihedral) -> tuple[bool, bool]:
    """Whether ``g`` reverses the image's rows (its H axis) and its columns (its W axis)."""
    return (g.flip_cols, g.flip_rows) if g.transpose else (g.flip_rows, g.flip_cols)


def orient(x: torch.Tensor, g: Dihedral) -> torch.Tensor:
    """Apply ``g`` to ``x (..., H, W)`` as it is, without extension: ``(..., H, W)``, or ``(..., W, H)`` for a
    transpose. An RGGB tile stays RGGB when it starts on an odd row (column) of the mosaic for every axis ``g``
    reverses, and on an even one otherwise."""
    if g.transpose:
        x = x.transpose(-2, -1)
    dims = [d for d, flip in ((-2, g.flip_rows), (-1, g.flip_cols)) if flip]
    return x.flip(dims) if dims else x


def unorient(y: torch.Tensor, g: Dihedral) -> torch.Tensor:
    """The inverse of :func:`orient`: ``unorient(orient(x, g), g) == x``."""
    dims = [d for d, flip in ((-2, g.flip_rows), (-1, g.flip_cols)) if flip]
    y = y.flip(dims) if dims else y
    return y.transpose(-2, -1) if g.transpose else y


def dihedral_transform(x: torch.Tensor, g: Dihedral) -> torch.Tensor:
    """``g`` applied to a whole image ``x (..., H, W)`` (an RGGB mosaic, H and W even, or its reference) so that a
    mosaic stays RGGB: every axis ``g`` reverses is first extended by one mirrored pixel at each end.

    Returns:
        ``(..., H', W')``: ``(H + 2 r, W + 2 c)`` for the reversed rows/columns ``r, c`` in {0, 1}, with H' and W'
        swapped for a transpose.
    """
    rows, cols = reversed_axes(g)
    h, w = x.shape[-2:]
    return orient(reflect_extend(x, -int(rows), -int(cols), h + 2 * rows, w + 2 * cols), g)


def dihedral_inverse(y: torch.Tensor, g: Dihedral, scale: int = 1) -> torch.Tensor:
    """Undo :func:`dihedral_transform` on ``y``, the transformed image or its output at ``scale`` (one LR pixel is
    ``scale`` output pixels): ``(..., scale * H', scale * W')`` -> ``(..., scale * H, scale * W)``."""
    y = unorient(y, g)
    rows, cols = reversed_axes(g)
    h, w = y.shape[-2:]
    return y[..., scale * rows : h - scale * rows, scale * cols : w - scale * cols]
