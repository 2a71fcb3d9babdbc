"""Time the batched imaging-process simulation against a straightforward per-image NumPy/SciPy implementation.

Both run the ``paper`` preset's steps on batches of HR linear crops (default 16 x 256 x 256) at x2 and x4:
defocus disk ⊛ random-walk kernel per image, blur, area downsampling, RGGB mosaic, Brooks noise, 12-bit
quantisation, bilinear demosaic, rendering of the LR reference (gains, CCM, sRGB OETF, 8 bits, JPEG) and of the
HR target. The NumPy version loops over images (kernel sampling in NumPy, FFT blur with reflect padding,
block-mean downsampling, SciPy bilinear demosaic, Pillow JPEG). It always runs on the CPU.

The torch pipeline is timed twice: eager, and with ``compile=True`` (the renderer fused by ``torch.compile``; its
one-time compilation per batch shape is done before timing and reported separately).

    python scripts/bench_degradation.py                 # torch on the CPU
    python scripts/bench_degradation.py --device cuda   # torch on the GPU (samples per second)

The last line is ``speedup=<ratio>``: torch over NumPy for the worse (smaller) of the x2 and x4 ratios, with
``compile=True`` (the line before gives the eager figure); with ``--no-compile``, eager only.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from functools import partial

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from scipy import ndimage, signal

from rawsr.config import config_dir
from rawsr.degradation import sample_camera


def load_preset(name: str, scale: int, jpeg: bool = True, compile: bool = False):
    cfg = OmegaConf.load(config_dir() / "degradation" / f"{name}.yaml")
    cfg.scale = scale
    cfg.compile = compile
    if not jpeg:
        cfg.reference.jpeg = None
    return instantiate(cfg), OmegaConf.to_container(cfg)


# ------------------------------------------------------------------------------------------------------------
# Per-image NumPy/SciPy reference implementation of the same steps.
# ------------------------------------------------------------------------------------------------------------


def np_disk(radius: float, size: int, supersample: int = 9) -> np.ndarray:
    sub = (np.arange(supersample) - supersample // 2) / supersample
    fine = (np.arange(size)[:, None] - size // 2 + sub[None, :]).reshape(-1)
    inside = (fine[:, None] ** 2 + fine[None, :] ** 2) <= radius**2
    cover = inside.reshape(size, supersample, size, supersample).mean((1, 3))
    return cover / cover.sum()


def np_motion(
    rng: np.random.Generator, size: int, length: float, steps: int, inertia: float, jitter: float, shake_prob: float
) -> np.ndarray:
    heading, rate = rng.uniform(0, 2 * np.pi), 0.0
    points, pos = [], np.zeros(2)
    for _ in range(steps):
        rate = inertia * rate + jitter * rng.normal()
        heading += rate + (np.pi + rng.uniform(-0.5, 0.5) if rng.uniform() < shake_prob else 0.0)
        step = length / steps * np.array([np.cos(heading), np.sin(heading)])
        points.append(pos + 0.5 * step)
        pos = pos + step
    pts = np.array(points) - np.mean(points, axis=0) + size // 2
    kernel = np.zeros((size, size))
    x0, y0 = np.floor(pts[:, 0]).astype(int), np.floor(pts[:, 1]).astype(int)
    fx, fy = pts[:, 0] - x0, pts[:, 1] - y0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            np.add.at(kernel, (y0 + dy, x0 + dx), wy * wx)
    return kernel / kernel.sum()


def np_kernel(rng: np.random.Generator, kcfg: dict) -> np.ndarray:
    fam = kcfg["families"]["defocus_motion"]
    size = kcfg["size"]
    radius = rng.uniform(*fam["radius"])
    disk_size = 2 * int(np.ceil(fam["radius"][1])) + 1
    motion = np_motion(
        rng,
        size - disk_size + 1,
        rng.uniform(*fam["length"]),
        fam["steps"],
        fam["inertia"],
        fam["jitter"],
        fam["shake_prob"],
    )
    return signal.convolve2d(np_disk(radius, disk_size), motion)


def np_srgb(lin: np.ndarray, wb: np.ndarray, ccm: np.ndarray) -> np.ndarray:
    x = np.clip(np.einsum("ij,jhw->ihw", ccm, lin * wb[:, None, None]), 0, 1)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


G_KERNEL = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]]) / 4.0
RB_KERNEL = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4.0


def np_demosaic(m: np.ndarray) -> np.ndarray:
    masks = np.zeros((3, *m.shape))
    masks[0, 0::2, 0::2] = masks[1, 0::2, 1::2] = masks[1, 1::2, 0::2] = masks[2, 1::2, 1::2] = 1
    kernels = (RB_KERNEL, G_KERNEL, RB_KERNEL)
    return np.stack([ndimage.convolve(m * masks[c], kernels[c], mode="mirror") for c in range(3)])


def np_degrade_one(hr: np.ndarray, wb: np.ndarray, ccm: np.ndarray, seed: int, cfg: dict) -> dict:
    rng = np.random.default_rng(seed)
    scale, bits = cfg["scale"], cfg["bits"]
    kernel = np_kernel(rng, cfg["kernel"])
    pad = kernel.shape[0] // 2
    blurred = np.stack([signal.fftconvolve(np.pad(c, pad, mode="reflect"), kernel, mode="valid") for c in hr])
    _, h, w = blurred.shape
    lr = blurred.reshape(3, h // scale, scale, w // scale, scale).mean((2, 4))
    mosaic = np.empty(lr.shape[1:])
    mosaic[0::2, 0::2], mosaic[0::2, 1::2] = lr[0, 0::2, 0::2], lr[1, 0::2, 1::2]
    mosaic[1::2, 0::2], mosaic[1::2, 1::2] = lr[1, 1::2, 0::2], lr[2, 1::2, 1::2]
    prof = cfg["noise"]["profiles"]["brooks"]
    log_shot = rng.uniform(np.log(prof["shot"][0]), np.log(prof["shot"][1]))
    shot = np.exp(log_shot)
    read = np.exp(prof["slope"] * log_shot + prof["intercept"] + rng.normal(0, prof["std"]))
    noisy = mosaic + rng.normal(size=mosaic.shape) * np.sqrt(shot * np.maximum(mosaic, 0) + read)
    noisy = np.round(np.clip(noisy, 0, 1) * (2**bits - 1)) / (2**bits - 1)
    ref = np.round(np_srgb(np_demosaic(noisy), wb, ccm) * 255).astype(np.uint8)
    if cfg["reference"]["jpeg"] is not None:
        quality = int(round(rng.uniform(*cfg["reference"]["jpeg"])))
        buffer = io.BytesIO()
        Image.fromarray(ref.transpose(1, 2, 0)).save(buffer, format="JPEG", quality=quality)
        ref = np.asarray(Image.open(buffer)).transpose(2, 0, 1)
    ref = ref / 255.0
    return {"lr_raw": noisy, "lr_ref": ref, "hr_srgb": np_srgb(hr, wb, ccm), "kernel": kernel}


def np_degrade(batch: dict, seeds: np.ndarray, cfg: dict) -> list[dict]:
    return [
        np_degrade_one(batch["hr_linear"][i], batch["wb"][i], batch["ccm"][i], int(s), cfg) for i, s in enumerate(seeds)
    ]


# ------------------------------------------------------------------------------------------------------------


def median_times(fns: list, runs: int, sync) -> list[float]:
    """Median wall time of each function; runs are interleaved so that all see the same machine load."""
    for fn in fns:
        fn()
        sync()
    times = [[] for _ in fns]
    for _ in range(runs):
        for fn, record in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            sync()
            record.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="device for the torch pipeline (cpu or cuda)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="HR crop side")
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each pipeline, interleaved (median)")
    parser.add_argument("--no-jpeg", action="store_true", help="leave out the reference's JPEG step in both")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--no-compile", action="store_true", help="time the eager pipeline only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    g = torch.Generator().manual_seed(0)
    wb, ccm = sample_camera(g, args.batch, "cpu")
    hr = torch.rand(args.batch, 3, args.size, args.size, generator=g)
    hr = torch.from_numpy(ndimage.uniform_filter(hr.numpy(), size=(1, 1, 5, 5))).contiguous()  # image-like
    batch = {"hr_linear": hr.to(device), "wb": wb.to(device), "ccm": ccm.to(device)}
    np_batch = {k: v.double().numpy() for k, v in {"hr_linear": hr, "wb": wb, "ccm": ccm}.items()}
    seeds = torch.arange(args.batch, dtype=torch.int64)

    print(
        f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
        f"torch threads={torch.get_num_threads()}, batch={args.batch} x {args.size}^2 HR, preset=paper"
        f"{', no JPEG' if args.no_jpeg else ''}, load average {os.getloadavg()[0]:.1f}"
    )
    modes = ("eager",) if args.no_compile else ("eager", "compiled")
    print(
        f"{'scale':>5} | {'torch':>8} | {'torch ms/batch':>14} | {'numpy ms/batch':>14} | {'torch samples/s':>15} | "
        f"{'numpy samples/s':>15} | {'speedup':>7}"
    )
    ratios: dict[str, list[float]] = {mode: [] for mode in modes}
    for scale in (2, 4):
        pipelines = {}
        for mode in modes:
            deg, cfg = load_preset("paper", scale, jpeg=not args.no_jpeg, compile=mode == "compiled")
            start = time.perf_counter()
            deg(batch, seeds)  # compiles the renderer for this batch shape
            sync()
            if mode == "compiled":
                state = "compiled" if deg.compile else "compilation FAILED, eager"
                print(f"   x{scale} | compile: {time.perf_counter() - start:.1f} s for the first call ({state})")
            pipelines[mode] = partial(deg, batch, seeds)
        runs = [*pipelines.values(), partial(np_degrade, np_batch, seeds.numpy(), cfg)]
        *t_torch, t_numpy = median_times(runs, args.runs, sync)
        for mode, t in zip(modes, t_torch, strict=True):
            ratios[mode].append(t_numpy / t)
            print(
                f"{'x' + str(scale):>5} | {mode:>8} | {1e3 * t:14.1f} | {1e3 * t_numpy:14.1f} | "
                f"{args.batch / t:15.1f} | {args.batch / t_numpy:15.1f} | {ratios[mode][-1]:7.1f}"
            )
    print("speedup: the worse (smaller) of the x2 and x4 ratios, torch over per-image NumPy")
    for mode in modes[:-1]:
        print(f"speedup_{mode}={min(ratios[mode]):.2f}")
    print(f"speedup={min(ratios[modes[-1]]):.2f}")


if __name__ == "__main__":
    main()
