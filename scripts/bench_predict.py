"""Benchmark ``rawsr.predict``: network throughput at the paper's width, and peak memory against image size.

1. Throughput: output megapixels per second of the paper-width network (x2: width 128, growth 16, 8 dense
   layers, LR tile 256, linear blend), randomly initialised, on a synthetic 2 MP mosaic: tiling, network, merging
   and conversion to 16 bits, as ``rawsr.predict`` runs them (no file I/O), twice: with the settings of rawsr 0.1
   (half-tile overlap, NCHW, glibc's default allocation) and with ``rawsr.predict``'s defaults (``overlap=auto``,
   channels-last, ``retain_memory``). A fast device repeats the image for at least 10 s; a slow CPU stops after
   ``--budget`` seconds and reports the rate over the rows finished so far (streaming makes that a steady-state
   rate).
2. The ceiling: the floating-point rate of the network's own 3x3 convolutions, each timed alone on its input shape
   (a batch of tiles of 256) in both memory formats and both ways of allocating, the best of them; then the
   network's forward pass on the same batch (NCHW; channels-last; channels-last with freed memory retained, as
   ``rawsr.predict`` runs it), its rate counted from its convolutions' FLOPs
   (``rawsr.inference.accelerate.network_flops``).
2b. ``--end-to-end``: ``python -m rawsr.predict`` with its defaults on a synthetic 24 MP DNG (``--e2e-megapixels``)
   with the paper-width x2 network, file I/O and the 16-bit PNG included, timed in a fresh process, against the
   network alone on the same output area without overlap (its time per batch of tiles, as in part 2, times the
   batches of tiles that cover the output once). Prints ``end_to_end_ratio=``.
   The last lines are ``ceiling_fraction=<the forward rate as rawsr.predict runs it, over the ceiling>`` and
   ``minutes_24mp=<minutes for a 24 MP raw at x2>``: the end-to-end run's own minutes with ``--end-to-end``,
   otherwise the throughput of part 1 with predict's defaults; all measured in this run.
3. Peak memory: ``python -m rawsr.predict`` end to end (DNG decoding, reference rendering, tiled network,
   16-bit PNG and preview) on synthetic 12 MP and 24 MP DNGs with the narrow demo model (x2, width 32,
   growth 8, 4 dense layers, tile 64), each in a fresh process measured with ``/usr/bin/time -v`` (or
   ``getrusage`` of a wrapper process). Memory should grow with the image width, not its area: the last line
   is ``peak_rss_ratio=<24 MP peak over 12 MP peak>``, to be below 1.25.

    python scripts/bench_predict.py                      # CPU
    python scripts/bench_predict.py --device cuda --bf16 # GPU, bfloat16 autocast
    python scripts/bench_predict.py --rss-overlap null   # peak memory with the paper's half-tile overlap
    python scripts/bench_predict.py --skip-rss           # throughput and ceiling only
    python scripts/bench_predict.py --skip-rss --end-to-end  # and rawsr.predict on a 24 MP DNG (minutes)
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rawsr.camera import write_dng
from rawsr.inference import render_reference, tile_function, to_uint16
from rawsr.inference.accelerate import prepare_network, retain_freed_memory
from rawsr.inference.tiling import feathered_overlap, tiled_rows
from rawsr.model import RawSRNet

PAPER_X2 = {"scale": 2, "width": 128, "growth": 16, "dense_layers": 8}
PAPER_TILE = 256
DEMO = {"scale": 2, "width": 32, "growth": 8, "dense_layers": 4}
DEMO_TILE = 64
BLACK, WHITE = 64, 4095
MIN_SECONDS = 10.0
"""The throughput run repeats the image until this long has gone by (fast devices)."""


def mosaic_shape(megapixels: float) -> tuple[int, int]:
    """A 3:4 (portrait-free, landscape) mosaic of about ``megapixels``, sides multiples of 4."""
    h = math.sqrt(megapixels * 1e6 * 3 / 4)
    return int(h // 4 * 4), int(h * 4 / 3 // 4 * 4)


def synthetic_mosaic(h: int, w: int) -> np.ndarray:
    """A 12-bit RGGB mosaic ``(h, w)`` uint16 of a natural scene (skimage's astronaut, mirrored to size)."""
    from skimage.data import astronaut

    linear = (astronaut() / 255.0) ** 2.2
    codes = np.round(BLACK + linear * (WHITE - BLACK)).astype(np.uint16)
    reps = (math.ceil(h / codes.shape[0]), math.ceil(w / codes.shape[1]))
    tiled = np.pad(codes, ((0, reps[0] * 512 - 512), (0, reps[1] * 512 - 512), (0, 0)), mode="symmetric")
    mosaic = np.empty((h, w), dtype=np.uint16)
    for (dy, dx), c in zip(((0, 0), (0, 1), (1, 0), (1, 1)), (0, 1, 1, 2), strict=True):
        mosaic[dy::2, dx::2] = tiled[dy:h:2, dx:w:2, c]
    return mosaic


SETTINGS = {
    "rawsr 0.1": {"overlap": PAPER_TILE // 2, "memory_format": "contiguous", "retain": False},
    "predict's defaults": {"overlap": feathered_overlap(PAPER_TILE), "memory_format": "channels_last", "retain": True},
}
"""The throughput run's two settings: before (half-tile overlap, NCHW, glibc's default allocation) and now."""


def throughput(
    device: torch.device,
    bf16: bool,
    megapixels: float,
    budget: float,
    batch: int,
    overlap: int,
    memory_format: str,
    retain: bool,
) -> float:
    """Output megapixels per second of the paper-width x2 network through tiling, as ``rawsr.predict`` runs it."""
    h, w = mosaic_shape(megapixels)
    mosaic = (synthetic_mosaic(h, w).astype(np.float32) - BLACK) / (WHITE - BLACK)
    wb, ccm = np.array([2.0, 1.0, 1.6], dtype=np.float32), np.eye(3, dtype=np.float32)
    ref = render_reference(mosaic, wb, ccm)
    torch.manual_seed(0)
    net = prepare_network(RawSRNet(**PAPER_X2).to(device), memory_format)
    fn = tile_function(net, wb, ccm, device=device, precision="bf16" if bf16 else "32")
    raw_t, ref_t = torch.from_numpy(mosaic)[None, None], torch.from_numpy(ref).permute(2, 0, 1)[None]
    with retain_freed_memory(retain):
        fn(raw_t[..., :PAPER_TILE, :PAPER_TILE], ref_t[..., :PAPER_TILE, :PAPER_TILE])  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        rows, passes, start = 0, 0, time.perf_counter()
        while True:  # whole passes until MIN_SECONDS have gone by; a slow device stops mid-pass after `budget`
            blocks = tiled_rows(fn, raw_t, ref_t, PAPER_TILE, 2, overlap=overlap, blend="linear", batch=batch)
            for block in blocks:
                rows += to_uint16(block).shape[0]  # includes the copy back to the host
                if time.perf_counter() - start > budget:
                    break
            else:
                passes += 1
            if time.perf_counter() - start > min(budget, MIN_SECONDS):
                break
        elapsed = time.perf_counter() - start
    out_w = 2 * w
    rate = rows * out_w / elapsed / 1e6
    print(
        f"throughput: {rate:.3f} output MP/s = {4 * 24 / rate / 60:.1f} min for 24 MP  (x2 width 128, tile "
        f"{PAPER_TILE}, overlap {overlap}, {memory_format}, retain_memory {retain}, batch {batch}, {device}, "
        f"{'bf16' if bf16 else 'fp32'}; {h}x{w} input = {h * w / 1e6:.1f} MP; {rows} output rows ({passes} whole "
        f"passes of {2 * h}) in {elapsed:.1f} s)",
        flush=True,
    )
    return rate


def seconds_per_call(fn, min_seconds: float = 2.0, min_calls: int = 3) -> float:
    """Median seconds of ``fn()`` over at least ``min_calls`` calls and ``min_seconds``, after one warm-up call."""
    fn()
    times = []
    while len(times) < min_calls or sum(times) < min_seconds:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def conv3x3_shapes(net: torch.nn.Module, raw: torch.Tensor, ref: torch.Tensor) -> list[tuple]:
    """The distinct ``(input shape, conv)`` of the 3x3 convolutions in one forward pass of ``net``."""
    seen, hooks = {}, []

    def record(conv, inputs, _output):
        key = (tuple(inputs[0].shape), tuple(conv.weight.shape), conv.stride, conv.padding, conv.groups)
        seen.setdefault(key, conv)

    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (3, 3):
            hooks.append(module.register_forward_hook(record))
    with torch.no_grad():
        net(raw, ref)
    for hook in hooks:
        hook.remove()
    return [(key[0], conv) for key, conv in seen.items()]


FORWARDS = {
    "contiguous": ("contiguous", False),
    "channels_last": ("channels_last", False),
    "channels_last, retain_memory": ("channels_last", True),
}
"""The forward pass's settings in part 2; the last is ``rawsr.predict``'s."""


def forward_seconds(net: torch.nn.Module, raw: torch.Tensor, ref: torch.Tensor, retain: bool, calls: int = 1) -> float:
    """Median seconds of ``calls`` calls of ``net(raw, ref)`` without grad, after one untimed call, all within one
    :func:`retain_freed_memory` context (``retain``), so that a retained run reuses its memory from its second call."""
    times = []
    with torch.no_grad(), retain_freed_memory(retain):
        net(raw, ref)
        for _ in range(calls):
            start = time.perf_counter()
            net(raw, ref)
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def ceiling(device: torch.device, batch: int, rounds: int) -> tuple[float, float]:
    """The best FLOP/s of the network's 3x3 convolutions alone (either memory format, either allocation), and the
    forward pass's rate in each of :data:`FORWARDS`; prints them and returns ``(the forward pass's rate as
    rawsr.predict runs it over the ceiling, its seconds per batch of tiles)``.

    The convolutions and the forward passes take turns in ``rounds`` rounds (a machine that slows down or speeds up
    meanwhile affects them alike); each figure is the median over the rounds, the ceiling the best median."""
    import torch.nn.functional as F

    from rawsr.inference.accelerate import MEMORY_FORMATS, network_flops

    torch.manual_seed(0)
    net = RawSRNet(**PAPER_X2).to(device).eval()
    raw = torch.rand(batch, 1, PAPER_TILE, PAPER_TILE, device=device)
    ref = torch.rand(batch, 3, PAPER_TILE, PAPER_TILE, device=device)
    convs = {}  # (shape, out channels, format, retain) -> (flops, args)
    for shape, conv in conv3x3_shapes(net, raw, ref):
        for name, fmt in MEMORY_FORMATS.items():
            x = torch.rand(shape, device=device).contiguous(memory_format=fmt)
            weight = conv.weight.detach().contiguous(memory_format=fmt)
            args = (x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
            flops = network_flops(F.conv2d, *args)  # the same counter as the forward pass's below
            for retain in (False, True):
                key = f"{shape} -> {conv.out_channels} channels, {name}, retain_memory {retain}"
                convs[key] = (flops, args, retain)
    flops = network_flops(net, raw, ref)
    nets = {}
    for name, (memory_format, _) in FORWARDS.items():
        nets[name] = prepare_network(RawSRNet(**PAPER_X2).to(device), memory_format)
        nets[name].load_state_dict(net.state_dict())
    conv_times = {key: [] for key in convs}
    forward_times = {name: [] for name in FORWARDS}
    for _ in range(rounds):
        for key, (_, args, retain) in convs.items():
            with retain_freed_memory(retain):
                conv_times[key].append(seconds_per_call(lambda args=args: F.conv2d(*args), 0.3))
        for name, (_, retain) in FORWARDS.items():
            forward_times[name].append(forward_seconds(nets[name], raw, ref, retain))
    rates = {key: convs[key][0] / float(np.median(times)) for key, times in conv_times.items()}
    best_shape = max(rates, key=rates.get)
    best = rates[best_shape]
    print(
        f"ceiling: {best / 1e9:.1f} GFLOP/s (fp32), the best 3x3 convolution of the network alone ({best_shape}; "
        f"median of {rounds} rounds)",
        flush=True,
    )
    seconds = {name: float(np.median(times)) for name, times in forward_times.items()}
    rates = {name: flops / value for name, value in seconds.items()}
    for name in FORWARDS:
        spread = ", ".join(f"{t:.2f}" for t in forward_times[name])
        print(
            f"forward (fp32): {name}: {seconds[name]:.2f} s per call of {batch} tile(s) of {PAPER_TILE} "
            f"[{spread}], {flops / 1e9:.0f} GFLOP of convolutions, {rates[name] / 1e9:.1f} GFLOP/s = "
            f"{rates[name] / best:.0%} of the ceiling",
            flush=True,
        )
    names = list(FORWARDS)
    print(
        f"channels_last over contiguous: {rates[names[1]] / rates[names[0]]:.2f}x; with retain_memory: "
        f"{rates[names[2]] / rates[names[1]]:.2f}x more ({rates[names[2]] / rates[names[0]]:.2f}x in all)",
        flush=True,
    )
    return rates[names[-1]] / best, seconds[names[-1]]


def end_to_end(megapixels: float, device: str, batch: int, keep: bool) -> float:
    """``python -m rawsr.predict`` with its defaults on a synthetic DNG of ``megapixels`` with the paper-width x2
    network, timed in a fresh process; prints its minutes and its ratio to the network alone on the same output
    area without overlap (seconds per batch of ``batch`` tiles as ``rawsr.predict`` runs them, the median of calls
    just before and just after the run, times the batches that cover the output once); returns the minutes."""
    work = Path(tempfile.mkdtemp(prefix="rawsr-bench-e2e-"))
    try:
        ckpt = network_checkpoint(work / "paper_x2.ckpt", PAPER_X2, PAPER_TILE)
        h, w = mosaic_shape(megapixels)
        dng = write_dng(work / f"synthetic_{megapixels:g}mp.dng", synthetic_mosaic(h, w), "RGGB", BLACK, WHITE)
        torch.manual_seed(0)
        net = prepare_network(RawSRNet(**PAPER_X2).to(device), "channels_last")
        raw = torch.rand(batch, 1, PAPER_TILE, PAPER_TILE, device=device)
        ref = torch.rand(batch, 3, PAPER_TILE, PAPER_TILE, device=device)
        before = forward_seconds(net, raw, ref, True, calls=3)
        command = [
            sys.executable, "-m", "rawsr.predict", f"ckpt_path={ckpt}", f"input={dng}",
            f"output_dir={work / 'out'}", "progress=false", f"device={device}", f"tile_batch={batch}",
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"rawsr.predict failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        after = forward_seconds(net, raw, ref, True, calls=3)
        call_seconds = (before + after) / 2
        network_alone = h * w / (batch * PAPER_TILE**2) * call_seconds
        print(
            f"end to end: rawsr.predict on a {megapixels:g} MP DNG ({h}x{w}) -> {2 * h}x{2 * w} 16-bit PNG: "
            f"{wall:.0f} s = {wall / 60:.1f} min ({4 * h * w / 1e6 / wall:.3f} output MP/s); the network alone on "
            f"the same area without overlap: {network_alone:.0f} s ({h * w / PAPER_TILE**2:.0f} tiles of "
            f"{PAPER_TILE} at {call_seconds:.2f} s per {batch}: {before:.2f} s before the run, {after:.2f} s after)",
            flush=True,
        )
        print(f"end_to_end_ratio={wall / network_alone:.3f}", flush=True)
        return wall / 60 * 24 / megapixels
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def network_checkpoint(path: Path, net: dict, tile: int) -> Path:
    """A checkpoint ``rawsr.predict`` loads: a randomly initialised ``RawSRNet(**net)`` trained on crops of ``tile``."""
    torch.manual_seed(0)
    state = {f"net.{k}": v for k, v in RawSRNet(**net).state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"net": net, "tile": tile}}, path)
    return path


def peak_rss(command: list[str]) -> tuple[float, float]:
    """Run ``command`` in a fresh process; return ``(peak RSS in MiB, wall seconds)``."""
    start = time.perf_counter()
    if Path("/usr/bin/time").exists():
        done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
        kib = int(match.group(1)) if match else None
    else:
        wrapper = (
            "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
        )
        done = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True)
        kib = int(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else None
    wall = time.perf_counter() - start
    if done.returncode != 0 or kib is None:
        raise SystemExit(f"benchmark run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return kib / 1024, wall


def memory(sizes: list[float], overlap: str, device: str, keep: bool) -> list[float]:
    work = Path(tempfile.mkdtemp(prefix="rawsr-bench-"))
    ckpt = network_checkpoint(work / "demo.ckpt", DEMO, DEMO_TILE)
    peaks = []
    try:
        for megapixels in sizes:
            h, w = mosaic_shape(megapixels)
            dng = write_dng(work / f"synthetic_{megapixels:g}mp.dng", synthetic_mosaic(h, w), "RGGB", BLACK, WHITE)
            command = [
                sys.executable, "-m", "rawsr.predict", f"ckpt_path={ckpt}", f"input={dng}",
                f"output_dir={work / 'out'}", "progress=false", f"device={device}",
                f"overlap={overlap}",
            ]  # fmt: skip
            mib, wall = peak_rss(command)
            peaks.append(mib)
            out_mp = 4 * h * w / 1e6
            print(
                f"peak RSS: {megapixels:g} MP input ({h}x{w}) -> {mib:.0f} MiB; {wall:.0f} s end to end "
                f"({out_mp / wall:.3f} output MP/s, demo model, tile {DEMO_TILE}, overlap {overlap}, {device})",
                flush=True,
            )
            if not keep:
                dng.unlink()
                shutil.rmtree(work / "out", ignore_errors=True)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the throughput run")
    parser.add_argument("--megapixels", type=float, default=2.0, help="throughput input size (default 2)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds at most for the throughput run")
    parser.add_argument("--tile-batch", type=int, default=None, help="tiles per call (default 4 CPU, 8 CUDA)")
    parser.add_argument("--rss-sizes", type=float, nargs=2, default=[12.0, 24.0], help="MP of the two inputs")
    parser.add_argument(
        "--rss-overlap",
        default="auto",
        help="the memory runs' overlap key: auto (predict's default), null (half the tile) or LR pixels",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the ceiling and forward timings (default 3)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--forward-only", action="store_true", help="only the ceiling and the forward passes")
    parser.add_argument("--end-to-end", action="store_true", help="also time rawsr.predict on a 24 MP DNG")
    parser.add_argument("--e2e-megapixels", type=float, default=24.0, help="the end-to-end DNG's size (default 24)")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic DNGs and outputs")
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = args.tile_batch or (8 if device.type == "cuda" else 4)  # 4: rawsr.predict's default
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, threads {torch.get_num_threads()}", flush=True)
    summary = []
    if args.forward_only:
        fraction, _ = ceiling(device, batch, args.rounds)
        print(f"ceiling_fraction={fraction:.3f}")
        return
    if not args.skip_throughput:
        rates = {}
        for name, setting in SETTINGS.items():
            print(f"{name}:", end=" ", flush=True)
            rates[name] = throughput(device, args.bf16, args.megapixels, args.budget, batch, **setting)
        before, after = rates.values()
        print(f"predict's defaults over rawsr 0.1: {after / before:.2f}x", flush=True)
        fraction, _ = ceiling(device, batch, args.rounds)
        minutes = 4 * 24 / after / 60
        if args.end_to_end:
            minutes = end_to_end(args.e2e_megapixels, device, batch, args.keep)
        summary = [f"ceiling_fraction={fraction:.3f}", f"minutes_24mp={minutes:.1f}"]
    if not args.skip_rss:
        overlap = args.rss_overlap
        small, large = memory(args.rss_sizes, overlap, args.device, args.keep)
        summary.insert(0, f"peak_rss_ratio={large / small:.3f}")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
