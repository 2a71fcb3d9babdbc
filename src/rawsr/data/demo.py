"""Embedded demo data: the colour photographs that scikit-image ships, unprocessed into linear camera RGB.

Nothing is downloaded. Each sRGB photograph is turned into linear camera RGB by the inverse camera pipeline
(:func:`rawsr.imaging.unprocess`, Brooks et al. 2019) with white-balance gains and a colour matrix sampled
per crop, so that the simulation sees the same kind of input as it does from a real camera. The train/validation
split is fixed by image: no validation photograph is ever seen in training.

An 8-bit photograph holds no sensor clipping: its white unprocesses to ``1 / wb`` in red and blue, below the
sensor's white. Real raw files clip bright lights at 1 in every channel, which the network must learn to render
white. Each crop is therefore brightened by an exposure gain drawn log-uniformly from ``exposure`` and clipped
to [0, 1], as a sensor records it. A white above the sensor's white in every channel needs a gain above the red
white-balance gain (1.9 to 2.4): the project default ``[1, 4]`` (up to two stops) clips some pixels of about a third
of the training crops in every channel; ``[1, 1]`` turns it off.

The validation set is ``val_samples`` fixed crops of the held-out photographs (two of them: scikit-image ships few
colour photographs offline), item ``i`` made from photograph ``i mod n`` with a crop position, one of the 8 flips
and transposes, a camera and an exposure all drawn from a generator seeded with ``i``: the same set in every epoch,
process and machine. With two photographs, the crops are not independent samples of all scenes: the standard
error of a validation mean measures the spread over these crops, not over photography at large.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from rawsr.config import ConfigError, require, require_choice, require_positive_int, require_range
from rawsr.data.keys import shared_key, source_key
from rawsr.degradation.cameras import sample_camera
from rawsr.imaging import unprocess
from rawsr.model import RawSRNet

#: Photographs used for training and validation (names of ``skimage.data`` functions).
TRAIN_IMAGES = (
    "astronaut",
    "rocket",
    "retina",
    "immunohistochemistry",
    "hubble_deep_field",
    "colorwheel",
    "stereo_motorcycle",
)
VAL_IMAGES = ("chelsea", "coffee")


def load_skimage(name: str, key: str = "images") -> np.ndarray:
    """Return ``skimage.data.<name>()`` as float32 sRGB ``(H, W, 3)`` in [0, 1] (left view for stereo pairs).

    Errors name the config key ``key`` that listed ``name``.
    """
    import skimage.data

    loader = getattr(skimage.data, name, None)
    require(callable(loader), key, "names of scikit-image sample images", name)
    image = loader()
    if isinstance(image, tuple):  # stereo pairs: keep the left view
        image = image[0]
    require(image.ndim == 3 and image.shape[2] >= 3, key, "colour images", name)
    return image[..., :3].astype(np.float32) / 255.0


def dihedral_view(image: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th of the 8 flips and transposes of ``image (..., H, W)``: rotation by ``k mod 4`` quarter turns,
    transposed when ``k >= 4``; ``(..., H, W)`` (square images) or ``(..., W, H)``."""
    rotated = torch.rot90(image, k % 4, dims=(-2, -1))
    return rotated.transpose(-2, -1) if k >= 4 else rotated


class DemoImages(Dataset):
    """Linear camera-RGB crops of the embedded photographs, ready for the imaging-process simulation.

    Args:
        split: ``"train"`` (random crops, ``samples_per_epoch`` of them) or ``"val"`` (fixed crops: ``val_samples``
            seeded ones, or the centre of each photograph).
        scale: super-resolution factor; HR crops have side ``scale * crop``.
        crop: LR crop side (the network's tile), even.
        images: photograph names; defaults to :data:`TRAIN_IMAGES` or :data:`VAL_IMAGES` by split.
        samples_per_epoch: length of the training set (crops are drawn at random each time).
        val_crops: side of the fixed validation crops in LR pixels (a multiple of
            :attr:`rawsr.model.RawSRNet.SIZE_MULTIPLE`, at least ``crop``); validation then exercises the
            overlapping-tile inference.
        val_samples: the number of fixed validation crops (module docstring); ``None``: one centre crop of each
            photograph.
        tone: whether the unprocessing inverts a tone curve as well (project default: no).
        exposure: ``[low, high]`` range of the exposure gain (log-uniform, drawn per crop, ``low >= 1``) applied
            to the linear camera RGB before clipping it to [0, 1] (module docstring).
        key: the config key this source is configured under; errors name ``<key>.<argument>`` (``None``: the data
            module's ``data.<split>``; ``rawsr.prepare`` passes ``valset``).

    Each item is ``{"hr_linear": (3, S, S), "wb": (3,), "ccm": (3, 3), "index": int}`` with ``S = scale * crop`` for
    training and ``S = scale * val_crops`` for validation. Validation items are identical at every call.
    """

    def __init__(
        self,
        split: str,
        scale: int,
        crop: int,
        images: Sequence[str] | None = None,
        samples_per_epoch: int = 512,
        val_crops: int = 128,
        val_samples: int | None = None,
        tone: bool = False,
        exposure: Sequence[float] = (1.0, 4.0),
        key: str | None = None,
    ) -> None:
        key = source_key(key, split)
        require_choice(split, f"{key}.split", ("train", "val"))
        require_positive_int(scale, shared_key(key, "scale"))
        require_positive_int(crop, shared_key(key, "crop"), even=True)
        require_positive_int(samples_per_epoch, f"{key}.samples_per_epoch")
        multiple = RawSRNet.SIZE_MULTIPLE
        require(
            isinstance(val_crops, int) and val_crops >= crop and val_crops % multiple == 0,
            f"{key}.val_crops",
            f"a multiple of {multiple} no smaller than the crop {crop}",
            val_crops,
        )
        if val_samples is not None:
            require_positive_int(val_samples, f"{key}.val_samples")
        self.split, self.scale, self.crop = split, scale, crop
        self.val_samples = val_samples
        self.samples_per_epoch, self.tone = samples_per_epoch, tone
        self.exposure = require_range(exposure, f"{key}.exposure", 1.0, None)
        names = tuple(images) if images is not None else (TRAIN_IMAGES if split == "train" else VAL_IMAGES)
        require(len(names) > 0, f"{key}.images", "at least one image name", names)
        side = scale * (crop if split == "train" else val_crops)
        self.side = side
        self.images = []
        for name in names:
            image = torch.from_numpy(load_skimage(name, f"{key}.images")).permute(2, 0, 1).contiguous()
            self._check_fits(name, tuple(image.shape[1:]), key, multiple)
            self.images.append(image)

    def _check_fits(self, name: str, shape: tuple[int, ...], key: str, multiple: int) -> None:
        """Refuse an image smaller than the HR crop, naming the key that sets the crop (``data.crop`` for training,
        ``val_crops`` for validation) and the largest value that fits."""
        if min(shape) >= self.side:
            return
        crop_key = shared_key(key, "crop") if self.split == "train" else f"{key}.val_crops"
        fit = min(shape) // self.scale // multiple * multiple
        raise ConfigError(
            f"config key '{crop_key}': {self.side // self.scale} LR pixels make crops of {self.side} px at scale "
            f"{self.scale}, larger than image {name} of size {shape}; set {crop_key} to at most {fit}"
        )

    def __len__(self) -> int:
        if self.split == "train":
            return self.samples_per_epoch
        return len(self.images) if self.val_samples is None else self.val_samples

    def _crop(self, index: int, generator: torch.Generator) -> torch.Tensor:
        """Return an sRGB crop ``(3, side, side)``: random for training, fixed for validation (seeded by the index,
        or the centre of each photograph when ``val_samples`` is ``None``)."""
        if self.split == "val" and self.val_samples is None:
            image = self.images[index]
            top = (image.shape[1] - self.side) // 2
            left = (image.shape[2] - self.side) // 2
            return image[:, top : top + self.side, left : left + self.side]
        if self.split == "train":
            image = self.images[int(torch.randint(len(self.images), (1,), generator=generator))]
        else:
            image = self.images[index % len(self.images)]
        top = int(torch.randint(image.shape[1] - self.side + 1, (1,), generator=generator))
        left = int(torch.randint(image.shape[2] - self.side + 1, (1,), generator=generator))
        crop = image[:, top : top + self.side, left : left + self.side]
        if self.split == "val":  # one of the 8 flips and transposes
            crop = dihedral_view(crop, int(torch.randint(8, (1,), generator=generator)))
        return crop

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        generator = torch.Generator()
        if self.split == "train":
            generator.manual_seed(int(torch.randint(2**62, (1,))))  # follows the worker's seeded global RNG
        else:
            generator.manual_seed(index)  # fixed camera for each validation image
        srgb = self._crop(index, generator)
        wb, ccm = sample_camera(generator, 1, srgb.device, srgb.dtype)
        linear = unprocess(srgb[None], wb, ccm, tone=self.tone)[0]
        low, high = torch.tensor(self.exposure, dtype=torch.float64).log()
        gain = (low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64)).exp()
        linear = (linear * gain.to(linear.dtype)).clamp(0.0, 1.0)  # the sensor clips at its white level
        return {"hr_linear": linear.contiguous(), "wb": wb[0], "ccm": ccm[0], "index": index}
