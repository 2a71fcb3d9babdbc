"""Tiled inference batches its tiles across tile rows: the network never runs on fewer tiles than it could."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rawsr.inference.tiling import tile_starts, tiled_forward, tiled_rows


def images(h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, h, w, generator=g), torch.rand(1, 3, h, w, generator=g)


class Recorder:
    """A tile function that records its batch sizes; each tile's output depends on that tile alone (its upsampled
    reference plus a constant from its mosaic), so a tile placed at the wrong origin changes the result."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, raw: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        self.calls.append(raw.shape[0])
        up = F.interpolate(ref, scale_factor=2, mode="nearest")
        return up * 0.5 + raw.mean(dim=(1, 2, 3))[:, None, None, None]


@pytest.mark.parametrize(("h", "w", "batch"), [(40, 56, 4), (72, 40, 3), (24, 200, 8), (40, 40, 16)])
@pytest.mark.parametrize("streaming", [False, True])
def test_every_call_but_the_last_is_a_full_batch(h, w, batch, streaming):
    raw, ref = images(h, w)
    tiles = len(tile_starts(h, 16, 8)) * len(tile_starts(w, 16, 8))
    fn = Recorder()
    if streaming:
        out = torch.cat(list(tiled_rows(fn, raw, ref, 16, 2, batch=batch)), dim=2)
    else:
        out = tiled_forward(fn, raw, ref, 16, 2, batch=batch)
    assert sum(fn.calls) == tiles
    assert len(fn.calls) == math.ceil(tiles / batch)
    assert all(n == batch for n in fn.calls[:-1])
    one = Recorder()
    torch.testing.assert_close(out, tiled_forward(one, raw, ref, 16, 2, batch=1), atol=0, rtol=0)
    assert one.calls == [1] * tiles


def test_a_narrow_image_is_not_run_one_tile_at_a_time():
    raw, ref = images(192, 16)  # 23 tile rows of one tile
    fn = Recorder()
    list(tiled_rows(fn, raw, ref, 16, 2, batch=4))
    assert fn.calls == [4] * 5 + [3]


def test_streaming_yields_each_tile_row_as_soon_as_it_is_complete():
    raw, ref = images(64, 40)  # 4 tiles per tile row, 7 tile rows
    fn = Recorder()
    stream = tiled_rows(fn, raw, ref, 16, 2, batch=6)
    first = next(stream)
    assert fn.calls == [6] and first.shape[-2] == 2 * 8  # the first call finished tile row 0
    second = next(stream)
    assert fn.calls == [6, 6] and second.shape[-2] == 2 * 8  # row 1's last tiles came with row 2's first
