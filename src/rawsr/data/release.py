"""The released rawSR dataset: already-degraded pairs read from the authors' on-disk layout.

::

    <root>/TrainingSet/<stem>NNNN.npy   LR Bayer mosaic, 2-D float (h, w), RGGB, NNNN = sample number
    <root>/GT/<stem>.npy                HR sRGB ground truth, float (s*h, s*w, 3) in [0, 1]
    <root>/ISP/<stem>NNNN.jpeg          LR colour reference, 8-bit JPEG (h, w, 3), read as /255
                                        (or .png: a reference written losslessly, see write_release_sample)
    <root>/RAWImage/<stem>.npy          HR linear ground truth (s*h, s*w, 3), optional

``root`` is one split folder of the release (e.g. ``Blind_x4/TRAINING``), or the folder above the splits, in which
case the split's subfolder is found by its usual names (:data:`SPLIT_FOLDERS`). Every LR sample shares the GT of its
stem (ten per GT in the release; any number works). :func:`write_release_sample` writes the same layout, which
``python -m rawsr.prepare task=valset`` uses for a fixed validation set.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from rawsr.config import ConfigError, require, require_choice, require_positive_int
from rawsr.data.keys import shared_key, source_key
from rawsr.model import RawSRNet
from rawsr.writers import atomic_write

LR_DIR, GT_DIR, ISP_DIR, LINEAR_DIR = "TrainingSet", "GT", "ISP", "RAWImage"
#: Suffixes of a colour reference: the release's JPEG, or a lossless PNG (a reference compressed once already).
REFERENCE_SUFFIXES = (".jpeg", ".png")
_SAMPLE = re.compile(r"(.+)(\d{4})")
#: Names of the split folders in the authors' layout (``Dataset/Training``) and in PRNet's (``Blind_x2/TRAINING``).
SPLIT_FOLDERS = {
    "train": ("TRAINING", "Training", "training", "train"),
    "val": ("TESTING", "Testing", "testing", "test", "val"),
}


def split_root(root: Path, split: str, key: str = "root") -> Path:
    """The folder holding ``TrainingSet/`` for ``split``: ``root`` itself, or its split subfolder; errors name the
    config key ``key``."""
    if (root / LR_DIR).is_dir():
        return root
    for name in SPLIT_FOLDERS[split]:
        if (root / name / LR_DIR).is_dir():
            return root / name
    if not root.is_dir():
        raise ConfigError(f"config key '{key}': {root} does not exist")
    raise ConfigError(
        f"config key '{key}': {root} holds no {LR_DIR}/ folder, neither directly nor in a split folder "
        f"({', '.join(SPLIT_FOLDERS[split])}); expected the rawSR release layout ({LR_DIR}/, {GT_DIR}/, {ISP_DIR}/)"
    )


def npy_shape(path: Path) -> tuple[int, ...]:
    """The array shape stored in a ``.npy`` header, without reading the data."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return tuple(read(f)[0])


def split_sample_name(name: str) -> tuple[str, int]:
    """``"a0004-jmac_MG_13840007"`` -> ``("a0004-jmac_MG_1384", 7)``: the GT stem and the 4-digit sample number."""
    match = _SAMPLE.fullmatch(name)
    if match is None:
        raise ValueError(f"{name}: an LR file name must end in a 4-digit sample number (<stem>NNNN.npy)")
    return match.group(1), int(match.group(2))


def _sizes_match(lr: tuple[int, ...], gt: tuple[int, ...], scale: int) -> bool:
    """Whether ``gt`` (H, W, ...) is ``scale`` times ``lr`` (h, w), allowing for the floor of an odd HR size."""
    return len(lr) == 2 and len(gt) == 3 and gt[2] == 3 and all(g // scale == l for g, l in zip(gt, lr, strict=False))


class ReleaseDataset(Dataset):
    """Pairs of the released rawSR dataset (or of a set written by :func:`write_release_sample`).

    Args:
        root: the split folder holding ``TrainingSet/``, ``GT/``, ``ISP/`` and optionally ``RAWImage/``, or the
            folder above the split folders (see :func:`split_root`).
        scale: super-resolution factor; each GT must be ``scale`` times its LR mosaic (checked for every file).
        crop: LR crop side for training (even).
        split: ``"train"``: random ``crop`` x ``crop`` LR crops at even coordinates (keeping the RGGB phase),
            the GT (and HR linear) crop at ``scale`` times those coordinates (the released loader hard-codes 2);
            ``"val"``: whole images, LR trimmed to a multiple of :attr:`rawsr.model.RawSRNet.SIZE_MULTIPLE`, GT to
            ``scale`` times that.
        key: the config key this source is configured under; errors name ``<key>.root`` (``None``: the data
            module's ``data.<split>``), and ``scale``/``crop`` as :func:`rawsr.data.keys.shared_key` does.

    Items: ``{"lr_raw": (1, h, w), "lr_ref": (3, h, w), "hr_srgb": (3, s*h, s*w), "index": int}``, all float32,
    plus ``"hr_linear": (3, s*h, s*w)`` when every GT has a ``RAWImage`` partner (so that batches collate).
    """

    def __init__(
        self, root: str | os.PathLike, scale: int, crop: int, split: str = "train", key: str | None = None
    ) -> None:
        key = source_key(key, split)
        self.key = key
        require_choice(split, f"{key}.split", ("train", "val"))
        require_positive_int(scale, shared_key(key, "scale"))
        require_positive_int(crop, shared_key(key, "crop"), even=True)
        self.root, self.scale, self.crop, self.split = split_root(Path(root), split, f"{key}.root"), scale, crop, split
        self.lr_files = sorted((self.root / LR_DIR).glob("*.npy"))
        if not self.lr_files:
            raise ConfigError(f"config key '{key}.root': no LR mosaics {self.root / LR_DIR}/*.npy")
        isp = self.root / ISP_DIR
        references = {p.stem: p for p in (isp.iterdir() if isp.is_dir() else ()) if p.suffix in REFERENCE_SUFFIXES}
        self.references: list[Path] = []
        gt_shapes: dict[str, tuple[int, ...]] = {}
        self.stems = []
        for lr in self.lr_files:
            stem, _ = split_sample_name(lr.stem)
            gt = self.root / GT_DIR / f"{stem}.npy"
            if stem not in gt_shapes:
                if not gt.is_file():
                    raise FileNotFoundError(f"{lr}: its ground truth {gt} is missing")
                gt_shapes[stem] = npy_shape(gt)
            if lr.stem not in references:
                raise FileNotFoundError(
                    f"{lr}: its colour reference {self.root / ISP_DIR / (lr.stem + '.jpeg')} is missing"
                )
            self.references.append(references[lr.stem])
            if not _sizes_match(npy_shape(lr), gt_shapes[stem], scale):
                raise ValueError(
                    f"{gt}: GT shape {gt_shapes[stem]} is not {shared_key(key, 'scale')}={scale} times the LR mosaic "
                    f"{lr} of shape {npy_shape(lr)} (expected (scale*h, scale*w, 3))"
                )
            self.stems.append(stem)
        self.has_linear = all((self.root / LINEAR_DIR / f"{s}.npy").is_file() for s in gt_shapes)

    def __len__(self) -> int:
        return len(self.lr_files)

    def _window(self, lr_shape: tuple[int, ...], lr_path: Path) -> tuple[int, int, int, int]:
        """LR ``(top, left, height, width)``: even random crop for training; for validation the image trimmed to a
        multiple of :attr:`rawsr.model.RawSRNet.SIZE_MULTIPLE`."""
        h, w = lr_shape
        if self.split == "val":
            m = RawSRNet.SIZE_MULTIPLE
            require(
                h >= m and w >= m, f"{self.key}.root", f"LR mosaics of at least {m}x{m}", f"{lr_path} of {lr_shape}"
            )
            return 0, 0, h // m * m, w // m * m
        c = self.crop
        require(h >= c and w >= c, shared_key(self.key, "crop"), f"at most the LR size {lr_shape} of {lr_path}", c)
        top = 2 * int(torch.randint((h - c) // 2 + 1, (1,)))  # even: keeps the RGGB phase
        left = 2 * int(torch.randint((w - c) // 2 + 1, (1,)))
        return top, left, c, c

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        from PIL import Image

        lr_path, stem, s = self.lr_files[index], self.stems[index], self.scale
        lr = np.load(lr_path, mmap_mode="r")
        top, left, h, w = self._window(lr.shape, lr_path)
        isp_path = self.references[index]
        with Image.open(isp_path) as im:
            ref = np.asarray(im.convert("RGB"))
        if ref.shape[:2] != lr.shape:
            raise ValueError(
                f"{isp_path}: colour reference of size {ref.shape[:2]} does not match {lr_path} {lr.shape}"
            )

        def hr(folder: str) -> torch.Tensor:
            image = np.load(self.root / folder / f"{stem}.npy", mmap_mode="r")
            return _chw(image[s * top : s * (top + h), s * left : s * (left + w)])

        item = {
            "lr_raw": torch.from_numpy(np.array(lr[top : top + h, left : left + w], dtype=np.float32))[None],
            "lr_ref": _chw(ref[top : top + h, left : left + w]) / 255.0,
            "hr_srgb": hr(GT_DIR),
            "index": index,
        }
        if self.has_linear:
            item["hr_linear"] = hr(LINEAR_DIR)
        return item


def _chw(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` array -> ``(3, H, W)`` float32 tensor."""
    return torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1).contiguous()


def _hwc(x, channels: int, name: str) -> np.ndarray:
    """A ``(C, H, W)`` tensor/array (or ``(H, W)`` for one channel) -> float32 ``(H, W, C)`` / ``(H, W)``."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if channels == 1 and a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    ok = a.ndim == 2 if channels == 1 else (a.ndim == 3 and a.shape[0] == channels)
    if not ok:
        expected = "(1, h, w) or (h, w)" if channels == 1 else f"({channels}, H, W)"
        raise ValueError(f"write_release_sample: {name} must have shape {expected}, got {a.shape}")
    return (a if channels == 1 else a.transpose(1, 2, 0)).astype(np.float32)


def write_release_sample(
    root: str | os.PathLike,
    stem: str,
    sample: int,
    lr_raw,
    lr_ref,
    hr_srgb,
    hr_linear=None,
    jpeg_quality: int | None = 95,
) -> Path:
    """Write one degraded sample in the release layout (each file atomically: temporary name, then rename).

    Args:
        root: the split folder (``TrainingSet/``, ``GT/``, ``ISP/``, ``RAWImage/`` are created in it).
        stem: the GT name; the LR name is ``stem`` plus the 4-digit ``sample``.
        sample: sample number in 0..9999.
        lr_raw: ``(1, h, w)`` or ``(h, w)`` RGGB mosaic.
        lr_ref: ``(3, h, w)`` colour reference in [0, 1], stored with 8 bits: as a JPEG of quality ``jpeg_quality``
            (the release's format; JPEG is lossy, so a reader gets it back within the JPEG error only), or, with
            ``jpeg_quality=None``, as a lossless PNG ``ISP/<name>.png`` (for a reference that is JPEG-compressed
            already: a reference of 8-bit values is read back bit-exact).
        hr_srgb: ``(3, s*h, s*w)`` sRGB ground truth in [0, 1] (clipped to it).
        hr_linear: ``(3, s*h, s*w)`` HR linear ground truth, or ``None``.
        jpeg_quality: 1..100, or ``None`` for a lossless PNG; the release's JPEG quality is not published, 95 is
            this project's default.

    Returns:
        the LR file written.
    """
    from PIL import Image

    if not (isinstance(sample, int) and 0 <= sample <= 9999):
        raise ValueError(f"write_release_sample: sample must be an integer in 0..9999, got {sample!r}")
    if not (jpeg_quality is None or (isinstance(jpeg_quality, int) and 1 <= jpeg_quality <= 100)):
        raise ValueError(
            f"write_release_sample: jpeg_quality must be an integer in 1..100 or None, got {jpeg_quality!r}"
        )
    lr, ref, gt = _hwc(lr_raw, 1, "lr_raw"), _hwc(lr_ref, 3, "lr_ref"), _hwc(hr_srgb, 3, "hr_srgb")
    if ref.shape[:2] != lr.shape:
        raise ValueError(f"write_release_sample: lr_ref size {ref.shape[:2]} differs from lr_raw {lr.shape}")
    root = Path(root)
    for folder in (LR_DIR, GT_DIR, ISP_DIR) + ((LINEAR_DIR,) if hr_linear is not None else ()):
        (root / folder).mkdir(parents=True, exist_ok=True)
    name = f"{stem}{sample:04d}"
    encoded = io.BytesIO()
    reference = Image.fromarray(np.round(np.clip(ref, 0.0, 1.0) * 255.0).astype(np.uint8))
    if jpeg_quality is None:
        reference.save(encoded, format="PNG")
    else:
        reference.save(encoded, format="JPEG", quality=jpeg_quality)
    suffix = ".png" if jpeg_quality is None else ".jpeg"
    for other in REFERENCE_SUFFIXES:
        if other != suffix:
            (root / ISP_DIR / f"{name}{other}").unlink(missing_ok=True)  # one reference per sample
    atomic_write(root / ISP_DIR / f"{name}{suffix}", lambda f: f.write(encoded.getvalue()))
    atomic_write(root / GT_DIR / f"{stem}.npy", lambda f: np.save(f, np.clip(gt, 0.0, 1.0)))
    if hr_linear is not None:
        atomic_write(root / LINEAR_DIR / f"{stem}.npy", lambda f: np.save(f, _hwc(hr_linear, 3, "hr_linear")))
    lr_path = root / LR_DIR / f"{name}.npy"
    atomic_write(lr_path, lambda f: np.save(f, lr))  # last: an LR file implies its partners exist
    return lr_path
