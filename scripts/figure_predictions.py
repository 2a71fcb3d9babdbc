"""The figure of predictions in the docs: each photograph's LR colour reference beside ``rawsr.predict``'s output.

Reads the ``<stem>_x<s>.png`` outputs of ``python -m rawsr.predict ... save_reference=true`` in a folder (each with
its ``<stem>_x<s>_reference.png``) and writes one JPEG: per photograph, a row with the whole reference and the whole
output (both downscaled to ``--width`` pixels), then a detail from the centre of the output at its own resolution,
beside the same window of the reference upsampled bicubically.
It also prints, per photograph, the per-channel mean of the output (area-downsampled to the reference's size) minus
that of the reference, in levels of 255, and the mean of the outermost output rows and columns against those 8
pixels in: the colour and border checks of docs/results.md.

    python -m rawsr.predict ckpt_path=RUN/checkpoints/last.ckpt input=../shared/data/raw-samples/bayer \\
        output_dir=/tmp/pred save_reference=true format=[png,tiff]
    python scripts/figure_predictions.py /tmp/pred docs/images/demo_predictions.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def read_levels(path: Path) -> np.ndarray:
    """An RGB(A) image as ``(H, W, 3)`` float64 in levels of 255: a 16-bit TIFF at full precision, a PNG through
    Pillow (which reads a 16-bit PNG as 8 bits: hence ``format=[png,tiff]`` for the checks)."""
    import imageio.v3 as iio

    image = iio.imread(path)
    scale = 255.0 / 65535.0 if image.dtype == np.uint16 else 1.0
    return image[..., :3].astype(np.float64) * scale


def checks(output: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Per-channel mean of ``output`` area-downsampled to ``reference``'s size minus that of ``reference``, and
    (outermost, 8 pixels in) means of the luminance for the top, bottom, left and right borders of ``output``."""
    s = output.shape[0] // reference.shape[0]
    h, w = reference.shape[:2]
    small = output[: h * s, : w * s].reshape(h, s, w, s, 3).mean((1, 3))
    diff = small.reshape(-1, 3).mean(0) - reference.reshape(-1, 3).mean(0)
    g = output.mean(2)
    borders = [(g[0].mean(), g[8].mean()), (g[-1].mean(), g[-9].mean())]
    borders += [(g[:, 0].mean(), g[:, 8].mean()), (g[:, -1].mean(), g[:, -9].mean())]
    return diff, borders


def to_image(levels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(levels.round(), 0, 255).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="rawsr.predict's output folder (with save_reference=true)")
    parser.add_argument("figure", type=Path, help="the JPEG to write")
    parser.add_argument("--width", type=int, default=480, help="width of each panel (pixels)")
    args = parser.parse_args()

    outputs = sorted(p for p in args.folder.glob("*_x[0-9].png"))
    if not outputs:
        raise SystemExit(f"{args.folder}: no <stem>_x<s>.png outputs")
    outputs = [p.with_suffix(".tif") if p.with_suffix(".tif").is_file() else p for p in outputs]
    rows = []
    for path in outputs:
        output, reference = read_levels(path), read_levels(path.with_name(path.stem + "_reference.png"))
        diff, borders = checks(output, reference)
        edges = ", ".join(f"{a:.1f}/{b:.1f}" for a, b in borders)
        print(f"{path.name}: mean RGB minus reference {np.round(diff, 2).tolist()}")
        print(f"    borders top/bottom/left/right, outermost/8 pixels in: {edges}")
        whole = [
            to_image(x).resize((args.width, round(x.shape[0] * args.width / x.shape[1])), Image.LANCZOS)
            for x in (reference, output)
        ]
        s = output.shape[0] // reference.shape[0]
        d = whole[0].height  # a square detail as high as the row
        y, x = (output.shape[0] - d) // 2 // s * s, (output.shape[1] - d) // 2 // s * s
        upsampled = to_image(reference[y // s : (y + d) // s, x // s : (x + d) // s]).resize((d, d), Image.BICUBIC)
        details = [upsampled, to_image(output[y : y + d, x : x + d])]
        rows.append(whole + details)
    gap = 6
    width = sum(p.width for p in rows[0]) + gap * (len(rows[0]) - 1)
    height = sum(r[0].height for r in rows) + gap * (len(rows) - 1)
    figure = Image.new("RGB", (width, height), "white")
    top = 0
    for panels in rows:
        left = 0
        for panel in panels:
            figure.paste(panel, (left, top))
            left += panel.width + gap
        top += panels[0].height + gap
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.figure, quality=88)
    print(f"wrote {args.figure} ({width}x{height})")


if __name__ == "__main__":
    main()
