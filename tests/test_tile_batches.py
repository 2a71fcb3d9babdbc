"""Tiled inference batches its tiles across tile rows (and across the transforms of the self-ensemble): the network
never runs on fewer tiles than it could, and the result is that of one tile per call."""

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
    reference plus a constant from its mosaic), so a tile placed at the wrong origin changes the result. A ramp
    across the output's columns makes it no flip's or transpose's fixed point, so a tile of the self-ensemble
    transformed back by another transform than its own changes the result too."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, raw: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        self.calls.append(raw.shape[0])
        up = F.interpolate(ref, scale_factor=2, mode="nearest")
        ramp = torch.linspace(0, 0.25, up.shape[-1])
        return up * 0.5 + raw.mean(dim=(1, 2, 3))[:, None, None, None] + ramp


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


OPTIONS = [{}, {"pad": 4}, {"tta": True}, {"pad": 6, "tta": True}]


@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "pad", "tta", "pad-tta"])
@pytest.mark.parametrize(("h", "w", "batch"), [(40, 56, 5), (24, 102, 8), (20, 16, 3)])
@pytest.mark.parametrize("streaming", [False, True])
def test_mirrored_border_and_self_ensemble_batch_across_tile_rows_and_transforms(h, w, batch, streaming, options):
    raw, ref = images(h, w, seed=h + w)
    one = Recorder()  # one tile per call: what batching tile row by tile row gives for a tile-wise function
    reference = tiled_forward(one, raw, ref, 16, 2, batch=1, **options)
    fn = Recorder()
    if streaming:
        blocks = list(tiled_rows(fn, raw, ref, 16, 2, batch=batch, **options))
        assert max(b.shape[-2] for b in blocks) <= 2 * 16  # one tile of output rows at a time
        out = torch.cat(blocks, dim=2)
    else:
        out = tiled_forward(fn, raw, ref, 16, 2, batch=batch, **options)
    tiles = len(one.calls)
    assert sum(fn.calls) == tiles
    assert fn.calls == [batch] * (tiles // batch) + ([tiles % batch] if tiles % batch else [])
    assert out.shape == (1, 3, 2 * h, 2 * w)
    torch.testing.assert_close(out, reference, atol=1e-6, rtol=0)


def test_self_ensemble_runs_every_transform_in_full_batches():
    raw, ref = images(40, 56)
    one = Recorder()
    plain = tiled_forward(one, raw, ref, 16, 2, batch=1)
    fn = Recorder()
    ensemble = tiled_forward(fn, raw, ref, 16, 2, batch=8, tta=True)
    assert sum(fn.calls) >= 8 * len(one.calls)  # eight transforms, each a grid of at least the plain tiles
    assert all(n == 8 for n in fn.calls[:-1])
    assert (ensemble - plain).abs().max() > 0.01  # the ramp is averaged over the flips: a real ensemble ran


@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "pad", "tta", "pad-tta"])
def test_streaming_yields_a_complete_tile_row_before_the_next_call(options):
    raw, ref = images(64, 40)
    fn = Recorder()
    whole = tiled_forward(Recorder(), raw, ref, 16, 2, batch=4, **options)
    yielded_after = []  # tiles run when each block came out
    blocks = []
    for block in tiled_rows(fn, raw, ref, 16, 2, batch=4, **options):
        yielded_after.append(sum(fn.calls))
        blocks.append(block)
    torch.testing.assert_close(torch.cat(blocks, dim=2), whole, atol=0, rtol=0)
    assert yielded_after[0] < sum(fn.calls) / 2  # the first rows come out early, not after the whole image
    assert len(set(yielded_after)) == len(yielded_after)  # each block after new tiles: one block per tile row


def test_a_call_that_ends_a_tile_row_yields_its_rows_at_once():
    raw, ref = images(64, 40)  # 4 tiles per tile row
    fn = Recorder()
    stream = tiled_rows(fn, raw, ref, 16, 2, batch=4)
    assert next(stream).shape[-2] == 2 * 8 and fn.calls == [4]  # not after the next call
    assert next(stream).shape[-2] == 2 * 8 and fn.calls == [4, 4]
