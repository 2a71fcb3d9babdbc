"""``python -m rawsr.predict ckpt_path=model.ckpt input=PHOTO_OR_FOLDER``: super-resolve camera raw files.

For each raw file:

1. :func:`rawsr.camera.read_raw` gives the black-subtracted, white-normalised mosaic, aligned to RGGB, with
   the camera's white balance and colour matrix. The mosaic is trimmed to even height and width at the
   bottom/right (at most one row and one column), which keeps the 2x2 colour-filter phase; the output is
   ``scale`` times that size.
2. The colour reference at LR is the camera's own rendering of the same mosaic: bilinear demosaic, camera
   white-balance gains, colour matrix, sRGB OETF, quantised to 8 bits (:func:`render_reference`). The
   released code uses LibRaw's default rendering instead; this project uses the same pipeline as its
   training data (:mod:`rawsr.degradation.isp`), so training and inference references match.
3. The network runs on tiles of the checkpoint's training crop (:mod:`rawsr.tiling`), streamed by rows: the
   full-size HR image is never held; output rows go straight to a 16-bit PNG or TIFF and to a small 8-bit
   preview, both written atomically.

A file that cannot be read is reported as ``skipped <path>: <reason>`` and the others go on; the exit code
is 1 when any file was skipped, 2 for a bad config.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from rawsr.camera import RAW_EXTENSIONS, check_adjust_maximum
from rawsr.config import ConfigError, config_dir, require, require_choice, require_positive_int

if TYPE_CHECKING:
    import numpy as np
    import torch

    from rawsr.tiling import TileFn

log = logging.getLogger("rawsr.predict")
T = TypeVar("T")


OUTPUT_SUFFIXES = {"png": ".png", "tiff": ".tif"}
PRECISIONS = ("32", "bf16")
REFERENCE_BAND_PIXELS = 1 << 18
"""LR pixels rendered at a time by :func:`render_reference` (its float temporaries take about 180 bytes per
pixel, so about 45 MiB whatever the image size)."""
DEMOSAIC_HALO = 4
"""Extra LR rows above and below each band; bilinear demosaicing reads one row either side."""


@dataclass
class PredictReport:
    """What a prediction run did: outputs written per input, and the reason each skipped input failed."""

    written: dict[Path, list[Path]] = field(default_factory=dict)
    skipped: dict[Path, str] = field(default_factory=dict)


def find_inputs(path: str | Path) -> list[Path]:
    """The raw files to process: ``path`` itself, or the files of folder ``path`` (not recursive) whose
    suffix is in :data:`RAW_EXTENSIONS` (case-insensitive), sorted by name.

    Raises:
        ConfigError: naming ``input`` when the path does not exist or the folder holds no raw file.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(f"config key 'input': {path} is neither a raw file nor a folder")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in RAW_EXTENSIONS)
    if not files:
        raise ConfigError(
            f"config key 'input': the folder {path} holds no camera raw file (suffixes {sorted(RAW_EXTENSIONS)})"
        )
    return files


def output_stems(inputs: list[Path]) -> dict[Path, str]:
    """Output name stem per input: its file stem, or ``stem_ext`` where two inputs share a stem."""
    counts: dict[str, int] = {}
    for p in inputs:
        counts[p.stem] = counts.get(p.stem, 0) + 1
    return {p: p.stem if counts[p.stem] == 1 else f"{p.stem}_{p.suffix[1:].lower()}" for p in inputs}


def trim_even(mosaic: np.ndarray) -> np.ndarray:
    """Drop the last row and/or column of ``mosaic (H, W)`` so that both sides are even (a view)."""
    h, w = mosaic.shape
    return mosaic[: h - h % 2, : w - w % 2]


def render_reference(
    mosaic: np.ndarray,
    wb: np.ndarray,
    ccm: np.ndarray,
    device: torch.device | str = "cpu",
    band_pixels: int = REFERENCE_BAND_PIXELS,
) -> np.ndarray:
    """The camera rendering of a mosaic, quantised to 8 bits, computed in bands of rows.

    Args:
        mosaic: ``(H, W)`` float RGGB mosaic in [0, 1], H and W even.
        wb: ``(3,)`` white-balance gains (R, G, B).
        ccm: ``(3, 3)`` camera RGB -> linear sRGB.
        device: where the rendering runs; the result is on the CPU.
        band_pixels: about how many LR pixels to render per step (whole even numbers of rows, at least 2);
            only that many pixels of float data exist at a time.

    Returns:
        ``(H, W, 3)`` uint8 sRGB: ``round(255 * render_srgb(demosaic(mosaic), wb, ccm))``.
    """
    import numpy as np
    import torch

    from rawsr.degradation.isp import demosaic, render_srgb

    h, w = mosaic.shape
    out = np.empty((h, w, 3), dtype=np.uint8)
    wb_t = torch.as_tensor(np.asarray(wb, dtype=np.float32), device=device)[None]
    ccm_t = torch.as_tensor(np.asarray(ccm, dtype=np.float32), device=device)[None]
    halo = DEMOSAIC_HALO
    band = max(2, band_pixels // w // 2 * 2)
    for y0 in range(0, h, band):
        y1 = min(h, y0 + band)
        top, bottom = max(0, y0 - halo), min(h, y1 + halo)
        chunk = torch.as_tensor(np.ascontiguousarray(mosaic[top:bottom], dtype=np.float32), device=device)
        srgb = render_srgb(demosaic(chunk[None, None]), wb_t, ccm_t)[0, :, y0 - top : y1 - top]
        out[y0:y1] = srgb.mul(255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return out


def make_tile_fn(net: torch.nn.Module, device: torch.device, precision: str, wb: np.ndarray, ccm: np.ndarray) -> TileFn:
    """Wrap the network for :mod:`rawsr.tiling`: ``raw (N, 1, T, T)`` float and ``ref (N, 3, T, T)`` uint8
    tiles on any device -> ``srgb (N, 3, sT, sT)`` float32 on ``device``. ``precision="bf16"`` runs the
    network under bfloat16 autocast; the camera ``wb (3,)`` and ``ccm (3, 3)`` are passed to every tile
    (used by the fixed-pipeline ablation)."""
    import torch

    wb_t = torch.as_tensor(wb, dtype=torch.float32, device=device)[None]
    ccm_t = torch.as_tensor(ccm, dtype=torch.float32, device=device)[None]

    def fn(raw: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        n = raw.shape[0]
        raw = raw.to(device=device, dtype=torch.float32, non_blocking=True)
        ref = ref.to(device=device, non_blocking=True).to(torch.float32) / 255.0
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"),
        ):
            out = net(raw, ref, wb=wb_t.expand(n, 3), ccm=ccm_t.expand(n, 3, 3))["srgb"]
        return out.float()

    return fn


def to_uint16(rows: torch.Tensor) -> np.ndarray:
    """``(1, 3, h, W)`` float in [0, 1] on any device -> ``(h, W, 3)`` uint16 numpy array (rounded).

    Raises:
        ValueError: the rows hold NaN (a broken checkpoint), which no 16-bit value can stand for.
    """
    import torch

    if torch.isnan(rows).any():
        raise ValueError("the network produced NaN values (is the checkpoint broken?)")
    return rows[0].mul(65535.0).round_().to(torch.uint16).permute(1, 2, 0).contiguous().cpu().numpy()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    Lets the network compute the next output rows while the current ones are compressed and written (both
    release the GIL). An exception in the producer is re-raised in the consumer; when the consumer stops
    early, the producer stops after its current item.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("done", None))
        except BaseException as error:  # handed to the consumer
            put(("error", error))

    worker = threading.Thread(target=produce, name="rawsr-predict-producer", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        worker.join()


def _inference(items: Iterator[T]) -> Iterator[T]:
    """Advance ``items`` under ``torch.inference_mode`` (thread-local: it holds in whichever thread iterates)."""
    import torch

    with torch.inference_mode():
        yield from items


def _progress(total: int, desc: str, unit: str, enabled: bool, leave: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=leave, dynamic_ncols=True)


def _counted(blocks: Iterator[np.ndarray], bar) -> Iterator[np.ndarray]:
    for block in blocks:
        yield block
        bar.update(block.shape[0])


def predict_file(
    path: Path, stem: str, model: Any, cfg: DictConfig, device: torch.device, output_dir: Path
) -> list[Path]:
    """Super-resolve one raw file into ``output_dir``; return the files written.

    Writes ``<stem>_x<s>.png`` (or ``.tif``), 16-bit RGB of size ``scale`` x the even-trimmed mosaic, and,
    as configured, ``<stem>_x<s>_preview.jpg`` and ``<stem>_x<s>_reference.png`` (the 8-bit LR reference).

    Raises:
        rawsr.camera.RawReadError: the file is not a readable Bayer raw.
    """
    import torch

    from rawsr.camera import read_raw
    from rawsr.imageio import Preview, write_image, write_preview, write_rows
    from rawsr.tiling import tiled_rows

    image = read_raw(path, adjust_maximum=cfg.adjust_maximum)
    mosaic = trim_even(image.mosaic)
    h, w = mosaic.shape
    if h < 2 or w < 2:
        raise ValueError(f"{path}: the mosaic is too small ({image.mosaic.shape})")
    ref = render_reference(mosaic, image.wb, image.ccm, device)
    scale, name = model.scale, f"{stem}_x{model.scale}"
    written = []
    if cfg.save_reference:
        written.append(write_image(output_dir / f"{name}_reference.png", ref))

    raw_t = torch.from_numpy(mosaic)[None, None]
    ref_t = torch.from_numpy(ref).permute(2, 0, 1)[None]
    fn = make_tile_fn(model.net, device, str(cfg.precision), image.wb, image.ccm)
    blocks = tiled_rows(fn, raw_t, ref_t, model.tile, scale, overlap=cfg.overlap, blend=cfg.blend, batch=cfg.tile_batch)
    produced = prefetch(_inference(to_uint16(b) for b in blocks))
    preview = Preview(scale * h, scale * w, 3, cfg.preview_max_side) if cfg.preview else None
    rows = produced if preview is None else preview.tap(produced)
    target = output_dir / f"{name}{OUTPUT_SUFFIXES[cfg.format]}"
    with closing(produced), _progress(scale * h, path.name, "row", cfg.progress, leave=False) as bar:
        out = write_rows(target, _counted(rows, bar), scale * h, scale * w, 3, "uint16", cfg.compress_level)
    written.insert(0, out)
    if preview is not None:
        written.append(write_preview(output_dir / f"{name}_preview.jpg", preview.image()))
    return written


def check_config(cfg: DictConfig) -> None:
    """Refuse missing or out-of-range keys with a :class:`ConfigError` naming the key."""
    for key in ("ckpt_path", "input"):
        if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, ""):
            raise ConfigError(f"config key '{key}' is not set: give {key}=PATH")
    require_choice(cfg.format, "format", OUTPUT_SUFFIXES)
    require_choice(cfg.blend, "blend", ("linear", "mean"))
    require_choice(str(cfg.precision), "precision", PRECISIONS)
    device = str(cfg.device)
    require(device in ("auto", "cpu") or device.startswith("cuda"), "device", "auto, cpu, cuda or cuda:N", device)
    require_positive_int(cfg.tile_batch, "tile_batch")
    require_positive_int(cfg.preview_max_side, "preview_max_side")
    check_adjust_maximum(cfg.adjust_maximum, "adjust_maximum")
    overlap = cfg.overlap
    require(overlap is None or (isinstance(overlap, int) and overlap >= 0), "overlap", "null or an int >= 0", overlap)
    require(
        isinstance(cfg.compress_level, int) and 0 <= cfg.compress_level <= 9,
        "compress_level",
        "0..9",
        cfg.compress_level,
    )


def check_tiling(tile: int, overlap: int | None, multiple: int) -> None:
    """Refuse a checkpoint tile the network cannot take, or an ``overlap`` that would leave gaps or put tile
    origins on odd pixels (which would swap the colours of the mosaic)."""
    if tile % multiple:
        raise ConfigError(f"config key 'ckpt_path': the checkpoint's tile {tile} is not a multiple of {multiple}")
    if overlap is not None and (overlap >= tile or (tile - overlap) % 2):
        raise ConfigError(
            f"config key 'overlap': expected null or an overlap below the checkpoint's tile {tile} with "
            f"tile - overlap even, got {overlap}"
        )


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a CUDA device that is absent -> :class:`ConfigError`."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'device': {name} asked for, but no CUDA device is available")
    return torch.device(name)


def predict(cfg: DictConfig) -> PredictReport:
    """Run prediction as configured (see ``configs/predict.yaml``); return what was written and skipped.

    Raises:
        ConfigError: a bad config value, a missing checkpoint or input path.
    """
    try:
        check_config(cfg)
    except MissingMandatoryValue as error:
        raise ConfigError(str(error)) from None
    inputs = find_inputs(cfg.input)
    stems = output_stems(inputs)
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise ConfigError(f"config key 'ckpt_path': no checkpoint file at {ckpt}")

    import torch
    from tqdm.auto import tqdm

    from rawsr.camera import RawReadError
    from rawsr.module import load_checkpoint

    device = resolve_device(str(cfg.device))
    try:
        model = load_checkpoint(ckpt, map_location="cpu")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    check_tiling(model.tile, cfg.overlap, getattr(model.net, "SIZE_MULTIPLE", 4))
    model.net.to(device).eval()
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    log.info(
        "rawsr.predict: %d file(s), x%d, tile %d, blend %s, device %s, precision %s -> %s",
        len(inputs),
        model.scale,
        model.tile,
        cfg.blend,
        device,
        cfg.precision,
        output_dir,
    )
    report = PredictReport()
    with torch.inference_mode(), _progress(len(inputs), "files", "file", cfg.progress and len(inputs) > 1, True) as bar:
        for path in inputs:
            try:
                report.written[path] = predict_file(path, stems[path], model, cfg, device, output_dir)
            except (RawReadError, ValueError, OSError) as error:
                report.skipped[path] = error.reason if isinstance(error, RawReadError) else str(error)
                tqdm.write(f"skipped {path}: {report.skipped[path]}", file=sys.stdout)
            bar.update(1)
    return report


def summarise(report: PredictReport) -> str:
    """One line per output and per skipped input, then the counts."""
    lines = [f"wrote {out}" for outputs in report.written.values() for out in outputs]
    lines += [f"skipped {path}: {reason}" for path, reason in report.skipped.items()]
    lines.append(f"rawsr.predict: {len(report.written)} done, {len(report.skipped)} skipped")
    return "\n".join(lines)


def run(cfg: DictConfig) -> int:
    """Predict, log the summary and return the exit code: 0, 1 if any input was skipped, 2 for a bad config."""
    try:
        report = predict(cfg)
    except ConfigError as error:
        log.error("%s", error)
        return 2
    log.info("%s", summarise(report))
    return 1 if report.skipped else 0


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
def main(cfg: DictConfig) -> None:
    code = run(cfg)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
