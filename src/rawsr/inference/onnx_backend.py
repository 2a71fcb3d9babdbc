"""A model exported by ``python -m rawsr.export`` run through ONNX Runtime, as a tile function for
:mod:`rawsr.inference.tiling` (``python -m rawsr.predict backend=onnxruntime model_path=MODEL.onnx``).

The exported graph takes one tile, ``raw (1, 1, T, T)`` and ``ref (1, 3, T, T)``, and returns ``srgb`` and
``linear`` ``(1, 3, sT, sT)``; its JSON sidecar (``MODEL.json``) gives the scale and the tile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rawsr.config import ConfigError
from rawsr.inference.tiling import TileFn


@dataclass
class ExportedModel:
    """An ONNX Runtime session with what tiling needs: ``scale``, ``tile``, ``size_multiple``; ``source`` is the
    .onnx file (named in the outputs' metadata)."""

    session: Any
    scale: int
    tile: int
    size_multiple: int
    source: Path

    def tile_function(self, linear: bool = False) -> TileFn:
        """``fn(raw (N, 1, T, T), ref (N, 3, T, T)) -> (N, 3 or 6, sT, sT)`` float32 on the CPU, one tile per run:
        sRGB, then linear when ``linear``; ``ref`` float in [0, 1] or uint8 (divided by 255)."""
        names = ["srgb", "linear"] if linear else ["srgb"]

        def fn(raw: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
            raw_np = raw.detach().to("cpu", torch.float32).numpy()
            ref_t = ref.detach().to("cpu")
            ref_np = (ref_t.to(torch.float32) / 255.0 if ref_t.dtype == torch.uint8 else ref_t.float()).numpy()
            outs = []
            for i in range(raw_np.shape[0]):
                got = self.session.run(names, {"raw": raw_np[i : i + 1], "ref": ref_np[i : i + 1]})
                outs.append(np.concatenate(got, axis=1))
            return torch.from_numpy(np.concatenate(outs))

        return fn


def load_exported(path: str | Path, key: str = "model_path", device: torch.device | str = "cpu") -> ExportedModel:
    """Open an exported ``.onnx`` model and its ``.json`` sidecar.

    Raises:
        ConfigError: naming ``key``, when the sidecar is missing or not rawsr's, the model cannot be loaded, or
            onnxruntime is not installed.
    """
    path = Path(path)
    meta_path = path.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
        scale, tile, multiple = int(meta["scale"]), int(meta["tile"]), int(meta.get("size_multiple", 4))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"config key '{key}': {path} needs the sidecar {meta_path} written by `python -m rawsr.export` ({error})"
        ) from None
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise ConfigError(f"config key 'backend': onnxruntime needs `pip install rawsr[onnx]` ({error})") from None
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types for unreadable models
        raise ConfigError(f"config key '{key}': {path} is not a loadable ONNX model ({error})") from None
    return ExportedModel(session, scale, tile, multiple, path)
