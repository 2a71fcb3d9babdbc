"""Benchmark the raw-folder data path: preparing a 24 MP raw file, and HR crops per second from the cache.

    python scripts/bench_loader.py [--workers 2] [--batches 60] [--keep DIR]

Synthesises a 6000 x 4000 14-bit DNG (and three 12 MP ones), times ``read_raw`` and ``prepare_cache`` on it, then
reads random 512 x 512 HR linear crops (x2, LR crop 256) through a DataLoader with ``--workers`` processes.
``cpu_ms_per_crop`` is one worker's CPU time per crop (the throughput ceiling is ``workers * 1000 / that`` when the
cores are free). The last line is ``crops_per_s=<n>``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from rawsr.camera import read_raw, write_dng
from rawsr.data.raw_folder import CacheRecipe, RawFolderDataset, prepare_cache


def synthesise(path: Path, height: int, width: int, seed: int) -> Path:
    """A DNG with smooth structure plus noise (14 bits, black 512), GRBG to exercise the alignment."""
    rng = np.random.default_rng(seed)
    yy = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    xx = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    signal = 0.5 + 0.4 * np.sin(40 * xx + 25 * yy) * np.cos(30 * yy)
    raw = 512 + signal * 15000 + rng.normal(0, 60, (height, width)).astype(np.float32)
    return write_dng(path, np.clip(raw, 0, 16383).astype(np.uint16), cfa="GRBG", black_level=512, bits=14)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--keep", type=Path, default=None, help="work here instead of a temporary folder")
    args = parser.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        raws = work / "raws"
        raws.mkdir(parents=True, exist_ok=True)
        big = synthesise(raws / "big_24mp.dng", 4000, 6000, 0)
        others = [synthesise(raws / f"img{i}_12mp.dng", 3000, 4000, i + 1) for i in range(3)]
        print(f"dng_24mp_bytes={big.stat().st_size}")

        t = time.perf_counter()
        image = read_raw(big)
        print(f"read_raw_24mp_s={time.perf_counter() - t:.2f} mosaic={image.mosaic.shape}")
        t = time.perf_counter()
        prepare_cache([big], work / "cache", CacheRecipe(), workers=1)
        print(f"prepare_cache_24mp_s={time.perf_counter() - t:.2f} (bilinear demosaic, clean_factor 2, float16)")
        t = time.perf_counter()
        prepare_cache(others, work / "cache", CacheRecipe(), workers=args.workers)
        print(f"prepare_cache_3x12mp_workers{args.workers}_s={time.perf_counter() - t:.2f}")

        dataset = RawFolderDataset(
            scale=2, crop=256, cache_dir=work / "cache", root=raws, split="train", val_fraction=0, samples_per_image=256
        )  # an epoch of 1024 crops: a real folder's epoch is long, the loader is not measured at epoch ends
        print(f"cpu_ms_per_crop={_cpu_ms_per_crop(dataset, args.batch_size):.2f} (one thread, item + collate)")
        loader = DataLoader(
            dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, persistent_workers=True
        )
        batches = iter(_forever(loader))
        for _ in range(5):  # warm-up: worker start and page cache
            next(batches)
        t = time.perf_counter()
        crops = 0
        for _ in range(args.batches):
            crops += next(batches)["hr_linear"].shape[0]
        rate = crops / (time.perf_counter() - t)
        print(f"crop_shape={tuple(dataset[0]['hr_linear'].shape)} workers={args.workers} batch={args.batch_size}")
        print(f"crops_per_s={rate:.1f}")


def _cpu_ms_per_crop(dataset, batch_size: int, batches: int = 10) -> float:
    """CPU time of one worker's work per crop (reading, converting, collating), immune to other processes' load."""
    from torch.utils.data import default_collate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    default_collate([dataset[i] for i in range(batch_size)])
    t = time.process_time()
    for b in range(batches):
        default_collate([dataset[b * batch_size + i] for i in range(batch_size)])
    torch.set_num_threads(threads)
    return (time.process_time() - t) / (batches * batch_size) * 1000


def _forever(loader):
    while True:
        yield from loader


if __name__ == "__main__":
    main()
