"""Several outputs from one network run: each writer consumes its own stream of row blocks in its own thread.

:func:`fan_out` hands every row block of one run (a dict such as ``{"srgb": (h, W, 3), "linear": (h, W, 3)}``
uint16) to each output writer (PNG, TIFF, linear DNG), each holding at most ``depth`` blocks in its queue. When
the rows stop coming (the source or any writer fails, or Ctrl-C), every other writer is told to abort, so each
output is written whole (it moves into place only when complete) or not at all.

:func:`output_metadata` and :func:`dng_tags` describe the outputs: the source's orientation, camera and capture
time, and that they were super-resolved (scale, checkpoint file name, rawsr).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rawsr.camera import RawImage
from rawsr.writers import ImageMetadata

Sink = tuple[str, Callable[[Iterator[np.ndarray]], Path]]
"""``(key, write)``: ``write`` consumes the row blocks ``block[key]`` and returns the path written."""


class OutputAborted(Exception):
    """Raised inside a writer whose rows stopped coming because the source or another output failed."""


def split_rows(rows: np.ndarray) -> dict[str, np.ndarray]:
    """``(h, W, 3)`` sRGB, or ``(h, W, 6)`` sRGB then linear, -> ``{"srgb": (h, W, 3)[, "linear": (h, W, 3)]}``."""
    out = {"srgb": np.ascontiguousarray(rows[..., :3])}
    if rows.shape[-1] == 6:
        out["linear"] = np.ascontiguousarray(rows[..., 3:])
    return out


def _rows(slots: queue.Queue) -> Iterator[np.ndarray]:
    while True:
        kind, value = slots.get()
        if kind == "end":
            return
        if kind == "abort":
            raise OutputAborted("the rows stopped coming (the source or another output failed)")
        yield value


def fan_out(items: Iterable[dict[str, np.ndarray]], sinks: list[Sink], depth: int = 2) -> list[Path]:
    """Feed each block of ``items`` to every sink (``block[key]`` to sink ``(key, write)``), all writers at once.

    Returns:
        the paths the sinks returned, in order.

    Raises:
        the source's exception, else the first writer's; the other writers are aborted first (nothing is left
        of an output that did not finish).
    """
    queues = [queue.Queue(maxsize=depth) for _ in sinks]
    results: list[Any] = [None] * len(sinks)
    errors: list[BaseException | None] = [None] * len(sinks)
    failed = threading.Event()

    def run(i: int, write: Callable[[Iterator[np.ndarray]], Path]) -> None:
        try:
            results[i] = write(_rows(queues[i]))
        except BaseException as error:  # handed to the caller
            errors[i] = error
            failed.set()

    threads = [threading.Thread(target=run, args=(i, w), name=f"rawsr-output-{i}") for i, (_, w) in enumerate(sinks)]
    for thread in threads:
        thread.start()

    def put(i: int, entry: tuple[str, Any]) -> bool:
        """Queue ``entry`` for sink ``i``; ``False`` when rows should stop (a writer failed) or it has ended."""
        while threads[i].is_alive():
            if entry[0] == "item" and failed.is_set():
                return False
            try:
                queues[i].put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return entry[0] != "item"

    source_error: BaseException | None = None
    try:
        for item in items:
            if not all(put(i, ("item", item[key])) for i, (key, _) in enumerate(sinks)):
                break
    except BaseException as error:  # re-raised once every writer has stopped
        source_error = error
    end = ("end", None) if source_error is None and not failed.is_set() else ("abort", None)
    for i in range(len(sinks)):
        put(i, end)
    for thread in threads:
        thread.join()
    if source_error is not None:
        raise source_error
    first = next((e for e in errors if e is not None and not isinstance(e, OutputAborted)), None)
    if first is None:
        first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return results


def output_metadata(image: RawImage, scale: int, checkpoint: str | Path, software: str) -> ImageMetadata:
    """What every output of ``image`` says: the source's orientation, camera, capture time; how it was made."""
    meta = image.metadata
    return ImageMetadata(
        orientation=meta.exif_orientation,
        make=meta.make,
        model=meta.model or meta.unique_model,
        datetime=meta.datetime,
        description=f"super-resolved x{scale} by {software} from {image.path.name}",
        software=software,
        text={"rawsr:scale": str(scale), "rawsr:checkpoint": Path(checkpoint).name, "rawsr:source": image.path.name},
    )


def dng_tags(image: RawImage, metadata: ImageMetadata) -> list[tuple]:
    """The linear DNG's tags for ``image``: its colour calibration and EXIF, AsShotNeutral ``1 / image.wb`` (the
    white balance the sRGB output was rendered with), and ``metadata``'s description."""
    from rawsr.camera.dng import linear_dng_tags

    return linear_dng_tags(image.metadata, image.wb, image.ccm, metadata.full_description(), metadata.software)
