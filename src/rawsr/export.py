"""``python -m rawsr.export ckpt_path=model.ckpt format=onnx``: the network on one tile, for other runtimes.

The exported model takes the raw mosaic ``raw (1, 1, T, T)`` (RGGB at the top-left, black 0, white 1) and the colour
reference ``ref (1, 3, T, T)`` (8-bit sRGB divided by 255) for the checkpoint's training crop ``T``, and returns
``srgb (1, 3, sT, sT)`` (unclipped) and ``linear (1, 3, sT, sT)`` (HR camera RGB). Whole images are run tile by tile
and merged as ``rawsr.inference.tiling`` does (the JSON sidecar says how). Both files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from rawsr.config import ConfigError, config_dir, require, require_choice

log = logging.getLogger("rawsr.export")
FORMATS = ("onnx",)


def check_config(cfg: DictConfig) -> None:
    """Refuse missing or out-of-range keys with a :class:`ConfigError` naming the key."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or cfg.get("ckpt_path") in (None, ""):
        raise ConfigError("config key 'ckpt_path' is not set: give ckpt_path=PATH")
    require_choice(cfg.format, "format", FORMATS)
    require(isinstance(cfg.opset, int) and 13 <= cfg.opset <= 21, "opset", "an integer in 13..21", cfg.opset)
    tol = cfg.tolerance
    require(tol is None or (isinstance(tol, int | float) and tol > 0), "tolerance", "null or a number > 0", tol)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar(model: Any, ckpt: Path, opset: int) -> dict[str, Any]:
    """The JSON sidecar of an exported model: what a runtime needs to tile whole images the way rawsr does."""
    from rawsr import __version__

    tile, scale = int(model.tile), int(model.net.scale)
    return {
        "format": "rawsr-onnx-1",
        "scale": scale,
        "tile": tile,
        "size_multiple": int(model.net.SIZE_MULTIPLE),
        "inputs": {
            "raw": {"shape": [1, 1, tile, tile], "range": [0.0, 1.0], "what": "RGGB mosaic, black 0, white 1"},
            "ref": {"shape": [1, 3, tile, tile], "range": [0.0, 1.0], "what": "8-bit sRGB reference / 255"},
        },
        "outputs": {
            "srgb": {"shape": [1, 3, scale * tile, scale * tile], "what": "sRGB, clip to [0, 1] after merging"},
            "linear": {"shape": [1, 3, scale * tile, scale * tile], "what": "HR linear camera RGB"},
        },
        "blend": "linear",
        "overlap": tile // 2,
        "tile_origins": "even (keeps the RGGB phase); the last tile clamped to the border",
        "opset": opset,
        "checkpoint": ckpt.name,
        "checkpoint_sha256": _sha256(ckpt),
        "rawsr": __version__,
    }


def _two_outputs(net):
    import torch

    class TwoOutputs(torch.nn.Module):
        """The network with a tuple output ``(srgb, linear)`` for the exporter."""

        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, raw: torch.Tensor, ref: torch.Tensor):
            out = self.net(raw, ref)
            return out["srgb"], out["linear"]

    return TwoOutputs().eval()


def max_difference(onnx_path: Path, net, raw, ref) -> float:
    """Largest absolute difference between ONNX Runtime and PyTorch on ``raw (1, 1, T, T)``, ``ref (1, 3, T, T)``."""
    import numpy as np
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["srgb", "linear"], {"raw": raw.numpy(), "ref": ref.numpy()})
    with torch.no_grad():
        out = net(raw, ref)
    return max(float(np.abs(g - out[k].numpy()).max()) for g, k in zip(got, ("srgb", "linear"), strict=True))


def export(cfg: DictConfig) -> list[Path]:
    """Export as configured (see ``configs/export.yaml``); return the model and sidecar paths.

    Raises:
        ConfigError: a bad config value, a missing or unusable checkpoint, a network ONNX cannot hold, or an export
            whose outputs differ from PyTorch's by more than ``tolerance``.
    """
    try:
        check_config(cfg)
    except MissingMandatoryValue as error:
        raise ConfigError(str(error)) from None
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise ConfigError(f"config key 'ckpt_path': no checkpoint file at {ckpt}")
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise ConfigError(f"config key 'format': onnx needs `pip install rawsr[onnx]` ({error})") from None
    import torch

    from rawsr.training import load_checkpoint
    from rawsr.writers import atomic_path, atomic_write

    try:
        model = load_checkpoint(ckpt, map_location="cpu")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    net = model.net.eval()
    if net.color is None or net.input != "raw":
        raise ConfigError(
            f"config key 'ckpt_path': {ckpt} is an ablation (color_branch=false or input=srgb) that needs per-image "
            "white balance and colour matrix or no mosaic; only the full rawSR network (raw and ref in) is exported"
        )
    tile = int(model.tile)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target, meta_path = out_dir / f"{ckpt.stem}.onnx", out_dir / f"{ckpt.stem}.json"
    generator = torch.Generator().manual_seed(0)
    raw = torch.rand(1, 1, tile, tile, generator=generator)
    ref = torch.rand(1, 3, tile, tile, generator=generator)
    info = sidecar(model, ckpt, int(cfg.opset))
    with atomic_path(target) as tmp:
        with torch.no_grad():
            torch.onnx.export(
                _two_outputs(net),
                (raw, ref),
                str(tmp),
                input_names=["raw", "ref"],
                output_names=["srgb", "linear"],
                opset_version=int(cfg.opset),
                dynamo=False,
            )
        if cfg.tolerance is not None:
            diff = max_difference(tmp, net, raw, ref)
            if diff > cfg.tolerance:
                raise ConfigError(
                    f"config key 'tolerance': ONNX Runtime and PyTorch differ by {diff:.3g} > {cfg.tolerance}"
                )
            info["max_abs_difference"] = diff
        atomic_write(meta_path, lambda f: f.write((json.dumps(info, indent=2) + "\n").encode()))
    log.info("rawsr.export: %s (x%d, tile %d, opset %d) and %s", target, info["scale"], tile, cfg.opset, meta_path)
    return [target, meta_path]


def run(cfg: DictConfig) -> int:
    """Export and return the exit code: 0, or 2 for a bad config."""
    try:
        for path in export(cfg):
            log.info("wrote %s", path)
    except ConfigError as error:
        log.error("%s", error)
        return 2
    return 0


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
def main(cfg: DictConfig) -> None:
    code = run(cfg)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
