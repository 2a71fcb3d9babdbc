"""``python -m rawsr.prepare``: decode raw files into the HR linear cache, or write a fixed validation set.

``task=cache input_dir=RAWS cache_dir=CACHE workers=N`` decodes every raw file below ``input_dir`` once (in
parallel, resumably) with :func:`rawsr.data.raw_folder.prepare_cache`; unreadable files are listed at the end
and make the exit status 1. ``task=valset valset.out_dir=DIR`` degrades ``valset.num_images`` images of a source
(the ``raw_folder`` cache's held-out split, or the embedded demo photographs) once with the configured
``degradation`` preset, image ``i`` with seed ``valset.seed + i``, and writes them in the released dataset's layout
(:func:`rawsr.data.release.write_release_sample`), which :class:`rawsr.data.release.ReleaseDataset` then reads. The
colour references are JPEG-compressed once, by the simulation (its ``reference.jpeg`` range), as training references
are, and stored losslessly (``ISP/<name>.png``): they read back exactly as simulated.
Config errors exit with status 2 and one message naming the key (:func:`rawsr.cli.run_entry`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from rawsr.cli import check_output_folder, launch, resolve_device, run_entry
from rawsr.config import ConfigError, config_dir, instantiate, require, require_choice, require_positive_int

log = logging.getLogger("rawsr.prepare")


def _required(cfg: DictConfig, key: str, example: str = "/path") -> Any:
    """``cfg[key]`` for a dotted ``key``, refusing a value left at ``???`` (the message suggests ``key=example``)."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if parent is None or leaf not in parent or OmegaConf.is_missing(parent, leaf):
        raise ConfigError(f"config key '{key}' is not set: give it on the command line, e.g. {key}={example}")
    return parent[leaf]


def run_cache(cfg: DictConfig) -> int:
    """``task=cache``: return 0 when every raw file is cached, 1 when some could not be read."""
    from rawsr.camera import RAW_EXTENSIONS
    from rawsr.data.raw_folder import CacheRecipe, find_raw_files, prepare_cache

    input_dir = Path(_required(cfg, "input_dir"))
    cache_dir = check_output_folder(_required(cfg, "cache_dir"), "cache_dir")
    require(input_dir.is_dir(), "input_dir", "an existing folder of raw files", str(input_dir))
    extensions = tuple(cfg.extensions) if cfg.get("extensions") else RAW_EXTENSIONS
    files = find_raw_files(input_dir, extensions)
    require(len(files) > 0, "input_dir", f"a folder holding raw files ({' '.join(extensions)})", str(input_dir))
    recipe = CacheRecipe(**OmegaConf.to_container(cfg.recipe))
    report = prepare_cache(files, cache_dir, recipe, workers=cfg.workers, progress=cfg.progress)
    log.info(
        "cache %s: %d written, %d already valid, %d unreadable (of %d raw files)",
        cache_dir,
        len(report.written),
        len(report.skipped),
        len(report.failed),
        len(files),
    )
    for path, reason in report.failed:
        log.error("skipped %s: %s", path, reason)
    return 1 if report.failed else 0


def _valset_source(cfg: DictConfig):
    """The dataset whose items are degraded: ``(dataset, names)``."""
    vs = cfg.valset
    if vs.source == "demo":
        from rawsr.data.demo import DemoImages

        require(vs.val_crops is not None, "valset.val_crops", "an LR crop side for the demo photographs", None)
        dataset = DemoImages(split="val", scale=vs.scale, crop=vs.crop, val_crops=vs.val_crops, key="valset")
        return dataset, ["demo"] * len(dataset)
    from rawsr.data.raw_folder import RawFolderDataset

    dataset = RawFolderDataset(
        scale=vs.scale,
        crop=vs.crop,
        cache_dir=_required(cfg, "cache_dir"),
        root=vs.root,
        split="val",
        val_fraction=vs.val_fraction,
        val_files=list(vs.val_files) if vs.val_files is not None else None,
        val_crops=vs.val_crops,
        key="valset",
        cache_key="cache_dir",
    )
    return dataset, [Path(e["source"]).stem for e in dataset.entries]


def run_valset(cfg: DictConfig) -> int:
    """``task=valset``: degrade a fixed set of images once and write it in the release layout; return 0."""
    import torch
    from tqdm.auto import tqdm

    from rawsr.data.release import LR_DIR, ReleaseDataset, write_release_sample

    vs = cfg.valset
    out_dir = check_output_folder(_required(cfg, "valset.out_dir"), "valset.out_dir")
    require_choice(vs.source, "valset.source", ("raw_folder", "demo"))
    require_positive_int(vs.scale, "valset.scale")
    require_positive_int(vs.crop, "valset.crop", even=True)
    require(
        not any((out_dir / LR_DIR).glob("*.npy")),
        "valset.out_dir",
        "a new or empty folder (it already holds a dataset: choose another or remove it)",
        str(out_dir),
    )
    if cfg.get("degradation") is None:
        raise ConfigError("config key 'degradation': no simulation preset; choose one with degradation=NAME")
    device = resolve_device(vs.device, "valset.device")
    dataset, names = _valset_source(cfg)
    count = len(dataset) if vs.num_images is None else vs.num_images
    require(
        isinstance(count, int) and 0 < count <= len(dataset),
        "valset.num_images",
        f"1..{len(dataset)} (the images the {vs.source} source holds) or null",
        vs.num_images,
    )
    degradation = instantiate(cfg.degradation, scale=vs.scale)
    for i in tqdm(range(count), desc="degrading", unit="image", disable=not cfg.progress):
        item = dataset[i]
        batch = {key: item[key][None].to(device) for key in ("hr_linear", "wb", "ccm")}
        with torch.no_grad():
            out = degradation(batch, torch.tensor([vs.seed + i], dtype=torch.int64))
        write_release_sample(
            out_dir,
            f"{i:04d}_{names[i]}_",
            0,
            out["lr_raw"][0],
            out["lr_ref"][0],
            out["hr_srgb"][0],
            out["hr_linear"][0],
            jpeg_quality=None,  # compressed once already, by the simulation: stored losslessly
        )
    check = ReleaseDataset(out_dir, scale=vs.scale, crop=vs.crop, split="val", key="valset")
    log.info("validation set %s: %d images (x%d), read back with data=rawsr_release", out_dir, len(check), vs.scale)
    return 0


def prepare(cfg: DictConfig) -> int:
    """Run ``cfg.task``; return the process exit status."""
    task = _required(cfg, "task", example="cache")
    require_choice(task, "task", ("cache", "valset"))
    return run_cache(cfg) if task == "cache" else run_valset(cfg)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="prepare")
def _main(cfg: DictConfig) -> None:
    status = run_entry(lambda: prepare(cfg), log)
    if status:
        raise SystemExit(status)


def main() -> None:
    """Console entry point ``rawsr-prepare``: ``--help`` lists the keys of ``configs/prepare.yaml``."""
    launch("prepare", _main, quick_exit=True)


if __name__ == "__main__":
    main()
