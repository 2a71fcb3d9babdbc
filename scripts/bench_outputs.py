"""Benchmark (run by hand, not by tests): ONNX Runtime vs PyTorch time per tile on this CPU, and the peak memory of
``rawsr.predict format=dng`` on a 12 MP and a 24 MP synthetic raw.

    PYTHONPATH=src python scripts/bench_outputs.py [--width 32] [--tile 64] [--reps 10]

Peak memory is the child process's maximum resident set size (``ru_maxrss``); each size runs in a fresh process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SIZES = {"12 MP": (2832, 4240), "24 MP": (4000, 6000)}


def checkpoint(path: Path, width: int, tile: int) -> Path:
    from rawsr.model import RawSRNet

    kwargs = {"scale": 2, "width": width, "growth": max(8, width // 4), "dense_layers": 4}
    torch.manual_seed(0)
    net = RawSRNet(**kwargs)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"net": kwargs, "tile": tile}}, path)
    return path


def time_per_tile(ckpt: Path, folder: Path, tile: int, reps: int) -> tuple[float, float]:
    import onnxruntime as ort
    from omegaconf import OmegaConf

    from rawsr.export import export
    from rawsr.training import load_checkpoint

    cfg = OmegaConf.create({"ckpt_path": str(ckpt), "format": "onnx", "output_dir": str(folder), "opset": 17})
    cfg.tolerance = 1e-4
    onnx_path = export(cfg)[0]
    net = load_checkpoint(ckpt).net.eval()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    raw, ref = rng.random((1, 1, tile, tile), dtype=np.float32), rng.random((1, 3, tile, tile), dtype=np.float32)
    raw_t, ref_t = torch.from_numpy(raw), torch.from_numpy(ref)

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1000 * float(np.median(times))

    with torch.inference_mode():
        pt = best(lambda: net(raw_t, ref_t))
    ort_ms = best(lambda: session.run(["srgb", "linear"], {"raw": raw, "ref": ref}))
    return pt, ort_ms


CHILD = """
import resource, sys
from rawsr.predict import run
from hydra import compose, initialize_config_dir
from rawsr.config import config_dir
with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
    cfg = compose("predict", overrides=sys.argv[1:])
code = run(cfg)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def peak_memory_mib(ckpt: Path, source: Path, out: Path, tile: int) -> tuple[float, float]:
    start = time.perf_counter()
    args = [f"ckpt_path={ckpt}", f"input={source}", f"output_dir={out}", "format=dng", "device=cpu"]
    args += ["progress=false", "preview=false", "overlap=0", "tile_batch=8"]
    done = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1]) / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32, help="network width for the per-tile timing")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    from rawsr.camera import write_dng

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = checkpoint(folder / "bench.ckpt", args.width, args.tile)
        pt, ort_ms = time_per_tile(ckpt, folder / "export", args.tile, args.reps)
        print(
            f"per {args.tile}x{args.tile} tile, width {args.width}, {torch.get_num_threads()} threads: "
            f"PyTorch {pt:.1f} ms, ONNX Runtime {ort_ms:.1f} ms (x{pt / ort_ms:.2f})"
        )
        tiny = checkpoint(folder / "tiny.ckpt", 8, args.tile)
        peaks = {}
        rng = np.random.default_rng(0)
        for name, (h, w) in SIZES.items():
            mosaic = (rng.random((h, w), dtype=np.float32) * 3000 + 64).astype(np.uint16)
            source = write_dng(folder / f"{name.replace(' ', '')}.dng", mosaic, black_level=64, white_level=4095)
            del mosaic
            peaks[name], seconds = peak_memory_mib(tiny, source, folder / "out", args.tile)
            print(
                f"format=dng on a {name} raw ({w}x{h} -> {2 * w}x{2 * h}): peak RSS {peaks[name]:.0f} MiB, "
                f"{seconds:.0f} s (width-8 network)"
            )
            source.unlink()
            for f in (folder / "out").iterdir():
                f.unlink()
        print(f"peak memory ratio 24 MP / 12 MP: {peaks['24 MP'] / peaks['12 MP']:.2f}")


if __name__ == "__main__":
    main()
