"""rawsr.data.raw_folder: the HR linear recipe, the decode-once cache, and the dataset that crops it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import convolve

from rawsr.camera import read_raw, write_dng
from rawsr.config import ConfigError
from rawsr.data.raw_folder import (
    CacheRecipe,
    RawFolderDataset,
    entry_stem,
    find_raw_files,
    hr_linear_from_mosaic,
    prepare_cache,
)

PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")


def superpixel_reference(m: np.ndarray, factor: int) -> np.ndarray:
    """(H, W) RGGB mosaic -> (H/factor, W/factor, 3): one pixel per 2x2 cell, then block means."""
    rgb = np.stack([m[0::2, 0::2], (m[0::2, 1::2] + m[1::2, 0::2]) / 2, m[1::2, 1::2]], axis=-1)
    f = factor // 2
    h, w = rgb.shape[0] // f * f, rgb.shape[1] // f * f
    return rgb[:h, :w].reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3))


def bilinear_reference(m: np.ndarray) -> np.ndarray:
    """Textbook bilinear demosaicing of an RGGB mosaic (valid away from the border), (H, W, 3)."""
    h, w = m.shape
    masks = np.zeros((3, h, w))
    masks[0, 0::2, 0::2] = 1
    masks[1, 0::2, 1::2] = masks[1, 1::2, 0::2] = 1
    masks[2, 1::2, 1::2] = 1
    k_rb = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4
    k_g = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]]) / 4
    return np.stack([convolve(m * masks[c], k_g if c == 1 else k_rb, mode="mirror") for c in range(3)], axis=-1)


def test_superpixel_recipe_matches_block_means():
    rng = np.random.default_rng(0)
    m = rng.uniform(0, 1, (24, 36)).astype(np.float32)
    for factor in (2, 4):
        out = hr_linear_from_mosaic(torch.from_numpy(m)[None, None], "superpixel", factor)[0].permute(1, 2, 0)
        np.testing.assert_allclose(out.numpy(), superpixel_reference(m.astype(np.float64), factor), atol=1e-6)


def test_bilinear_recipe_matches_textbook_demosaic_then_area_downsampling():
    rng = np.random.default_rng(1)
    m = rng.uniform(0, 1, (32, 40))
    out = hr_linear_from_mosaic(torch.from_numpy(m).float()[None, None], "bilinear", 2)[0].permute(1, 2, 0).numpy()
    full = bilinear_reference(m)
    expected = full.reshape(16, 2, 20, 2, 3).mean(axis=(1, 3))
    assert out.shape == (16, 20, 3)
    np.testing.assert_allclose(out[1:-1, 1:-1], expected[1:-1, 1:-1], atol=1e-5)  # borders: padding differs
    grey = hr_linear_from_mosaic(torch.full((1, 1, 8, 8), 0.3), "bilinear", 1)
    torch.testing.assert_close(grey, torch.full((1, 3, 8, 8), 0.3))  # flat field stays flat, borders included


def test_recipe_is_validated_and_hashed():
    assert CacheRecipe().key() == CacheRecipe("bilinear", 2, "float16").key()
    assert CacheRecipe().key() != CacheRecipe(clean_factor=4).key() != CacheRecipe(dtype="uint16").key()
    assert CacheRecipe().key() != CacheRecipe(adjust_maximum=0.0).key()
    with pytest.raises(ConfigError, match="recipe.adjust_maximum"):
        CacheRecipe(adjust_maximum=1.5)
    with pytest.raises(ConfigError, match="recipe.clean_factor"):
        CacheRecipe(demosaic="superpixel", clean_factor=3)
    with pytest.raises(ConfigError, match="recipe.demosaic"):
        CacheRecipe(demosaic="ahd")


def make_raws(folder: Path, count: int = 4, size=(96, 120), seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        raw = rng.integers(0, 4096, size).astype(np.uint16)
        wb = (1.5 + 0.2 * i, 1.0, 1.8 - 0.1 * i)
        paths.append(write_dng(folder / f"img{i}.dng", raw, cfa=PATTERNS[i % 4], black_level=64 + i, bits=12, wb=wb))
    return paths


def test_prepare_cache_writes_entries_equal_to_the_recipe(tmp_path):
    raws = make_raws(tmp_path / "raws", 2) + [tmp_path / "raws" / "broken.dng"]
    raws[-1].write_bytes(b"II*\x00 this is not a raw file")
    recipe = CacheRecipe(demosaic="superpixel", clean_factor=2, dtype="float16")
    report = prepare_cache(raws, tmp_path / "cache", recipe)
    assert sorted(report.written) == raws[:2] and report.skipped == []
    assert [p for p, _ in report.failed] == [raws[-1]] and "broken.dng" not in report.failed[0][1]
    for source in raws[:2]:
        stem = entry_stem(source)
        image = np.load(tmp_path / "cache" / f"{stem}.npy")
        meta = json.loads((tmp_path / "cache" / f"{stem}.json").read_text())
        decoded = read_raw(source)
        assert image.dtype == np.float16 and image.shape == (3, *[s // 2 for s in decoded.mosaic.shape])
        expected = superpixel_reference(decoded.mosaic.astype(np.float64), 2).transpose(2, 0, 1)
        np.testing.assert_allclose(image, expected, atol=1e-3)
        assert meta["source"] == str(source.resolve()) and meta["cfa"] == decoded.cfa
        assert meta["size"] == source.stat().st_size and meta["mtime_ns"] == source.stat().st_mtime_ns
        np.testing.assert_allclose(meta["wb"], decoded.wb)
        np.testing.assert_allclose(meta["ccm"], decoded.ccm)
    assert not list((tmp_path / "cache").glob("*.tmp")) and not list((tmp_path / "cache").glob(".*"))


def test_prepare_cache_is_resumable_and_invalidated_by_changes(tmp_path):
    raws = make_raws(tmp_path / "raws", 3)
    cache = tmp_path / "cache"
    assert len(prepare_cache(raws, cache, workers=2).written) == 3  # in worker processes
    again = prepare_cache(raws, cache)
    assert again.written == [] and sorted(again.skipped) == raws
    st = raws[0].stat()
    os.utime(raws[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    (cache / f"{entry_stem(raws[1])}.npy").write_bytes(b"truncated")  # damaged entry
    report = prepare_cache(raws, cache)
    assert sorted(report.written) == raws[:2] and report.skipped == [raws[2]]
    assert len(prepare_cache(raws, cache, CacheRecipe(dtype="uint16")).written) == 3  # another recipe


def test_uint16_cache_reads_back_as_floats(tmp_path):
    raws = make_raws(tmp_path / "raws", 1)
    prepare_cache(raws, tmp_path / "c16", CacheRecipe(dtype="uint16"))
    prepare_cache(raws, tmp_path / "c32", CacheRecipe(dtype="float16"))
    kw = dict(scale=2, crop=8, split="val", val_fraction=0.0, val_files=["img0"])
    a = RawFolderDataset(cache_dir=tmp_path / "c16", **kw)[0]["hr_linear"]
    b = RawFolderDataset(cache_dir=tmp_path / "c32", **kw)[0]["hr_linear"]
    assert a.dtype == torch.float32 and float(a.max()) <= 1.0
    torch.testing.assert_close(a, b, atol=1e-3, rtol=0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("folder")
    prepare_cache(make_raws(root / "raws", 6, seed=5), root / "cache")
    return root / "raws", root / "cache"


def find_window(image: np.ndarray, patch: np.ndarray) -> tuple[int, int]:
    """Where ``patch`` (3, h, w) lies in ``image`` (3, H, W): the unique exact match."""
    h, w = patch.shape[1:]
    windows = np.lib.stride_tricks.sliding_window_view(image, (3, h, w))[0]
    hits = np.argwhere(np.all(windows == patch, axis=(2, 3, 4)))
    assert len(hits) == 1
    return tuple(hits[0])


def test_training_crops_come_from_the_cached_images(cache):
    raws, cache_dir = cache
    ds = RawFolderDataset(scale=2, crop=16, cache_dir=cache_dir, root=raws, split="train", samples_per_image=3)
    assert len(ds) == 3 * len(ds.entries)
    torch.manual_seed(0)
    corners = set()
    for index in range(len(ds)):
        item = ds[index]
        entry = ds.entries[index % len(ds.entries)]
        assert item["hr_linear"].shape == (3, 32, 32) and item["hr_linear"].dtype == torch.float32
        assert item["index"] == index
        image = np.load(entry["npy"]).astype(np.float32)
        corners.add(find_window(image, item["hr_linear"].numpy()))
        torch.testing.assert_close(item["wb"], torch.tensor(entry["wb"], dtype=torch.float32))
        torch.testing.assert_close(item["ccm"], torch.tensor(entry["ccm"], dtype=torch.float32))
    assert len(corners) > 1 and any(y % 2 or x % 2 for y, x in corners)  # any pixel may start a crop


def test_validation_images_are_fixed_and_sized_for_the_mosaic(cache):
    raws, cache_dir = cache
    whole = RawFolderDataset(scale=2, crop=16, cache_dir=cache_dir, root=raws, split="val", val_fraction=0.3)
    assert len(whole) == 2  # ceil(0.3 * 6)
    for i in range(len(whole)):
        image = np.load(whole.entries[i]["npy"]).astype(np.float32)
        out = whole[i]["hr_linear"]
        assert out.shape[1] % 8 == 0 and out.shape[2] % 8 == 0  # LR (HR / 2) a multiple of 4
        np.testing.assert_array_equal(out.numpy(), image[:, : out.shape[1], : out.shape[2]])
        torch.testing.assert_close(whole[i]["hr_linear"], out)
    crops = RawFolderDataset(
        scale=2, crop=16, cache_dir=cache_dir, root=raws, split="val", val_fraction=0.3, val_crops=12
    )
    out = crops[0]["hr_linear"]
    image = np.load(crops.entries[0]["npy"]).astype(np.float32)
    top, left = find_window(image, out.numpy())
    assert out.shape == (3, 24, 24) and top == (image.shape[1] - 24) // 2 and left == (image.shape[2] - 24) // 2


def test_splits_are_disjoint_deterministic_and_configurable(cache):
    raws, cache_dir = cache
    kw = dict(scale=2, crop=16, cache_dir=cache_dir, root=raws, val_fraction=0.3)
    train = {e["source"] for e in RawFolderDataset(split="train", **kw).entries}
    val = {e["source"] for e in RawFolderDataset(split="val", **kw).entries}
    assert not train & val and len(train | val) == 6
    assert val == {e["source"] for e in RawFolderDataset(split="val", **kw).entries}
    chosen = RawFolderDataset(split="val", val_files=["img2.dng", "img4"], **kw)
    assert sorted(Path(e["source"]).name for e in chosen.entries) == ["img2.dng", "img4.dng"]
    with pytest.raises(ConfigError, match="val_files.*nope"):
        RawFolderDataset(split="val", val_files=["nope"], **kw)


def test_missing_or_empty_cache_names_the_key_and_the_command(tmp_path, cache):
    raws, cache_dir = cache
    with pytest.raises(ConfigError, match=r"'data\.cache_dir'.*does not exist.*rawsr\.prepare task=cache"):
        RawFolderDataset(scale=2, crop=16, cache_dir=tmp_path / "nowhere", root=raws, cache_key="data.cache_dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"'data\.train\.cache_dir'.*no prepared cache in .*empty"):
        RawFolderDataset(scale=2, crop=16, cache_dir=tmp_path / "empty", root=raws)
    with pytest.raises(ConfigError, match=r"'cache_dir'.*no prepared cache in .*empty"):
        RawFolderDataset(scale=2, crop=16, cache_dir=tmp_path / "empty", root=raws, key="valset", cache_key="cache_dir")
    with pytest.raises(ConfigError, match="no prepared cache.*for raw files below"):
        RawFolderDataset(scale=2, crop=16, cache_dir=cache_dir, root=tmp_path)  # another folder's files
    with pytest.raises(ConfigError, match=r"data\.train.*at least 512"):
        RawFolderDataset(scale=2, crop=256, cache_dir=cache_dir, root=raws)


def test_find_raw_files_is_recursive_and_case_insensitive(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.DNG", "a/b/y.nef", "a/b/z.cr3", "notes.txt", "a/preview.jpg"):
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in find_raw_files(tmp_path)] == [
        "a/b/y.nef",
        "a/b/z.cr3",
        "a/x.DNG",
    ]


def test_data_config_builds_batches(cache):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from rawsr.config import config_dir

    raws, cache_dir = cache
    overrides = [
        f"root={raws}",
        f"cache_dir={cache_dir}",
        "crop=16",
        "batch_size=2",
        "num_workers=2",
        "val.val_crops=8",
    ]
    with initialize_config_dir(config_dir=str(config_dir() / "data"), version_base="1.3"):
        cfg = compose("raw_folder", overrides=overrides)
    train = instantiate(cfg.train)(scale=cfg.scale, crop=cfg.crop)
    val = instantiate(cfg.val)(scale=cfg.scale, crop=cfg.crop)
    assert {e["source"] for e in train.entries}.isdisjoint(e["source"] for e in val.entries)
    loader = torch.utils.data.DataLoader(train, batch_size=cfg.batch_size, num_workers=cfg.num_workers, shuffle=True)
    batch = next(iter(loader))
    assert (
        batch["hr_linear"].shape == (2, 3, 32, 32) and batch["wb"].shape == (2, 3) and batch["ccm"].shape == (2, 3, 3)
    )


def test_open_memory_maps_are_bounded_and_not_pickled(cache, monkeypatch):
    import pickle

    import rawsr.data.raw_folder as raw_folder

    raws, cache_dir = cache
    monkeypatch.setattr(raw_folder, "OPEN_ARRAYS", 2)
    ds = RawFolderDataset(scale=2, crop=16, cache_dir=cache_dir, root=raws, split="val", val_fraction=0.5)
    first = [ds[i]["hr_linear"] for i in range(len(ds))]
    assert len(ds) == 3 and len(ds._arrays) == 2
    copy = pickle.loads(pickle.dumps(ds))
    assert len(copy._arrays) == 0
    for i in range(len(ds)):
        torch.testing.assert_close(copy[i]["hr_linear"], first[i])
        torch.testing.assert_close(ds[i]["hr_linear"], first[i])
