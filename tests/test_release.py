"""rawsr.data.release: the released dataset's layout, read for training and validation, and written back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rawsr.config import ConfigError
from rawsr.data.release import ReleaseDataset, split_sample_name, write_release_sample

H, W = 22, 30  # LR size; validation trims it to 20 x 28
STEMS = ("a0004-jmac_MG_1384", "a0100-kme_264", "a0300-IMG_4320")


def coded_gt(scale: int, k: int) -> np.ndarray:
    """GT whose every pixel says where it is: (row, column, stem number) / size."""
    yy, xx = np.mgrid[0 : scale * H, 0 : scale * W]
    return np.stack([yy / (scale * H), xx / (scale * W), np.full(yy.shape, k / 3)], axis=-1).astype(np.float32)


def coded_lr(sample: int) -> np.ndarray:
    """LR mosaic whose every pixel says where it is (and which sample it belongs to)."""
    return ((np.arange(H * W).reshape(H, W) + 0.5) / (H * W) + sample).astype(np.float32)


def make_release(root: Path, scale: int, linear: bool, samples: int = 2) -> Path:
    rng = np.random.default_rng(scale)
    for folder in ("TrainingSet", "GT", "ISP") + (("RAWImage",) if linear else ()):
        (root / folder).mkdir(parents=True)
    for k, stem in enumerate(STEMS):
        np.save(root / "GT" / f"{stem}.npy", coded_gt(scale, k))
        if linear:
            np.save(root / "RAWImage" / f"{stem}.npy", coded_gt(scale, k)[..., ::-1] ** 2.2)
        for s in range(samples):
            np.save(root / "TrainingSet" / f"{stem}{s:04d}.npy", coded_lr(s))
            ref = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
            Image.fromarray(ref).save(root / "ISP" / f"{stem}{s:04d}.jpeg", quality=95)
    return root


@pytest.fixture(params=[(2, True), (4, False)], ids=["x2-with-RAWImage", "x4"])
def release(request, tmp_path) -> tuple[Path, int, bool]:
    scale, linear = request.param
    return make_release(tmp_path / f"x{scale}", scale, linear), scale, linear


def jpeg(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(np.float32) / 255


def test_training_crops_are_even_and_aligned_with_the_ground_truth(release):
    root, scale, linear = release
    crop = 8
    ds = ReleaseDataset(root, scale=scale, crop=crop, split="train")
    assert len(ds) == len(STEMS) * 2 and ds.has_linear == linear
    torch.manual_seed(0)
    tops, lefts = set(), set()
    for _ in range(6):
        for index in range(len(ds)):
            item = ds[index]
            lr_path = ds.lr_files[index]
            stem, sample = split_sample_name(lr_path.stem)
            k = STEMS.index(stem)
            assert item["lr_raw"].shape == (1, crop, crop) and item["lr_ref"].shape == (3, crop, crop)
            assert item["hr_srgb"].shape == (3, scale * crop, scale * crop) and item["index"] == index
            assert ("hr_linear" in item) == linear
            code = int(round((float(item["lr_raw"][0, 0, 0]) - sample) * H * W - 0.5))
            top, left = divmod(code, W)
            assert top % 2 == 0 and left % 2 == 0
            tops.add(top)
            lefts.add(left)
            window = (slice(top, top + crop), slice(left, left + crop))
            np.testing.assert_array_equal(item["lr_raw"][0].numpy(), coded_lr(sample)[window])
            hr = (slice(scale * top, scale * (top + crop)), slice(scale * left, scale * (left + crop)))
            np.testing.assert_array_equal(item["hr_srgb"].permute(1, 2, 0).numpy(), coded_gt(scale, k)[hr])
            ref = jpeg(root / "ISP" / f"{lr_path.stem}.jpeg")[window]
            np.testing.assert_allclose(item["lr_ref"].permute(1, 2, 0).numpy(), ref, atol=1e-6)
            if linear:
                expected = coded_gt(scale, k)[..., ::-1] ** 2.2
                np.testing.assert_allclose(item["hr_linear"].permute(1, 2, 0).numpy(), expected[hr], rtol=1e-6)
    assert tops <= set(range(0, H - crop + 1, 2)) and max(tops) == H - crop and min(tops) == 0
    assert max(lefts) == W - crop


def test_validation_is_the_whole_image_trimmed_to_a_multiple_of_four(release):
    root, scale, _ = release
    ds = ReleaseDataset(root, scale=scale, crop=8, split="val")
    for index in range(len(ds)):
        item = ds[index]
        stem, sample = split_sample_name(ds.lr_files[index].stem)
        assert item["lr_raw"].shape == (1, 20, 28) and item["lr_ref"].shape == (3, 20, 28)
        np.testing.assert_array_equal(item["lr_raw"][0].numpy(), coded_lr(sample)[:20, :28])
        gt = coded_gt(scale, STEMS.index(stem))[: scale * 20, : scale * 28]
        np.testing.assert_array_equal(item["hr_srgb"].permute(1, 2, 0).numpy(), gt)


def test_batches_collate(release):
    root, scale, linear = release
    loader = torch.utils.data.DataLoader(ReleaseDataset(root, scale, 8, "train"), batch_size=4, shuffle=True)
    batch = next(iter(loader))
    assert batch["lr_raw"].shape == (4, 1, 8, 8) and batch["hr_srgb"].shape == (4, 3, 8 * scale, 8 * scale)
    assert batch["lr_raw"].dtype == batch["lr_ref"].dtype == batch["hr_srgb"].dtype == torch.float32


def test_write_then_read_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    lr_raw = torch.rand(1, 12, 16, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 12), torch.linspace(0, 1, 16), indexing="ij")
    lr_ref = torch.stack([yy, xx, (yy + xx) / 2])  # smooth: JPEG keeps it well
    hr_srgb, hr_linear = torch.rand(3, 48, 64, generator=g), torch.rand(3, 48, 64, generator=g)
    for sample in range(3):
        path = write_release_sample(tmp_path, "img_", sample, lr_raw + sample, lr_ref, hr_srgb, hr_linear)
        assert path == tmp_path / "TrainingSet" / f"img_{sample:04d}.npy"
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]
    ds = ReleaseDataset(tmp_path, scale=4, crop=4, split="val")
    assert len(ds) == 3 and ds.has_linear
    item = ds[2]
    torch.testing.assert_close(item["lr_raw"], lr_raw + 2)
    torch.testing.assert_close(item["hr_srgb"], hr_srgb)
    torch.testing.assert_close(item["hr_linear"], hr_linear)
    error95 = float((item["lr_ref"] - lr_ref).abs().mean())
    assert error95 < 0.01  # an 8-bit JPEG of quality 95
    write_release_sample(tmp_path / "q30", "img_", 0, lr_raw, lr_ref, hr_srgb, jpeg_quality=30)
    item30 = ReleaseDataset(tmp_path / "q30", scale=4, crop=4, split="val")[0]
    assert not ReleaseDataset(tmp_path / "q30", 4, 4, "val").has_linear and "hr_linear" not in item30
    assert float((item30["lr_ref"] - lr_ref).abs().mean()) > 1.5 * error95


def test_write_refuses_bad_input(tmp_path):
    x = torch.rand(1, 8, 8)
    with pytest.raises(ValueError, match="lr_ref must have shape"):
        write_release_sample(tmp_path, "s", 0, x, torch.rand(8, 8), torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="sample"):
        write_release_sample(tmp_path, "s", 10000, x, torch.rand(3, 8, 8), torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="differs"):
        write_release_sample(tmp_path, "s", 0, x, torch.rand(3, 8, 6), torch.rand(3, 16, 16))


def test_the_split_folder_is_found_below_the_release_folder(tmp_path):
    make_release(tmp_path / "Blind_x2" / "TRAINING", 2, False)
    make_release(tmp_path / "Blind_x2" / "TESTING", 2, False, samples=1)
    assert len(ReleaseDataset(tmp_path / "Blind_x2", 2, 8, "train")) == 6
    assert len(ReleaseDataset(tmp_path / "Blind_x2", 2, 8, "val")) == 3
    with pytest.raises(ConfigError, match=r"data\.val\.root.*no TrainingSet/.*TESTING"):
        ReleaseDataset(tmp_path / "Blind_x2" / "TRAINING" / "GT", 2, 8, "val")


def test_data_config_reads_the_release(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from rawsr.config import config_dir

    make_release(tmp_path / "Training", 2, True)
    make_release(tmp_path / "Testing", 2, True, samples=1)
    with initialize_config_dir(config_dir=str(config_dir() / "data"), version_base="1.3"):
        cfg = compose("rawsr_release", overrides=[f"root={tmp_path}", "crop=8"])
    train = instantiate(cfg.train)(scale=cfg.scale, crop=cfg.crop)
    val = instantiate(cfg.val)(scale=cfg.scale, crop=cfg.crop)
    assert (len(train), len(val)) == (6, 3) and train[0]["lr_raw"].shape == (1, 8, 8)


def test_missing_root_and_partner_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.train\.root.*nowhere.*does not exist"):
        ReleaseDataset(tmp_path / "nowhere", 2, 8, "train")
    root = make_release(tmp_path / "r", 2, False)
    gt = root / "GT" / f"{STEMS[1]}.npy"
    gt.rename(gt.with_suffix(".bak"))
    with pytest.raises(FileNotFoundError, match=f"{STEMS[1]}0000.npy: its ground truth .*GT/{STEMS[1]}.npy"):
        ReleaseDataset(root, 2, 8, "train")
    gt.with_suffix(".bak").rename(gt)
    (root / "ISP" / f"{STEMS[2]}0001.jpeg").unlink()
    with pytest.raises(FileNotFoundError, match=f"colour reference .*ISP/{STEMS[2]}0001.jpeg is missing"):
        ReleaseDataset(root, 2, 8, "train")


def test_wrong_scale_and_bad_names_are_named(tmp_path):
    root = make_release(tmp_path / "x4", 4, False)
    with pytest.raises(ValueError, match=r"GT/a0004-jmac_MG_1384\.npy: GT shape \(88, 120, 3\) is not data\.scale=2"):
        ReleaseDataset(root, 2, 8, "train")
    np.save(root / "TrainingSet" / "no_number.npy", coded_lr(0))
    with pytest.raises(ValueError, match="no_number: an LR file name must end in a 4-digit sample number"):
        ReleaseDataset(root, 4, 8, "train")
    (root / "TrainingSet" / "no_number.npy").unlink()
    with pytest.raises(ConfigError, match=r"data\.crop"):
        ReleaseDataset(root, 4, 24, "train")[0]


def test_lossless_reference_reads_back_bit_exact(tmp_path):
    generator = torch.Generator().manual_seed(3)
    ref = torch.randint(0, 256, (3, 8, 12), generator=generator).float() / 255.0  # 8-bit values, as simulated
    lr, gt = torch.rand(1, 8, 12, generator=generator), torch.rand(3, 16, 24, generator=generator)
    write_release_sample(tmp_path, "img_", 0, lr, ref, gt, jpeg_quality=90)
    write_release_sample(tmp_path, "img_", 0, lr, ref, gt, jpeg_quality=None)
    assert sorted(p.name for p in (tmp_path / "ISP").iterdir()) == ["img_0000.png"]  # one reference per sample
    item = ReleaseDataset(tmp_path, scale=2, crop=8, split="val")[0]
    assert torch.equal(item["lr_ref"], ref)
    with pytest.raises(ValueError, match="jpeg_quality must be an integer in 1..100 or None, got 0"):
        write_release_sample(tmp_path, "img_", 0, lr, ref, gt, jpeg_quality=0)
