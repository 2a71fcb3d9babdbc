"""A folder of camera raw files as HR linear ground truth: a decode-once cache and the dataset that crops it.

The paper makes its HR linear ground truth X_lin by demosaicing a camera raw file in linear camera space and
downsampling the result to clean away demosaicing artefacts (as the paper describes); the demosaic algorithm, the factor
and the resampling kernel are not published. This project's documented defaults (not the paper's values) are:
bilinear demosaicing of the black-subtracted, white-normalised, RGGB-aligned mosaic (``kornia.color.raw_to_rgb``),
then area (box) downsampling by ``clean_factor = 2``. ``demosaic="superpixel"`` instead turns each 2x2 RGGB cell
into one pixel (R, mean of the greens, B), with no interpolation at all, and needs an even ``clean_factor``.

:func:`prepare_cache` decodes each raw file once (in parallel, resumably) into ``<cache_dir>/<name>.npy``, a
``(3, H, W)`` float16 (or uint16, scaled by 65535) linear camera-RGB image that :class:`RawFolderDataset` reads
memory-mapped (channel-first: a crop needs no transposition), with a JSON sidecar ``<name>.json`` holding the
camera's white balance and colour matrix, the source path, size and modification time, and the recipe. An entry
is rebuilt when its source file or the recipe changes. ``python -m rawsr.prepare task=cache`` is the command-line
front end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing.pool
import os
import signal
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from rawsr.camera import RAW_EXTENSIONS, RawReadError, check_adjust_maximum, read_raw
from rawsr.config import ConfigError, require, require_choice, require_positive_int
from rawsr.data.keys import shared_key, source_key
from rawsr.model import RawSRNet
from rawsr.writers import atomic_write

log = logging.getLogger(__name__)

#: Bumped whenever the cache layout changes: older entries are then rebuilt.
CACHE_FORMAT = 1
#: Cached images a dataset keeps memory-mapped per process (re-mapping costs page faults on every crop).
OPEN_ARRAYS = 32
_UINT16_SCALE = 65535.0


@dataclass(frozen=True)
class CacheRecipe:
    """How a raw file becomes HR linear ground truth (this project's defaults, not the paper's values).

    Attributes:
        demosaic: ``"bilinear"`` (kornia's bilinear Bayer interpolation) or ``"superpixel"`` (one pixel per 2x2
            cell: R, mean of the two greens, B).
        clean_factor: total downsampling from sensor pixels to HR pixels (area averaging); ``superpixel``
            already halves, so its factor must be even.
        dtype: ``"float16"`` or ``"uint16"`` (values scaled by 65535) for the cached image.
        adjust_maximum: threshold of :func:`rawsr.camera.read_raw`'s white-level adjustment (LibRaw's default
            0.75: clipped highlights reach 1 in every channel); 0 keeps each file's declared white level.
    """

    demosaic: str = "bilinear"
    clean_factor: int = 2
    dtype: str = "float16"
    adjust_maximum: float = 0.75

    def __post_init__(self) -> None:
        require_choice(self.demosaic, "recipe.demosaic", ("bilinear", "superpixel"))
        require_positive_int(self.clean_factor, "recipe.clean_factor", even=self.demosaic == "superpixel")
        require_choice(self.dtype, "recipe.dtype", ("float16", "uint16"))
        check_adjust_maximum(self.adjust_maximum, "recipe.adjust_maximum")

    def key(self) -> str:
        """A short hash of the recipe and the cache format: entries made otherwise are stale."""
        text = json.dumps({**asdict(self), "format": CACHE_FORMAT}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def find_raw_files(root: str | os.PathLike, extensions: Iterable[str] = RAW_EXTENSIONS) -> list[Path]:
    """All files below ``root`` (recursively) whose suffix is in ``extensions`` (any case), sorted."""
    suffixes = {e.lower() for e in extensions}
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def hr_linear_from_mosaic(mosaic: torch.Tensor, demosaic: str = "bilinear", clean_factor: int = 2) -> torch.Tensor:
    """Demosaic an RGGB mosaic in linear camera space and area-downsample it.

    Args:
        mosaic: ``(B, 1, H, W)`` RGGB mosaic in [0, 1], H and W even.
        demosaic: ``"bilinear"`` or ``"superpixel"`` (see :class:`CacheRecipe`).
        clean_factor: total downsampling factor from sensor pixels.

    Returns:
        ``(B, 3, H // clean_factor, W // clean_factor)`` linear camera RGB in [0, 1] (not white balanced).
    """
    from kornia.color import CFA, raw_to_rgb_2x2_downscaled

    from rawsr.imaging import demosaic as bilinear_demosaic

    if demosaic == "superpixel":  # kornia follows OpenCV's names: an RGGB sensor is CFA.BG
        rgb, factor = raw_to_rgb_2x2_downscaled(mosaic, CFA.BG), clean_factor // 2
    else:
        rgb, factor = bilinear_demosaic(mosaic), clean_factor
    rgb = F.avg_pool2d(rgb, factor) if factor > 1 else rgb
    return rgb.clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------------------- the cache


def entry_stem(source: Path) -> str:
    """Cache name of a source file: its stem plus a hash of its absolute path (same stems may live in two folders)."""
    digest = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:10]
    return f"{source.stem}-{digest}"


def _source_stamp(source: Path) -> dict[str, int]:
    stat = source.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar of a cache entry, or ``None`` when missing, unreadable or of another cache format."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == CACHE_FORMAT else None


def entry_is_valid(source: Path, cache_dir: Path, recipe: CacheRecipe) -> bool:
    """Whether ``cache_dir`` holds an entry for ``source`` made by ``recipe`` from the file as it is now."""
    stem = entry_stem(source)
    meta = read_sidecar(cache_dir / f"{stem}.json")
    if meta is None or meta.get("recipe_key") != recipe.key():
        return False
    try:
        if {"size": meta.get("size"), "mtime_ns": meta.get("mtime_ns")} != _source_stamp(source):
            return False
        image = np.load(cache_dir / f"{stem}.npy", mmap_mode="r")
    except (OSError, ValueError):
        return False
    return list(image.shape) == meta.get("shape") and str(image.dtype) == recipe.dtype


def build_entry(source: Path, cache_dir: Path, recipe: CacheRecipe) -> Path:
    """Decode ``source`` and write its cache entry; return the ``.npy`` path.

    Raises:
        RawReadError: the file cannot be read as a Bayer raw file.
    """
    try:
        stamp = _source_stamp(source)  # taken before reading: a file changed meanwhile is rebuilt next time
    except OSError as e:
        raise RawReadError(source, f"cannot be read ({e.strerror or e})") from e
    raw = read_raw(source, adjust_maximum=recipe.adjust_maximum)
    if min(raw.mosaic.shape) < 2 * recipe.clean_factor:
        raise RawReadError(source, f"mosaic {raw.mosaic.shape} too small for clean_factor={recipe.clean_factor}")
    with torch.no_grad():
        hr = hr_linear_from_mosaic(torch.from_numpy(raw.mosaic)[None, None], recipe.demosaic, recipe.clean_factor)
    image = hr[0].numpy()
    image = image.astype(np.float16) if recipe.dtype == "float16" else np.round(image * _UINT16_SCALE).astype(np.uint16)
    stem = entry_stem(source)
    meta = {
        "format": CACHE_FORMAT,
        "source": str(source.resolve()),
        **stamp,
        "recipe": asdict(recipe),
        "recipe_key": recipe.key(),
        "shape": list(image.shape),
        "dtype": recipe.dtype,
        "cfa": raw.cfa,
        "camera": raw.camera,
        "wb": raw.wb.tolist(),
        "wb_source": raw.wb_source,
        "ccm": raw.ccm.tolist(),
        "ccm_source": raw.ccm_source,
        "black_level": list(raw.black_level),
        "white_level": raw.white_level,
        "saturation": raw.saturation,
    }
    npy = cache_dir / f"{stem}.npy"
    atomic_write(npy, lambda f: np.save(f, image))
    atomic_write(cache_dir / f"{stem}.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
    return npy


def _build_or_report(source: Path, cache_dir: Path, recipe: CacheRecipe) -> tuple[Path, str | None]:
    """Worker task: ``(source, None)`` on success, ``(source, reason)`` for an unreadable file."""
    try:
        build_entry(source, cache_dir, recipe)
    except RawReadError as e:
        return source, e.reason
    return source, None


def _build_task(task: tuple[Path, Path, CacheRecipe]) -> tuple[Path, str | None]:
    return _build_or_report(*task)


def _init_worker() -> None:
    torch.set_num_threads(1)  # one process per core


def _start_pool(processes: int) -> multiprocessing.pool.Pool:
    """A pool of decoding processes that ignore Ctrl-C (SIGINT): the parent handles it, and stops them at once.

    The platform's default start method (fork on Linux: no re-import of torch in each worker); the workers run torch
    single-threaded, as DataLoader workers do. SIGINT is ignored while they start, so that they inherit that.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main_thread else None
    try:
        return multiprocessing.get_context().Pool(processes, initializer=_init_worker)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)


def _pooled(todo: list[Path], cache_dir: Path, recipe: CacheRecipe, workers: int) -> Iterator[tuple[Path, str | None]]:
    """:func:`_build_or_report` of each file of ``todo`` in ``workers`` processes, in the order they finish.

    When the caller stops early (Ctrl-C, an error), the workers are terminated at once, without waiting for the
    queued files, and what the unfinished files had begun is removed (:func:`_remove_unfinished`).
    """
    pool = _start_pool(min(workers, len(todo)))
    finished: set[Path] = set()
    try:
        for result in pool.imap_unordered(_build_task, [(source, cache_dir, recipe) for source in todo]):
            finished.add(result[0])
            yield result
        pool.close()
    except BaseException:
        pool.terminate()
        _remove_unfinished([source for source in todo if source not in finished], cache_dir, recipe)
        raise
    finally:
        pool.join()


def _sequential(todo: list[Path], cache_dir: Path, recipe: CacheRecipe) -> Iterator[tuple[Path, str | None]]:
    """:func:`_build_or_report` of each file of ``todo`` in this process; when stopped early (Ctrl-C, an error), the
    entry being built is removed if it is not whole (:func:`_remove_unfinished`)."""
    for source in todo:
        try:
            result = _build_or_report(source, cache_dir, recipe)
        except BaseException:
            _remove_unfinished([source], cache_dir, recipe)
            raise
        yield result


def _remove_unfinished(sources: Iterable[Path], cache_dir: Path, recipe: CacheRecipe) -> None:
    """Remove the temporary files of a terminated worker and every entry of ``sources`` that is not whole and valid
    (an ``.npy`` written without its sidecar, or a stale entry about to be rebuilt)."""
    for source in sources:
        stem = entry_stem(source)
        for name in (f"{stem}.npy", f"{stem}.json"):
            for temporary in cache_dir.glob(f".{name}.*.part"):
                temporary.unlink(missing_ok=True)
        if not entry_is_valid(source, cache_dir, recipe):
            for name in (f"{stem}.npy", f"{stem}.json"):
                (cache_dir / name).unlink(missing_ok=True)


@dataclass
class CacheReport:
    """What :func:`prepare_cache` did: entries ``written``, ``skipped`` (already valid) and ``failed``."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def prepare_cache(
    files: Sequence[str | os.PathLike],
    cache_dir: str | os.PathLike,
    recipe: CacheRecipe | None = None,
    workers: int = 1,
    progress: bool = False,
) -> CacheReport:
    """Decode raw files into the HR linear cache, skipping those whose entry is still valid.

    Args:
        files: raw files to prepare.
        cache_dir: the cache folder (created if missing).
        recipe: how the HR linear image is made; default :class:`CacheRecipe()`.
        workers: decoding processes (1: in this process).
        progress: show a progress bar on stderr.

    Returns:
        a :class:`CacheReport`; unreadable files are listed in ``failed`` with the reason and skipped.
    """
    recipe = recipe or CacheRecipe()
    require_positive_int(workers, "workers")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    report = CacheReport()
    todo = []
    for source in map(Path, files):
        (report.skipped if entry_is_valid(source, cache_dir, recipe) else todo).append(source)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="decoding raw files", unit="file", disable=not progress or not todo)
    with bar:
        if workers == 1 or len(todo) <= 1:
            _collect(_sequential(todo, cache_dir, recipe), report, bar)
        else:
            _collect(_pooled(todo, cache_dir, recipe, workers), report, bar)
    report.failed.sort()
    return report


def _collect(results: Iterable[tuple[Path, str | None]], report: CacheReport, bar) -> None:
    for source, reason in results:
        if reason is None:
            report.written.append(source)
        else:
            report.failed.append((source, reason))
        bar.update()


# ----------------------------------------------------------------------------------------------- the dataset


def load_entries(cache_dir: Path, root: Path | None) -> list[dict[str, Any]]:
    """Sidecars of the cache entries whose image exists, restricted to sources below ``root`` when given."""
    root_text = str(root.resolve()) + os.sep if root is not None else ""
    entries = []
    for sidecar in sorted(cache_dir.glob("*.json")):
        meta = read_sidecar(sidecar)
        npy = sidecar.with_suffix(".npy")
        if meta is None or not npy.is_file() or not str(meta.get("source", "")).startswith(root_text):
            continue
        entries.append({**meta, "npy": str(npy)})
    return entries


def split_entries(
    entries: list[dict[str, Any]], split: str, val_fraction: float, val_files, key: str = "data.val"
) -> list[dict]:
    """The entries of one split; errors name ``<key>.val_files`` or ``<key>.val_fraction``.

    With ``val_files`` (file names or stems), those are validation and the rest training. Otherwise the
    ``ceil(val_fraction * n)`` entries with the smallest hash of their file name are validation: the split
    depends on names only, so it is the same on every machine and barely moves when files are added.
    """
    names = [Path(e["source"]).name for e in entries]
    if val_files is not None:
        wanted = {str(v) for v in val_files}
        known = set(names) | {Path(n).stem for n in names}
        require(wanted <= known, f"{key}.val_files", "names of cached raw files", sorted(wanted - known))
        is_val = [n in wanted or Path(n).stem in wanted for n in names]
    else:
        require(0.0 <= val_fraction < 1.0, f"{key}.val_fraction", "a fraction in [0, 1)", val_fraction)
        order = sorted(range(len(names)), key=lambda i: hashlib.sha1(names[i].encode()).hexdigest())
        n_val = int(np.ceil(val_fraction * len(names)))
        is_val = [False] * len(names)
        for i in order[:n_val]:
            is_val[i] = True
    return [e for e, v in zip(entries, is_val, strict=True) if v == (split == "val")]


class RawFolderDataset(Dataset):
    """HR linear crops of prepared raw files, with each file's camera white balance and colour matrix.

    Args:
        scale: super-resolution factor.
        crop: LR crop side (even); training crops are ``scale * crop`` HR pixels square.
        cache_dir: the folder written by :func:`prepare_cache` (``python -m rawsr.prepare task=cache``).
        root: the folder of raw files; only cache entries of files below it are used (``None``: all entries).
        split: ``"train"`` (random crops) or ``"val"`` (fixed images).
        val_fraction: share of the files held out for validation when ``val_files`` is not given.
        val_files: names (or stems) of the validation files.
        samples_per_image: training crops per file and epoch (the training set has ``n_files *`` that items); 10 as
            in the released code, whose training set holds 10 degraded samples of each ground truth.
        val_crops: LR side of the fixed centre crop of each validation image (a multiple of
            :attr:`rawsr.model.RawSRNet.SIZE_MULTIPLE`); ``None``: the whole image, trimmed so that its LR size is
            such a multiple.
        key: the config key this source is configured under; errors name ``<key>.<argument>`` (``None``: the data
            module's ``data.<split>``; ``rawsr.prepare`` passes ``valset``).
        cache_key: the config key that names ``cache_dir`` in errors (``None``: ``<key>.cache_dir``).

    The defaults of ``val_fraction`` and ``val_crops`` are this project's, not the paper's.
    Crop coordinates: the HR linear image is already demosaiced, so training crops may start at any pixel (the
    simulation mosaics after downsampling by ``scale``). Items are ``{"hr_linear": (3, S, S) float32 in [0, 1]
    (not white balanced), "wb": (3,), "ccm": (3, 3), "index": int}``.
    """

    def __init__(
        self,
        scale: int,
        crop: int,
        cache_dir: str | os.PathLike,
        root: str | os.PathLike | None = None,
        split: str = "train",
        val_fraction: float = 0.1,
        val_files: Sequence[str] | None = None,
        samples_per_image: int = 10,
        val_crops: int | None = None,
        key: str | None = None,
        cache_key: str | None = None,
    ) -> None:
        key = source_key(key, split)
        cache_key = cache_key or f"{key}.cache_dir"
        require_choice(split, f"{key}.split", ("train", "val"))
        require_positive_int(scale, shared_key(key, "scale"))
        require_positive_int(crop, shared_key(key, "crop"), even=True)
        require_positive_int(samples_per_image, f"{key}.samples_per_image")
        multiple = RawSRNet.SIZE_MULTIPLE
        if val_crops is not None:
            require(
                isinstance(val_crops, int) and val_crops > 0 and val_crops % multiple == 0,
                f"{key}.val_crops",
                f"a positive multiple of {multiple} or null",
                val_crops,
            )
        self.scale, self.crop, self.split = scale, crop, split
        self.samples_per_image, self.val_crops = samples_per_image, val_crops
        cache_dir = Path(cache_dir)
        root = Path(root) if root is not None else None
        hint = f"run `python -m rawsr.prepare task=cache input_dir={root or '<raw folder>'} cache_dir={cache_dir}`"
        if not cache_dir.is_dir():
            raise ConfigError(f"config key '{cache_key}': {cache_dir} does not exist; {hint} first")
        cached = load_entries(cache_dir, root)
        if not cached:
            below = f" for raw files below {root}" if root is not None else ""
            raise ConfigError(f"config key '{cache_key}': no prepared cache in {cache_dir}{below}; {hint} first")
        entries = split_entries(cached, split, val_fraction, val_files, key)
        side = scale * (crop if split == "train" else (val_crops or multiple))
        fit = [e for e in entries if min(e["shape"][1:]) >= side]
        for e in entries:
            if e not in fit:
                log.warning("%s: HR image %s is smaller than %d px; not used", e["source"], e["shape"][1:], side)
        require(
            len(fit) > 0,
            key,
            f"at least one cached image of at least {side} HR pixels a side in the {split} split",
            f"{len(entries)} of {len(cached)} cached images in the split, {len(fit)} large enough",
        )
        self.entries = fit
        self._arrays: OrderedDict[str, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:  # memory maps stay in the process that opened them
        return {**self.__dict__, "_arrays": OrderedDict()}

    def _array(self, path: str) -> np.ndarray:
        """The memory-mapped image at ``path``; the last :data:`OPEN_ARRAYS` stay mapped (their pages too)."""
        if path in self._arrays:
            self._arrays.move_to_end(path)
        else:
            self._arrays[path] = np.load(path, mmap_mode="r")
            if len(self._arrays) > OPEN_ARRAYS:
                self._arrays.popitem(last=False)
        return self._arrays[path]

    def __len__(self) -> int:
        n = len(self.entries)
        return n * self.samples_per_image if self.split == "train" else n

    def _window(self, shape: Sequence[int]) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of an HR window in an image of ``shape`` ``(3, H, W)``."""
        h, w = shape[1:]
        if self.split == "train":
            side = self.scale * self.crop
            top = int(torch.randint(h - side + 1, (1,)))  # the worker's seeded global RNG
            left = int(torch.randint(w - side + 1, (1,)))
            return top, left, side, side
        unit = RawSRNet.SIZE_MULTIPLE * self.scale  # an LR size the network takes
        if self.val_crops is not None:
            side = self.scale * self.val_crops
            return (h - side) // 2, (w - side) // 2, side, side
        return 0, 0, h // unit * unit, w // unit * unit

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        entry = self.entries[index % len(self.entries)]
        image = self._array(entry["npy"])
        top, left, height, width = self._window(image.shape)
        patch = torch.from_numpy(np.ascontiguousarray(image[:, top : top + height, left : left + width])).float()
        if entry["dtype"] == "uint16":
            patch = patch / _UINT16_SCALE
        return {
            "hr_linear": patch,
            "wb": torch.tensor(entry["wb"], dtype=torch.float32),
            "ccm": torch.tensor(entry["ccm"], dtype=torch.float32),
            "index": index,
        }
