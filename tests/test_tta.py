"""The self-ensemble's geometry: the mirror extension, and the eight flips and transposes, which keep the mosaic RGGB
and are undone exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rawsr.imaging import mosaic_rggb
from rawsr.inference.geometry import (
    DIHEDRAL,
    IDENTITY,
    dihedral_inverse,
    dihedral_transform,
    orient,
    reflect_extend,
    reversed_axes,
)


def images(h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, h, w, generator=g), torch.rand(1, 3, h, w, generator=g)


def upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Pixel repetition: one LR pixel becomes ``scale x scale`` output pixels."""
    return x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)


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
