"""Tiled inference: tile layout, exactness against untiled runs, streaming, Bayer phase and seams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rawsr.inference.tiling import blend_window, seam_ratio, tile_starts, tiled_forward, tiled_rows


def upsample_ref(scale: int):
    """A tile function that is exact under tiling: nearest upsampling of the reference tile."""
    return lambda raw, ref: F.interpolate(ref, scale_factor=scale, mode="nearest")


def tile_dependent(scale: int):
    """A tile function whose output depends on the whole tile (like the network's channel attention):
    the upsampled reference plus the tile's mean raw value."""

    def fn(raw, ref):
        return F.interpolate(ref, scale_factor=scale, mode="nearest") + raw.mean(dim=(1, 2, 3), keepdim=True)

    return fn


def images(h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, h, w, generator=g), torch.rand(1, 3, h, w, generator=g)


# ------------------------------------------------------------------------------------------------ tile_starts


@pytest.mark.parametrize(
    ("size", "tile", "stride"),
    [(32, 32, 16), (34, 32, 16), (100, 32, 16), (128, 32, 32), (130, 32, 32), (1000, 256, 128), (98, 36, 2)],
)
def test_tile_starts_cover_and_clamp(size, tile, stride):
    starts = tile_starts(size, tile, stride)
    covered = np.zeros(size, dtype=int)
    for s in starts:
        covered[s : s + tile] += 1
    assert covered.min() >= 1 and len(covered) == size  # no gap, nothing past the border
    assert starts[0] == 0 and starts[-1] == size - tile
    steps = np.diff(starts)
    assert np.all(steps > 0) and np.all(steps <= stride)
    assert all(s % 2 == 0 for s in starts)


def test_tile_starts_random_layouts():
    rng = np.random.default_rng(1)
    for _ in range(200):
        tile = 2 * int(rng.integers(1, 100))
        stride = 2 * int(rng.integers(1, tile // 2 + 1))
        size = tile + 2 * int(rng.integers(0, 300))
        starts = tile_starts(size, tile, stride)
        assert starts[-1] + tile == size and max(np.diff([0, *starts]), default=0) <= stride
        assert len(starts) == -(-(size - tile) // stride) + 1  # ceil((size - tile) / stride) + 1


@pytest.mark.parametrize(
    ("size", "tile", "stride", "message"),
    [
        (30, 32, 16, "smaller than the tile"),
        (64, 32, 15, "stride must be a positive multiple of 2"),
        (64, 31, 16, "tile must be a positive multiple of 2"),
        (64, 32, 34, "larger than the tile"),
        (65, 32, 16, "size must be"),
    ],
)
def test_tile_starts_rejects(size, tile, stride, message):
    with pytest.raises(ValueError, match=message):
        tile_starts(size, tile, stride)


# ------------------------------------------------------------------------------------------------ window


@pytest.mark.parametrize(("size", "ramp"), [(64, 32), (64, 16), (48, 8)])
def test_linear_window_is_a_separable_partition_of_unity(size, ramp):
    w = blend_window(size, ramp, "linear", dtype=torch.float64)
    assert w.shape == (size, size) and torch.all(w > 0) and w.max() <= 1
    ramp1d = w.diagonal().sqrt()
    torch.testing.assert_close(w, torch.outer(ramp1d, ramp1d))  # separable
    torch.testing.assert_close(ramp1d, ramp1d.flip(0))  # symmetric
    # Two tiles overlapping by exactly `ramp` pixels: their weights add up to 1 in the overlap.
    overlap_sum = ramp1d[size - ramp :] + ramp1d[:ramp]
    torch.testing.assert_close(overlap_sum, torch.ones(ramp, dtype=torch.float64))
    assert torch.all(ramp1d[ramp : size - ramp] == 1)
    assert torch.all(ramp1d[1:ramp] > ramp1d[: ramp - 1])  # rising over the ramp


def test_mean_window_is_ones():
    assert torch.equal(blend_window(16, 8, "mean"), torch.ones(16, 16))
    with pytest.raises(ValueError, match="blend must be one of"):
        blend_window(16, 8, "cosine")


# ------------------------------------------------------------------------------------------------ exactness


@pytest.mark.parametrize("blend", ["linear", "mean"])
@pytest.mark.parametrize(("h", "w", "tile", "scale", "overlap"), [(70, 98, 32, 2, None), (64, 40, 16, 4, 4)])
def test_tiled_equals_untiled_for_a_tiling_invariant_function(blend, h, w, tile, scale, overlap):
    raw, ref = images(h, w)
    expected = F.interpolate(ref, scale_factor=scale, mode="nearest")
    out = tiled_forward(upsample_ref(scale), raw, ref, tile, scale, overlap=overlap, blend=blend, batch=3)
    assert out.shape == (1, 3, scale * h, scale * w)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_image_smaller_than_a_tile_is_padded_and_cropped_back():
    raw, ref = images(10, 22)
    out = tiled_forward(upsample_ref(2), raw, ref, tile=32, scale=2)
    torch.testing.assert_close(out, F.interpolate(ref, scale_factor=2, mode="nearest"), atol=1e-6, rtol=0)
    streamed = torch.cat(list(tiled_rows(upsample_ref(2), raw, ref, tile=32, scale=2)), dim=2)
    torch.testing.assert_close(streamed, out, atol=0, rtol=0)


def test_mean_blend_is_the_count_mask_average():
    """The paper's merge, computed independently with NumPy: sum of tile outputs over count of tiles."""
    h, w, tile, scale, stride = 44, 60, 16, 2, 8
    raw, ref = images(h, w, seed=3)
    fn = tile_dependent(scale)
    total = np.zeros((3, scale * h, scale * w))
    count = np.zeros((scale * h, scale * w))
    for y in [*range(0, h - tile, stride), h - tile]:
        for x in [*range(0, w - tile, stride), w - tile]:
            t = fn(raw[..., y : y + tile, x : x + tile], ref[..., y : y + tile, x : x + tile])[0].numpy()
            total[:, scale * y : scale * (y + tile), scale * x : scale * (x + tile)] += t
            count[scale * y : scale * (y + tile), scale * x : scale * (x + tile)] += 1
    expected = np.clip(total / count, 0, 1)
    out = tiled_forward(fn, raw, ref, tile, scale, overlap=tile - stride, blend="mean")
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-6)


def test_output_is_clipped_to_unit_range():
    raw, ref = images(32, 32)
    out = tiled_forward(lambda r, c: 3 * upsample_ref(2)(r, c) - 1, raw, ref, tile=16, scale=2)
    assert out.min() == 0 and out.max() == 1


def test_bad_arguments_are_named():
    raw, ref = images(32, 32)
    fn = upsample_ref(2)
    with pytest.raises(ValueError, match="overlap"):
        tiled_forward(fn, raw, ref, tile=16, scale=2, overlap=5)  # odd stride would break the Bayer phase
    with pytest.raises(ValueError, match="even"):
        tiled_forward(fn, raw[..., :31, :], ref[..., :31, :], tile=16, scale=2)
    with pytest.raises(ValueError, match=r"ref must have shape \(1, 3, H, W\)"):
        tiled_forward(fn, raw, ref[:, :2], tile=16, scale=2)
    with pytest.raises(ValueError, match="blend"):
        tiled_forward(fn, raw, ref, tile=16, scale=2, blend="max")
    with pytest.raises(ValueError, match=r"must return shape \(4, 3, 32, 32\)"):  # batches span tile rows
        tiled_forward(upsample_ref(4), raw, ref, tile=16, scale=2)


# ------------------------------------------------------------------------------------------------ borders


def zero_padded_blur(scale: int):
    """A tile function that darkens the border of its input, as the network's zero-padded convolutions do: a 5x5
    box blur of the reference with zero padding, repeated ``scale`` times."""
    box = torch.ones(3, 1, 5, 5) / 25

    def fn(raw, ref):
        return F.interpolate(F.conv2d(ref, box, padding=2, groups=3), scale_factor=scale, mode="nearest")

    return fn


def border_contrast(out: torch.Tensor) -> float:
    """Largest |mean of an outermost output row or column - mean of the inside| of ``out (1, 3, H, W)``."""
    inside = out[..., 8:-8, 8:-8].mean()
    edges = (out[..., 0, :], out[..., -1, :], out[..., :, 0], out[..., :, -1])
    return max(float((e.mean() - inside).abs()) for e in edges)


@pytest.mark.parametrize("blend", ["linear", "mean"])
@pytest.mark.parametrize("tta", [False, True])
def test_a_mirrored_border_keeps_the_border_of_a_flat_image(blend, tta):
    """One tile holds the mirrored image: the output is flat to its last pixel."""
    raw, ref = torch.full((1, 1, 20, 24), 0.3), torch.full((1, 3, 20, 24), 0.6)
    fn = zero_padded_blur(2)
    darkened = tiled_forward(fn, raw, ref, 32, 2, blend=blend, tta=tta)
    assert border_contrast(darkened) > 0.1  # what the network does to a border left at a tile's border
    fixed = tiled_forward(fn, raw, ref, 32, 2, blend=blend, pad=4, tta=tta)
    assert fixed.shape == darkened.shape
    torch.testing.assert_close(fixed, torch.full_like(fixed, 0.6), atol=1e-6, rtol=0)
    streamed = torch.cat(list(tiled_rows(fn, raw, ref, 32, 2, blend=blend, pad=4, tta=tta)), dim=2)
    torch.testing.assert_close(streamed, fixed, atol=0, rtol=0)


@pytest.mark.parametrize("tta", [False, True])
def test_a_mirrored_border_is_as_bright_as_the_inside_across_many_tiles(tta):
    """Many tiles: the feathered blend hides the tiles' own darkened borders inside the image (to a few
    thousandths here); with the image's border mirrored into the tiles, its outermost rows and columns match."""
    raw, ref = torch.full((1, 1, 100, 84), 0.3), torch.full((1, 3, 100, 84), 0.6)
    fn = zero_padded_blur(2)
    assert border_contrast(tiled_forward(fn, raw, ref, 32, 2, tta=tta)) > 0.1
    assert border_contrast(tiled_forward(fn, raw, ref, 32, 2, pad=4, tta=tta)) < 0.01


@pytest.mark.parametrize(("h", "w", "pad"), [(44, 36, 4), (10, 14, 16), (40, 40, 2)])
def test_pad_is_a_mirrored_image_cropped_back(h, w, pad):
    """``pad`` equals mirroring with NumPy (``mode="reflect"``, repeated where the pad is longer than the image),
    tiling that, and cropping the output."""
    raw, ref = images(h, w, seed=h)
    fn = tile_dependent(2)
    mirrored = [np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect") for x in (raw, ref)]
    expected = tiled_forward(fn, *map(torch.from_numpy, mirrored), 16, 2)[..., 2 * pad : -2 * pad, 2 * pad : -2 * pad]
    torch.testing.assert_close(tiled_forward(fn, raw, ref, 16, 2, pad=pad), expected, atol=0, rtol=0)
    streamed = torch.cat(list(tiled_rows(fn, raw, ref, 16, 2, pad=pad)), dim=2)
    torch.testing.assert_close(streamed, expected, atol=0, rtol=0)


# ------------------------------------------------------------------------------------------------ streaming


@pytest.mark.parametrize("blend", ["linear", "mean"])
def test_streaming_equals_in_memory(blend):
    raw, ref = images(76, 52, seed=5)
    fn = tile_dependent(2)
    whole = tiled_forward(fn, raw, ref, 16, 2, blend=blend, batch=2)
    blocks = list(tiled_rows(fn, raw, ref, 16, 2, blend=blend, batch=2))
    assert all(b.shape[:2] == (1, 3) and b.shape[-1] == whole.shape[-1] for b in blocks)
    assert max(b.shape[-2] for b in blocks) <= 2 * 16  # at most one tile of output rows at a time
    torch.testing.assert_close(torch.cat(blocks, dim=2), whole, atol=0, rtol=0)


def test_streaming_yields_rows_before_the_last_tile_row_runs():
    raw, ref = images(96, 40)
    calls = []

    def fn(r, c):
        calls.append(r.shape[0])
        return upsample_ref(2)(r, c)

    stream = tiled_rows(fn, raw, ref, tile=16, scale=2, batch=8)  # 4 columns of tiles: a call takes two tile rows
    first = next(stream)
    assert len(calls) == 1 and first.shape[-2] == 2 * 8  # one call, its first tile row's first stride of rows out
    rest = list(stream)
    assert calls == [8] * (len(tile_starts(96, 16, 8)) * 4 // 8) + [4]  # 44 tiles
    assert sum(b.shape[-2] for b in [first, *rest]) == 2 * 96


def test_streaming_band_stays_bounded():
    """The accumulator holds one tile of output rows, allocated once, however tall the image."""
    from rawsr.inference import tiling

    seen = []
    original = tiling._Accumulator.add

    def spy(self, tiles, y, xs, factors=None):
        original(self, tiles, y, xs, factors)
        seen.append((self.acc.shape, self.acc.data_ptr(), self.weight.shape))

    raw, ref = images(400, 24)
    tiling._Accumulator.add = spy
    try:
        streamed = torch.cat(list(tiled_rows(upsample_ref(2), raw, ref, tile=16, scale=2)), dim=2)
    finally:
        tiling._Accumulator.add = original
    assert len(seen) == len(tile_starts(400, 16, 8))
    assert {s[0] for s in seen} == {(1, 3, 2 * 16, 2 * 24)} and {s[2] for s in seen} == {(1, 1, 2 * 16, 2 * 24)}
    assert len({s[1] for s in seen}) == 1  # never reallocated
    torch.testing.assert_close(streamed, F.interpolate(ref, scale_factor=2, mode="nearest"), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------------ Bayer phase


@pytest.mark.parametrize(("h", "w", "overlap"), [(70, 98, None), (66, 50, 6), (12, 18, None)])
def test_every_tile_keeps_the_rggb_phase(h, w, overlap):
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    phase = (2 * (yy % 2) + xx % 2).float()[None, None]  # 0 = R, 1 = G1, 2 = G2, 3 = B
    ref = torch.zeros(1, 3, h, w)
    seen = []

    def fn(raw, c):
        seen.append(raw.shape[0])
        for site, value in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            assert torch.all(raw[:, 0, value[0] :: 2, value[1] :: 2] == site)
        return upsample_ref(2)(raw, c)

    tiled_forward(fn, phase, ref, tile=16, scale=2, overlap=overlap)
    list(tiled_rows(fn, phase, ref, tile=16, scale=2, overlap=overlap))
    assert sum(seen) > 0


# ------------------------------------------------------------------------------------------------ seams


def scene(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A natural scene (skimage's astronaut) as ``raw (1, 1, size, size)`` RGGB mosaic and ``ref`` sRGB."""
    from skimage.data import astronaut
    from skimage.transform import resize

    srgb = torch.from_numpy(resize(astronaut(), (size, size), anti_aliasing=True)).float().permute(2, 0, 1)[None]
    linear = srgb**2.2
    raw = torch.empty(1, 1, size, size)
    raw[..., 0::2, 0::2] = linear[:, 0:1, 0::2, 0::2]
    raw[..., 0::2, 1::2] = linear[:, 1:2, 0::2, 1::2]
    raw[..., 1::2, 0::2] = linear[:, 1:2, 1::2, 0::2]
    raw[..., 1::2, 1::2] = linear[:, 2:3, 1::2, 1::2]
    return raw, srgb


def test_seam_measure_detects_seams_and_linear_blend_removes_them():
    raw, ref = scene(128)
    g = torch.Generator().manual_seed(0)

    def offset_per_tile(r, c):  # each tile off by its own constant: the worst case for seams
        return upsample_ref(2)(r, c) * 0.7 + 0.3 * torch.rand(r.shape[0], 3, 1, 1, generator=g)

    starts = tile_starts(128, 32, 16)
    mean = seam_ratio(tiled_forward(offset_per_tile, raw, ref, 32, 2, blend="mean"), starts, 32, 2)
    linear = seam_ratio(tiled_forward(offset_per_tile, raw, ref, 32, 2, blend="linear"), starts, 32, 2)
    assert mean > 1.5  # the measure sees hard tile borders
    assert linear <= 1.5


def test_no_seams_with_a_random_network():
    from rawsr.model import RawSRNet

    torch.manual_seed(0)
    net = RawSRNet(scale=2, width=16, growth=8, dense_layers=2).eval()
    raw, ref = scene(160)
    with torch.no_grad():
        out = tiled_forward(lambda r, c: net(r, c)["srgb"], raw, ref, tile=32, scale=2, blend="linear", batch=8)
    assert out.std() > 0.01  # a non-trivial image
    assert seam_ratio(out, tile_starts(160, 32, 16), 32, 2) <= 1.5
