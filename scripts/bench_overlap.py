"""The overlap between tiles as a cost knob: seams, the change from the half-tile overlap, and time, on real raw files.

For each raw file, a square LR crop from its centre (``--crop``, even) is super-resolved by a checkpoint with the
tiles of ``rawsr.predict`` (linear blend, no mirrored border, ``tile_batch`` tiles per call) at several overlaps.
For each overlap it prints: the seam measure of the tests (``rawsr.inference.tiling.seam_ratio``: the mean
neighbour difference across tile borders over that inside tiles; at most 1.5 counts as no visible seam), the PSNR
of the output against the first overlap's output (by default the paper's half-tile overlap), the area the network
runs on over the output's (about ``(tile / (tile - overlap))^2``) and the wall time. One run, nothing else on the
machine.

    python scripts/bench_overlap.py CKPT ../shared/data/raw-samples/bayer ../shared/data/raw-samples/bayer-extra
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio

from rawsr.camera import read_raw
from rawsr.inference import render_reference, tile_function
from rawsr.inference.accelerate import prepare_network
from rawsr.inference.tiling import seam_ratio, tile_starts, tiled_forward
from rawsr.predict import find_inputs
from rawsr.training import load_checkpoint


def centre_crop(path: Path, crop: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """``raw (1, 1, crop, crop)`` and ``ref (1, 3, crop, crop)`` from the centre of ``path``, on an even origin."""
    image = read_raw(path)
    h, w = image.mosaic.shape
    if min(h, w) < crop:
        raise SystemExit(f"{path}: {h}x{w} is smaller than --crop {crop}")
    y, x = (h - crop) // 4 * 2, (w - crop) // 4 * 2
    mosaic = np.ascontiguousarray(image.mosaic[y : y + crop, x : x + crop])
    ref = render_reference(mosaic, image.wb, image.ccm)
    return (
        torch.from_numpy(mosaic)[None, None],
        torch.from_numpy(ref).permute(2, 0, 1)[None],
        image.wb,
        image.ccm,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", type=Path, help="a rawsr checkpoint")
    parser.add_argument("inputs", nargs="+", help="raw files or folders of them")
    parser.add_argument("--crop", type=int, default=512, help="LR side of the centre crop (default 512)")
    parser.add_argument("--overlaps", type=int, nargs="+", default=None, help="default: tile/2, /4, /8, /16 and 0")
    parser.add_argument("--tile-batch", type=int, default=4)
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    module = load_checkpoint(args.ckpt)
    tile, scale = module.tile, module.scale
    net = prepare_network(module.net, "channels_last")
    overlaps = args.overlaps or [tile // 2, tile // 4, tile // 8, tile // 16, 0]
    print(f"{args.ckpt}: x{scale}, tile {tile}; LR crops of {args.crop}; threads {torch.get_num_threads()}")
    print("file | overlap | seam ratio | PSNR vs the first overlap (dB) | network area | seconds")
    for path in [p for given in args.inputs for p in find_inputs(given)]:
        raw, ref, wb, ccm = centre_crop(path, args.crop)
        fn = tile_function(net, wb, ccm, precision="32")
        reference_output = None
        for overlap in overlaps:
            start = time.perf_counter()
            out = tiled_forward(fn, raw, ref, tile, scale, overlap, "linear", args.tile_batch)
            seconds = time.perf_counter() - start
            starts = tile_starts(args.crop, tile, tile - overlap)
            area = (len(starts) * tile / args.crop) ** 2
            if reference_output is None:
                reference_output = out
            print(
                f"{path.name} | {overlap} | {seam_ratio(out, starts, tile, scale):.3f} | "
                f"{float(peak_signal_noise_ratio(out, reference_output, data_range=1.0)):.2f} | {area:.2f}x | "
                f"{seconds:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
