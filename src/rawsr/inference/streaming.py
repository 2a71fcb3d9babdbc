"""Streaming a large output: finished rows as 16-bit arrays, computed in a background thread while the previous
ones are compressed and written."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


def to_uint16(rows: torch.Tensor) -> np.ndarray:
    """``(1, 3, h, W)`` float in [0, 1] on any device -> ``(h, W, 3)`` uint16 numpy array (rounded).

    Raises:
        ValueError: the rows hold NaN (a broken checkpoint), which no 16-bit value can stand for.
    """
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
