"""The self-ensemble: the eight flips and transposes keep the mosaic RGGB and are undone exactly; tiled, streamed and
through :func:`rawsr.inference.super_resolve`, the ensemble is the mean over the transformed whole images, leaves an
equivariant model unchanged and changes one that is not."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rawsr.imaging import mosaic_rggb
from rawsr.inference import super_resolve
from rawsr.inference.geometry import (
    DIHEDRAL,
    IDENTITY,
    dihedral_inverse,
    dihedral_transform,
    orient,
    reflect_extend,
    reversed_axes,
)
from rawsr.inference.tiling import tiled_forward, tiled_rows

SITES = ((0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 2))
"""``(row, column, colour)`` of the four sites of an RGGB cell."""


def images(h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, h, w, generator=g), torch.rand(1, 3, h, w, generator=g)


def upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Pixel repetition: one LR pixel becomes ``scale x scale`` output pixels."""
    return x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)


def colour_planes(raw: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` RGGB mosaic -> ``(N, 3, H, W)``: each sample in its colour's plane, zeros elsewhere. It is
    pointwise, so exact under tiling, and puts a sample in the wrong plane when a tile is not RGGB."""
    planes = raw.new_zeros(raw.shape[0], 3, *raw.shape[-2:])
    for dy, dx, colour in SITES:
        planes[:, colour, dy::2, dx::2] = raw[:, 0, dy::2, dx::2]
    return planes


def bilinear_demosaic(raw: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` RGGB -> ``(N, 3, H, W)``: each colour the mean of its samples among the 3x3 neighbours
    (the mirror image past the border), which commutes with flips and transposes of RGGB mosaics."""
    planes = F.pad(colour_planes(raw), (1, 1, 1, 1), mode="reflect")
    counts = F.pad(colour_planes(torch.ones_like(raw)), (1, 1, 1, 1), mode="reflect")
    box = torch.ones(3, 1, 3, 3, dtype=raw.dtype)
    return F.conv2d(planes, box, groups=3) / F.conv2d(counts, box, groups=3)


def equivariant(scale: int, demosaic=colour_planes):
    """A model that commutes with the flips and transposes: a demosaic that does, half the reference, repeated."""
    return lambda raw, ref: upsample(0.5 * demosaic(raw) + 0.5 * ref, scale)


def oriented(scale: int):
    """A model that does not commute with them: its output rises from left to right in every tile, and depends on
    the whole tile (like the network's channel attention); always in (0, 1), so clipping does not enter."""

    def fn(raw, ref):
        ramp = torch.linspace(-1, 1, raw.shape[-1])
        x = 0.5 * ref + raw.mean(dim=(1, 2, 3), keepdim=True) + 0.8 * ramp
        return torch.sigmoid(upsample(x - 0.6, scale))

    return fn


def ensemble_of_whole_images(fn, raw, ref, tile, scale, **kwargs) -> torch.Tensor:
    """The self-ensemble by its definition: the mean over the transforms of the tiled output of each transformed
    whole image, transformed back."""
    outs = [
        dihedral_inverse(
            tiled_forward(fn, dihedral_transform(raw, g), dihedral_transform(ref, g), tile, scale, **kwargs), g, scale
        )
        for g in DIHEDRAL
    ]
    return torch.stack(outs).mean(0)


# ------------------------------------------------------------------------------------------------ the transforms


def test_the_eight_transforms_are_the_dihedral_group():
    x = np.arange(12).reshape(3, 4)
    expected = {np.rot90(y, k).tobytes() + bytes(np.rot90(y, k).shape) for y in (x, x.T) for k in range(4)}
    got = {
        orient(torch.from_numpy(x), g).numpy().tobytes() + bytes(orient(torch.from_numpy(x), g).shape) for g in DIHEDRAL
    }
    assert got == expected and len(got) == 8
    assert DIHEDRAL[0] == IDENTITY and not any(IDENTITY) and len(set(DIHEDRAL)) == 8


@pytest.mark.parametrize(("n", "pad"), [(2, 1), (4, 2), (6, 13), (9, 4)])
def test_reflect_extend_is_numpys_mirror_image(n, pad):
    """Also where the pad is longer than the image (NumPy then mirrors again)."""
    x = torch.arange(3 * n * (n + 1), dtype=torch.float32).reshape(1, 3, n, n + 1)
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad + 1, pad)), mode="reflect")
    got = reflect_extend(x, -pad, -pad - 1, n + 2 * pad, n + 1 + 2 * pad + 1)
    np.testing.assert_array_equal(got.numpy(), expected)
    assert reflect_extend(x, 0, 0, n, n + 1) is x


@pytest.mark.parametrize("g", DIHEDRAL)
def test_transforms_are_exact_inverses_on_mosaic_reference_and_output(g):
    raw, ref = images(6, 10)
    rows, cols = reversed_axes(g)
    t_raw = dihedral_transform(raw, g)
    size = (6 + 2 * rows, 10 + 2 * cols)
    assert tuple(t_raw.shape[-2:]) == (size[::-1] if g.transpose else size)
    assert torch.equal(dihedral_inverse(t_raw, g), raw)
    assert torch.equal(dihedral_inverse(dihedral_transform(ref, g), g), ref)
    for scale in (2, 3, 4):  # one LR pixel is `scale` output pixels, wherever the transform moved it
        assert torch.equal(
            dihedral_inverse(upsample(dihedral_transform(ref, g), scale), g, scale), upsample(ref, scale)
        )


def test_the_transformed_images_differ():
    raw, _ = images(6, 6)
    outs = {dihedral_transform(raw, g).numpy().tobytes() for g in DIHEDRAL}
    assert len(outs) == 8


@pytest.mark.parametrize("g", DIHEDRAL)
def test_every_transformed_mosaic_is_the_rggb_mosaic_of_the_transformed_image(g):
    _, rgb = images(8, 12, seed=3)
    assert torch.equal(dihedral_transform(mosaic_rggb(rgb), g), mosaic_rggb(dihedral_transform(rgb, g)))
    if any(reversed_axes(g)):  # a plain flip would not do: its mosaic starts with a G or B sample
        assert not torch.equal(orient(mosaic_rggb(rgb), g), mosaic_rggb(orient(rgb, g)))


# ------------------------------------------------------------------------------------------------ tiled ensemble


@pytest.mark.parametrize(
    ("h", "w", "tile", "scale", "overlap", "blend"),
    [
        (70, 52, 16, 2, None, "linear"),
        (70, 52, 16, 2, None, "mean"),
        (38, 66, 16, 3, 6, "linear"),
        (34, 20, 16, 4, 0, "mean"),
        (16, 18, 16, 2, None, "linear"),
    ],
)
def test_tiled_ensemble_is_the_mean_over_the_transformed_whole_images(h, w, tile, scale, overlap, blend):
    raw, ref = images(h, w, seed=h + w)
    fn = oriented(scale)
    kwargs = {"overlap": overlap, "blend": blend}
    expected = ensemble_of_whole_images(fn, raw, ref, tile, scale, **kwargs)
    got = tiled_forward(fn, raw, ref, tile, scale, tta=True, batch=3, **kwargs)
    assert got.shape == (1, 3, scale * h, scale * w)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    streamed = list(tiled_rows(fn, raw, ref, tile, scale, tta=True, batch=3, **kwargs))
    assert max(b.shape[-2] for b in streamed) <= scale * tile
    torch.testing.assert_close(torch.cat(streamed, dim=2), got, atol=0, rtol=0)


def test_ensemble_with_a_mirrored_border_is_the_ensemble_of_the_mirrored_image():
    raw, ref = images(40, 34, seed=7)
    fn, pad = oriented(2), 6
    mirrored = [
        torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect"))
        for x in (raw, ref)
    ]
    expected = tiled_forward(fn, *mirrored, 16, 2, tta=True)[..., 2 * pad : -2 * pad, 2 * pad : -2 * pad]
    torch.testing.assert_close(tiled_forward(fn, raw, ref, 16, 2, pad=pad, tta=True), expected, atol=0, rtol=0)
    streamed = torch.cat(list(tiled_rows(fn, raw, ref, 16, 2, pad=pad, tta=True)), dim=2)
    torch.testing.assert_close(streamed, expected, atol=0, rtol=0)


@pytest.mark.parametrize(("scale", "blend", "overlap"), [(2, "linear", None), (3, "mean", None), (4, "linear", 4)])
def test_an_equivariant_model_gives_the_same_output_with_and_without_tta(scale, blend, overlap):
    raw, ref = images(54, 70, seed=scale)
    fn = equivariant(scale)
    plain = tiled_forward(fn, raw, ref, 16, scale, overlap=overlap, blend=blend)
    torch.testing.assert_close(plain, upsample(0.5 * colour_planes(raw) + 0.5 * ref, scale))  # tiling is exact
    ensemble = tiled_forward(fn, raw, ref, 16, scale, overlap=overlap, blend=blend, tta=True)
    torch.testing.assert_close(ensemble, plain, atol=1e-6, rtol=0)
    streamed = torch.cat(list(tiled_rows(fn, raw, ref, 16, scale, overlap=overlap, blend=blend, tta=True)), dim=2)
    torch.testing.assert_close(streamed, plain, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("h", "w"), [(22, 26), (30, 14)])
def test_an_equivariant_demosaic_gives_the_same_output_with_and_without_tta(h, w):
    """Bilinear demosaicing reads the neighbours: one tile holds the whole image (and its mirrored margin)."""
    raw, ref = images(h, w, seed=h)
    fn = equivariant(2, bilinear_demosaic)
    plain = tiled_forward(fn, raw, ref, 32, 2)
    torch.testing.assert_close(plain, fn(raw, ref))
    torch.testing.assert_close(tiled_forward(fn, raw, ref, 32, 2, tta=True), plain, atol=1e-6, rtol=0)


def test_a_model_that_is_not_equivariant_changes_with_tta():
    raw, ref = images(54, 70, seed=1)
    fn = oriented(2)
    plain = tiled_forward(fn, raw, ref, 16, 2)
    ensemble = tiled_forward(fn, raw, ref, 16, 2, tta=True)
    assert (ensemble - plain).abs().mean() > 0.01

    # the tiles' left-to-right ramps average out over the flips: the ensemble's column means vary less
    def spread(image):
        columns = image.mean(dim=(0, 1, 2))[8:-8]
        return float(columns.max() - columns.min())

    assert spread(ensemble) < 0.5 * spread(plain)


def test_a_demosaic_with_the_wrong_phase_would_be_seen():
    """The equivariance tests can fail: a model that assumes GRBG is not left unchanged by the ensemble."""
    raw, ref = images(54, 70, seed=2)

    def grbg(raw, ref):
        return equivariant(2)(raw[..., :, list(range(1, raw.shape[-1])) + [raw.shape[-1] - 2]], ref)

    plain = tiled_forward(grbg, raw, ref, 16, 2)
    assert (tiled_forward(grbg, raw, ref, 16, 2, tta=True) - plain).abs().max() > 0.1


# ------------------------------------------------------------------------------------------------ super_resolve


class Equivariant(torch.nn.Module):
    """:func:`equivariant` with the network's interface."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, raw, ref, wb=None, ccm=None):
        return {"srgb": self.weight * equivariant(self.scale)(raw, ref)}


def test_super_resolve_takes_tta_and_pad():
    raw, ref = (torch.cat(x) for x in zip(images(40, 36, 0), images(40, 36, 1), strict=True))
    net = Equivariant(2)
    plain = super_resolve(net, raw, ref, 16, 2)
    assert plain.shape == (2, 3, 80, 72)
    for tta, pad in itertools.product((False, True), (0, 4)):
        torch.testing.assert_close(super_resolve(net, raw, ref, 16, 2, tta=tta, pad=pad), plain, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="pad must be an even integer"):
        super_resolve(net, raw, ref, 16, 2, pad=3)
    with pytest.raises(ValueError, match="tta must be True or False"):
        super_resolve(net, raw, ref, 16, 2, tta=1)
