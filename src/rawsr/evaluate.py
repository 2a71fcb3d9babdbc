"""``python -m rawsr.evaluate ckpt_path=...``: score checkpoints on the validation images.

The paper's protocol: inference in overlapping tiles of the training crop with half-tile stride, overlaps
averaged, output clipped to [0, 1]; PSNR over full RGB with no border crop, SSIM (11x11 Gaussian, sigma 1.5),
each averaged over images. ``protocol=basicsr`` scores the Y channel with a border crop of the scale instead.
Every table has a ``bicubic`` row (the LR reference upsampled) scored on the same images. ``tta=true`` (the
self-ensemble over the eight flips and transposes) and ``border_pad`` (the images' borders mirrored into the tiles)
are this project's options, off by default so that the tables follow the paper's protocol.

A source of HR linear images (``data=demo``, ``data=raw_folder``) is degraded with the simulation the checkpoint was
trained with (its ``degradation`` hyper-parameter) unless ``degradation=NAME`` names a preset; a checkpoint that
records none (rawsr 0.1.0) gets the ``paper`` preset, with a logged line.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from rawsr.cli import check_data_paths, check_output_folder, launch, resolve_device, run_entry
from rawsr.config import ConfigError, config_dir, instantiate, require_bool, require_choice, require_even_int

if TYPE_CHECKING:
    import torch

log = logging.getLogger("rawsr.evaluate")

PROTOCOLS = ("paper", "basicsr")
#: The simulation preset for a checkpoint that records none (rawsr 0.1.0 checkpoints).
FALLBACK_DEGRADATION = "paper"


def luma_bt601(rgb: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` sRGB in [0, 1] -> ``(B, 1, H, W)`` studio-range Y in [16/255, 235/255].

    The convention of BasicSR and MATLAB's ``rgb2ycbcr``: ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255``.
    """
    weights = rgb.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return (16.0 + (rgb * weights).sum(1, keepdim=True)) / 255.0


def score(
    prediction: torch.Tensor, target: torch.Tensor, scale: int, protocol: str = "paper"
) -> list[dict[str, float]]:
    """PSNR and SSIM of each image pair of ``(N, 3, H, W)`` in [0, 1] under ``protocol``: ``N`` dicts."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    prediction, target = prediction.float().clamp(0, 1), target.float().clamp(0, 1)
    if protocol == "basicsr":
        prediction, target = luma_bt601(prediction), luma_bt601(target)
        crop = (slice(None), slice(None), slice(scale, -scale), slice(scale, -scale))
        prediction, target = prediction[crop], target[crop]
    psnr = peak_signal_noise_ratio(prediction, target, data_range=1.0, dim=(1, 2, 3), reduction="none")
    ssim = structural_similarity_index_measure(prediction, target, data_range=1.0, reduction="none")
    return [{"psnr": float(p), "ssim": float(s)} for p, s in zip(psnr.reshape(-1), ssim.reshape(-1), strict=True)]


def _write_csv(path: Path, rows: Sequence[dict], fields: Sequence[str]) -> None:
    """Write ``rows`` to ``path`` whole or not at all."""
    from rawsr.writers import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)


def _save_png(path: Path, image: torch.Tensor) -> None:
    """Write ``image (3, H, W)`` in [0, 1] as an 8-bit PNG, atomically."""
    from rawsr.writers import write_image

    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, (image.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy())


def _model_name(path: str, taken: Iterable[str]) -> str:
    """A short row label for a checkpoint: its run folder and file name, unique in ``taken``."""
    p = Path(path)
    name = f"{p.parent.parent.name}/{p.stem}" if p.parent.name == "checkpoints" else p.stem
    base, i = name, 1
    while name in taken:
        i += 1
        name = f"{base}#{i}"
    return name


def degradation_config(cfg: DictConfig, module: Any) -> DictConfig:
    """The simulation to degrade HR linear sources with: ``cfg.degradation`` when given (``degradation=NAME``), else
    the checkpoint's ``degradation`` hyper-parameter, else the :data:`FALLBACK_DEGRADATION` preset (logged)."""
    if cfg.get("degradation") is not None:
        return cfg.degradation
    recorded = module.hparams.get("degradation")
    if isinstance(recorded, Mapping):
        spec = OmegaConf.create(dict(recorded))
        if "_target_" not in spec:
            spec._target_ = "rawsr.degradation.Degradation"
        return spec
    log.info(
        "the checkpoint records no degradation: HR linear sources are degraded with the '%s' preset "
        "(choose another with degradation=NAME)",
        FALLBACK_DEGRADATION,
    )
    return OmegaConf.load(config_dir() / "degradation" / f"{FALLBACK_DEGRADATION}.yaml")


def build_datamodule(cfg: DictConfig, module: Any) -> Any:
    """The data module of ``cfg.data`` at the checkpoint's scale and tile, with the simulation of
    :func:`degradation_config` at that scale."""
    degradation = instantiate(degradation_config(cfg, module), scale=module.scale)
    return instantiate(
        cfg.data,
        scale=module.scale,
        crop=module.tile,
        num_workers=min(cfg.data.num_workers, 2),
        degradation=degradation,
    )


def evaluate(cfg: DictConfig) -> list[dict]:
    """Score ``cfg.ckpt_path`` (and ``cfg.compare``) plus bicubic on the validation images.

    Returns the summary rows ``{"model", "images", "psnr", "ssim"}``; writes ``per_image.csv`` and
    ``summary.csv`` to the run folder (and images when ``save_images``).
    """
    import torch
    import torch.nn.functional as F

    from rawsr.inference import BLENDS
    from rawsr.inference.accelerate import MEMORY_FORMATS, prepare_network, retain_freed_memory
    from rawsr.training import load_checkpoint

    require_choice(cfg.protocol, "protocol", PROTOCOLS)
    require_choice(cfg.blend, "blend", BLENDS)
    require_bool(cfg.tta, "tta")
    require_even_int(cfg.border_pad, "border_pad")
    memory_format = cfg.get("memory_format", "channels_last")
    require_choice(memory_format, "memory_format", MEMORY_FORMATS)
    compile_net = require_bool(cfg.get("compile", False), "compile")
    retain_memory = require_bool(cfg.get("retain_memory", True), "retain_memory")
    device = resolve_device(cfg.device, "device")
    paths = [cfg.ckpt_path, *cfg.compare]
    modules = {}
    for i, path in enumerate(paths):
        try:
            module = load_checkpoint(path, map_location=device, key="ckpt_path" if i == 0 else f"compare[{i - 1}]")
        except (FileNotFoundError, ValueError) as error:
            raise ConfigError(str(error)) from None
        module.net = prepare_network(module.net, memory_format, compile_net)
        modules[_model_name(path, modules)] = module
    first = next(iter(modules.values()))
    for name, module in modules.items():
        if (module.scale, module.tile) != (first.scale, first.tile):
            raise ConfigError(
                f"compare: {name} is x{module.scale} with tile {module.tile}, but ckpt_path is "
                f"x{first.scale} with tile {first.tile}; tables compare models on the same images"
            )

    check_data_paths(cfg.data)
    datamodule = build_datamodule(cfg, first)  # the checkpoint decides the scale, the tile and the simulation
    datamodule.setup("validate")
    out_dir = check_output_folder(cfg.paths.output_dir, "hydra.run.dir")
    per_image: list[dict] = []
    from tqdm import tqdm

    loader = datamodule.val_dataloader()
    images = len(loader.dataset) if cfg.limit is None else min(cfg.limit, len(loader.dataset))
    progress = tqdm(total=images, desc="images", disable=None)
    with retain_freed_memory(retain_memory):
        for batch in loader:
            left = images - progress.n
            if left <= 0:
                break
            batch = {k: v[:left].to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            batch = datamodule.degrade(batch, training=False)
            target = batch["hr_srgb"]
            image_ids = [int(i) for i in batch["index"]]
            outputs = {"bicubic": F.interpolate(batch["lr_ref"].float(), scale_factor=first.scale, mode="bicubic")}
            for name, module in modules.items():
                outputs[name] = module.super_resolve(batch, blend=cfg.blend, pad=cfg.border_pad, tta=cfg.tta)
            for name, output in outputs.items():
                scores = score(output, target, first.scale, cfg.protocol)
                for image_id, image, image_score in zip(image_ids, output, scores, strict=True):
                    per_image.append({"model": name, "image": image_id, **image_score})
                    if cfg.save_images:
                        folder = out_dir / "images" / name.replace("/", "_")
                        _save_png(folder / f"{image_id:04d}.png", image.clamp(0, 1))
            progress.update(len(image_ids))
    progress.close()
    if not per_image:
        raise ConfigError("limit: no validation image was scored")

    summary = []
    for name in ["bicubic", *modules]:
        rows = [r for r in per_image if r["model"] == name]
        summary.append(
            {
                "model": name,
                "images": len(rows),
                "psnr": sum(r["psnr"] for r in rows) / len(rows),
                "ssim": sum(r["ssim"] for r in rows) / len(rows),
            }
        )
    _write_csv(out_dir / "per_image.csv", per_image, ["model", "image", "psnr", "ssim"])
    _write_csv(out_dir / "summary.csv", summary, ["model", "images", "psnr", "ssim"])
    _print_table(summary, cfg.protocol, out_dir)
    return summary


def _print_table(summary: Sequence[dict], protocol: str, out_dir: Path) -> None:
    width = max(len(r["model"]) for r in summary)
    lines = [f"{'model':<{width}}  images  PSNR (dB)  SSIM    [{protocol} protocol]"]
    lines += [f"{r['model']:<{width}}  {r['images']:>6}  {r['psnr']:>9.3f}  {r['ssim']:.4f}" for r in summary]
    print("\n".join(lines))
    print(f"tables: {out_dir / 'summary.csv'} and {out_dir / 'per_image.csv'}")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def _main(cfg: DictConfig) -> None:
    status = run_entry(lambda: evaluate(cfg) and None, log)
    if status:
        raise SystemExit(status)


def main() -> None:
    """Console entry point ``rawsr-evaluate``: ``--help`` lists the keys of ``configs/evaluate.yaml``."""
    launch("evaluate", _main)


if __name__ == "__main__":
    main()
