"""``python -m rawsr.predict ckpt_path=model.ckpt input=PHOTO_OR_FOLDER``: super-resolve camera raw files.

For each raw file:

1. :func:`rawsr.camera.read_raw` gives the black-subtracted, white-normalised mosaic, aligned to RGGB, with
   the camera's white balance and colour matrix. The mosaic is trimmed to even height and width at the
   bottom/right (at most one row and one column), which keeps the 2x2 colour-filter phase; the output is
   ``scale`` times that size.
2. The colour reference at LR is the camera's own rendering of the same mosaic: bilinear demosaic, camera
   white-balance gains, colour matrix, sRGB OETF, quantised to 8 bits (:func:`render_reference`). The
   released code uses LibRaw's default rendering instead; this project uses the same pipeline as its
   training data (:mod:`rawsr.imaging`), so training and inference references match.
3. The network runs on tiles of the checkpoint's training crop (:mod:`rawsr.inference.tiling`), streamed by rows,
   on the image mirror-extended by ``border_pad`` LR pixels on every side (cropped from the output: the network
   darkens the outermost pixels of its input), and with ``tta=true`` also on the flipped and transposed tiles,
   averaged (the self-ensemble, eight times the network time). The full-size HR image is never held; output rows
   go straight to a 16-bit PNG or TIFF and to a small 8-bit preview, both written atomically. ``format=dng`` (or a
   list, ``format=[png,dng]``, from one network run) also writes the network's HR linear output (camera RGB, before
   the colour branch) as a linear DNG for raw developers.
   Every output carries the source's orientation, camera and capture time, and how it was made.
4. ``backend=onnxruntime`` runs a model exported by ``python -m rawsr.export`` (``model_path=MODEL.onnx``) instead.

A file that cannot be read is reported as ``skipped <path>: <reason>`` and the others go on; the exit code
is 1 when any file was skipped, 2 for a bad config.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from rawsr.cli import EXIT_SKIPPED, check_output_folder, launch, resolve_device, run_entry
from rawsr.config import (
    ConfigError,
    config_dir,
    require,
    require_bool,
    require_choice,
    require_even_int,
    require_positive_int,
)

if TYPE_CHECKING:
    import numpy as np
    import torch


log = logging.getLogger("rawsr.predict")
T = TypeVar("T")


OUTPUT_SUFFIXES = {"png": ".png", "tiff": ".tif", "dng": ".dng"}
BACKENDS = ("pytorch", "onnxruntime")


@dataclass
class PredictReport:
    """What a prediction run did: outputs written per input, and the reason each skipped input failed."""

    written: dict[Path, list[Path]] = field(default_factory=dict)
    skipped: dict[Path, str] = field(default_factory=dict)


def find_inputs(path: str | Path) -> list[Path]:
    """The raw files to process: ``path`` itself, or the files of folder ``path`` (not recursive) whose
    suffix is in :data:`rawsr.camera.RAW_EXTENSIONS` (case-insensitive), sorted by name.

    Raises:
        ConfigError: naming ``input`` when the path does not exist or the folder holds no raw file.
    """
    from rawsr.camera import RAW_EXTENSIONS

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
        bar.update(block["srgb"].shape[0] if isinstance(block, dict) else block.shape[0])


def output_formats(value: Any) -> list[str]:
    """The formats a ``format`` key asks for: one name or a list of :data:`OUTPUT_SUFFIXES` keys, in order, once each.

    Raises:
        ConfigError: naming ``format`` for an unknown or empty value.
    """
    listed = OmegaConf.is_list(value) or isinstance(value, list)
    names = [value] if isinstance(value, str) else list(value) if listed else []
    require(bool(names), "format", f"one of {list(OUTPUT_SUFFIXES)} or a list of them", value)
    for name in names:
        require_choice(name, "format", OUTPUT_SUFFIXES)
    return list(dict.fromkeys(names))


def check_dng_source(model: Any, formats: list[str], ckpt: Path) -> None:
    """Refuse ``format=dng`` for a checkpoint whose linear output was never trained to be camera RGB.

    The DNG holds the network's linear output ``X_lin``. The paper's recipe supervises only the sRGB output
    (``model.linear_loss_weight=0``), so with a colour branch ``X_lin`` is whatever helps the branch and a raw
    developer renders it in false colours. A network without colour branch renders ``X_lin`` with the camera
    pipeline, and a linear loss supervises it directly: either makes a DNG worth developing.
    """
    if "dng" not in formats or getattr(model.net, "color", None) is None:
        return
    if float(model.hparams.get("linear_loss_weight", 0.0)) > 0:
        return
    raise ConfigError(
        f"config key 'format': dng writes the network's linear output, which {ckpt} never learned to match camera "
        "RGB (it was trained with model.linear_loss_weight=0, the paper's recipe, with a colour branch); train with "
        "model.linear_loss_weight=1 (or ablation=no_color_branch) for DNG output, or choose format=png|tiff"
    )


def _write_dng(write, target: Path, height: int, width: int, tags: list, rows: Iterator[np.ndarray]) -> Path:
    return write(target, rows, height, width, tags)


def _write_srgb(write, target: Path, size: tuple, metadata: Any, rows: Iterator[np.ndarray]) -> Path:
    return write(target, rows, *size, metadata=metadata)


def _tap_srgb(preview, items: Iterator[dict]) -> Iterator[dict]:
    for item in items:
        preview.add(item["srgb"])
        yield item


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

    from rawsr import __version__
    from rawsr.camera import read_raw
    from rawsr.camera.dng import write_linear_dng
    from rawsr.inference import prefetch, render_reference, tile_function, tiled_rows, to_uint16
    from rawsr.inference.outputs import dng_tags, fan_out, output_metadata, split_rows
    from rawsr.writers import Preview, write_image, write_preview, write_rows

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
    formats = output_formats(cfg.format)
    linear = "dng" in formats
    if hasattr(model, "tile_function"):  # an exported model (rawsr.inference.onnx_backend)
        fn = model.tile_function(linear=linear)
    else:
        fn = tile_function(model.net, image.wb, image.ccm, device=device, precision=str(cfg.precision), linear=linear)
    blocks = tiled_rows(
        fn,
        raw_t,
        ref_t,
        model.tile,
        scale,
        resolve_overlap(cfg.overlap, model.tile),
        cfg.blend,
        cfg.tile_batch,
        channels=6 if linear else 3,
        pad=cfg.border_pad,
        tta=cfg.tta,
    )
    produced = prefetch(_inference(split_rows(to_uint16(b)) for b in blocks))
    preview = Preview(scale * h, scale * w, 3, cfg.preview_max_side) if cfg.preview else None
    rows = produced if preview is None else _tap_srgb(preview, produced)
    source = model.source if hasattr(model, "source") else cfg.ckpt_path  # an exported model names its .onnx
    meta = output_metadata(image, scale, source, f"rawsr {__version__}")
    sinks = []
    for fmt in formats:
        target = output_dir / f"{name}{OUTPUT_SUFFIXES[fmt]}"
        if fmt == "dng":
            tags = dng_tags(image, meta)
            sinks.append(("linear", partial(_write_dng, write_linear_dng, target, scale * h, scale * w, tags)))
        else:
            size = (scale * h, scale * w, 3, "uint16", cfg.compress_level)
            sinks.append(("srgb", partial(_write_srgb, write_rows, target, size, meta)))
    with closing(produced), _progress(scale * h, path.name, "row", cfg.progress, leave=False) as bar:
        outs = fan_out(_counted(rows, bar), sinks)
    written[:0] = outs
    if preview is not None:
        written.append(write_preview(output_dir / f"{name}_preview.jpg", preview.image(), metadata=meta))
    return written


def check_config(cfg: DictConfig) -> None:
    """Refuse missing or out-of-range keys with a :class:`ConfigError` naming the key."""
    from rawsr.camera import check_adjust_maximum
    from rawsr.inference import BLENDS, PRECISIONS
    from rawsr.inference.accelerate import MEMORY_FORMATS

    exported = cfg.get("model_path") not in (None, "")
    for key in ("input",) if exported else ("ckpt_path", "input"):
        if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, ""):
            raise ConfigError(f"config key '{key}' is not set: give {key}=PATH")
    output_formats(cfg.format)
    require_choice(cfg.get("backend", "pytorch"), "backend", BACKENDS)
    require_choice(cfg.blend, "blend", BLENDS)
    require_choice(str(cfg.precision), "precision", PRECISIONS)
    require_choice(cfg.get("memory_format", "channels_last"), "memory_format", MEMORY_FORMATS)
    require_bool(cfg.get("compile", False), "compile")
    require_positive_int(cfg.tile_batch, "tile_batch")
    require_positive_int(cfg.preview_max_side, "preview_max_side")
    require_even_int(cfg.border_pad, "border_pad")
    require_bool(cfg.tta, "tta")
    check_adjust_maximum(cfg.adjust_maximum, "adjust_maximum")
    overlap = cfg.overlap
    require(
        overlap in (None, "auto") or (isinstance(overlap, int) and not isinstance(overlap, bool) and overlap >= 0),
        "overlap",
        "auto, null or an int >= 0",
        overlap,
    )
    require_bool(cfg.get("retain_memory", True), "retain_memory")
    require(
        isinstance(cfg.compress_level, int) and 0 <= cfg.compress_level <= 9,
        "compress_level",
        "0..9",
        cfg.compress_level,
    )


def resolve_overlap(value: int | str | None, tile: int) -> int:
    """The LR overlap of the ``overlap`` key for a checkpoint's ``tile``: ``auto`` is
    :func:`rawsr.inference.tiling.feathered_overlap` (a sixteenth of the tile), ``null`` half the tile (the paper's
    stride), an int itself."""
    from rawsr.inference.tiling import feathered_overlap

    if value == "auto":
        return feathered_overlap(tile)
    return tile // 2 if value is None else value


def check_tiling(tile: int, overlap: int | str | None, multiple: int | None = None) -> None:
    """Refuse a checkpoint tile the network cannot take (not a multiple of ``multiple``, by default
    :attr:`rawsr.model.RawSRNet.SIZE_MULTIPLE`), or an ``overlap`` that would leave gaps or put tile origins on odd
    pixels (which would swap the colours of the mosaic)."""
    from rawsr.model import RawSRNet

    multiple = RawSRNet.SIZE_MULTIPLE if multiple is None else multiple
    if tile % multiple:
        raise ConfigError(f"config key 'ckpt_path': the checkpoint's tile {tile} is not a multiple of {multiple}")
    resolved = resolve_overlap(overlap, tile)
    if resolved >= tile or (tile - resolved) % 2:
        raise ConfigError(
            f"config key 'overlap': expected auto, null or an overlap below the checkpoint's tile {tile} with "
            f"tile - overlap even, got {overlap}"
        )


def predict(cfg: DictConfig) -> PredictReport:
    """Run prediction as configured (see ``configs/predict.yaml``); return what was written and skipped.

    Raises:
        ConfigError: a bad config value, a missing checkpoint or input path.
    """
    try:
        check_config(cfg)
    except MissingMandatoryValue as error:
        raise ConfigError(str(error)) from None
    device = resolve_device(cfg.device, "device")
    inputs = find_inputs(cfg.input)
    stems = output_stems(inputs)
    exported = cfg.get("model_path") not in (None, "")
    ckpt = Path(cfg.model_path if exported else cfg.ckpt_path)
    if not ckpt.is_file():
        key = "model_path" if exported else "ckpt_path"
        raise ConfigError(f"config key '{key}': no {'model' if exported else 'checkpoint'} file at {ckpt}")

    import torch
    from tqdm.auto import tqdm

    from rawsr.camera import RawReadError
    from rawsr.inference.accelerate import prepare_network, retain_freed_memory
    from rawsr.training import load_checkpoint

    memory_format, compile_net = cfg.get("memory_format", "channels_last"), cfg.get("compile", False)
    if cfg.get("backend", "pytorch") == "onnxruntime":
        from rawsr.inference.onnx_backend import load_exported

        model = load_exported(ckpt, "model_path" if exported else "ckpt_path", device)
        check_tiling(model.tile, cfg.overlap, model.size_multiple)
    else:
        try:
            model = load_checkpoint(ckpt, map_location="cpu")
        except ValueError as error:
            raise ConfigError(str(error)) from None
        check_tiling(model.tile, cfg.overlap)
        check_dng_source(model, output_formats(cfg.format), ckpt)
        model.net = prepare_network(model.net.to(device), memory_format, compile_net)
    output_dir = check_output_folder(cfg.output_dir, "output_dir")
    output_dir.mkdir(parents=True, exist_ok=True)
    log.info(
        "rawsr.predict: %d file(s), x%d, tile %d, overlap %d, blend %s, border_pad %d, tta %s, device %s, "
        "precision %s, %s%s -> %s",
        len(inputs),
        model.scale,
        model.tile,
        resolve_overlap(cfg.overlap, model.tile),
        cfg.blend,
        cfg.border_pad,
        cfg.tta,
        device,
        cfg.precision,
        memory_format,
        ", compiled" if compile_net else "",
        output_dir,
    )
    report = PredictReport()
    files_bar = _progress(len(inputs), "files", "file", cfg.progress and len(inputs) > 1, True)
    with torch.inference_mode(), retain_freed_memory(cfg.get("retain_memory", True)), files_bar as bar:
        for path in inputs:
            try:
                report.written[path] = predict_file(path, stems[path], model, cfg, device, output_dir)
            except (RawReadError, ValueError, OSError) as error:
                report.skipped[path] = error.reason if isinstance(error, RawReadError) else str(error)
                tqdm.write(f"skipped {path}: {report.skipped[path]}", file=sys.stdout)
            bar.update(1)
    return report


def summarise(report: PredictReport) -> str:
    """One line per output, then the counts (each skipped input was reported once already, as it happened)."""
    lines = [f"wrote {out}" for outputs in report.written.values() for out in outputs]
    lines.append(f"rawsr.predict: {len(report.written)} done, {len(report.skipped)} skipped")
    return "\n".join(lines)


def _predict_and_summarise(cfg: DictConfig) -> int:
    report = predict(cfg)
    log.info("%s", summarise(report))
    return EXIT_SKIPPED if report.skipped else 0


def run(cfg: DictConfig) -> int:
    """Predict, log the summary and return the exit code (:mod:`rawsr.cli`): 0, 1 if any input was skipped, 2 for a
    bad config."""
    return run_entry(lambda: _predict_and_summarise(cfg), log)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
def _main(cfg: DictConfig) -> None:
    code = run(cfg)
    if code:
        raise SystemExit(code)


def main() -> None:
    """Console entry point ``rawsr-predict``: ``--help`` lists the keys of ``configs/predict.yaml``."""
    launch("predict", _main, quick_exit=True)


if __name__ == "__main__":
    main()
