"""The LightningModule: the network built from ``model.net``, its loss, optimiser, schedule and validation metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra.utils
import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from rawsr.config import ConfigError, require, require_choice
from rawsr.inference import BLENDS, super_resolve
from rawsr.inference.accelerate import MEMORY_FORMATS
from rawsr.model import RawSRNet
from rawsr.training.legacy import upgrade_checkpoint
from rawsr.training.schedule import LR_SCALINGS, lr_factor


def _plain(value: Any) -> Any:
    """Turn OmegaConf containers into plain Python ones, so that checkpoints load with ``weights_only=True``."""
    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def build_network(net: Mapping[str, Any]) -> nn.Module:
    """The network described by ``model.net``: ``hydra.utils.instantiate`` of the mapping when it has a
    ``_target_``; the keyword arguments of :class:`rawsr.model.RawSRNet` when it has none (checkpoints of release
    0.1.0).

    The network must have an integer ``scale``, an integer ``SIZE_MULTIPLE`` (input sides must be multiples of it)
    and :class:`rawsr.model.RawSRNet`'s ``forward(raw (B, 1, H, W), ref (B, 3, H, W), wb=None, ccm=None)`` returning
    ``{"srgb", "linear"}`` of shape ``(B, 3, sH, sW)``. Raises :class:`rawsr.config.ConfigError` naming ``model.net``
    otherwise, or when the mapping does not build.
    """
    require(isinstance(net, Mapping), "model.net", "a mapping of the network's arguments", net)
    if "_target_" not in net:
        network = RawSRNet(**net)
    else:
        from hydra.errors import InstantiationException

        try:
            network = hydra.utils.instantiate(dict(net))
        except InstantiationException as error:
            cause = error.__cause__ if error.__cause__ is not None else error
            raise ConfigError(f"config key 'model.net': {net['_target_']} did not build: {cause}") from error
    target = net.get("_target_", "rawsr.model.RawSRNet")
    for name in ("scale", "SIZE_MULTIPLE"):
        value = getattr(network, name, None)
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        require(ok, "model.net._target_", f"a network with a positive integer attribute '{name}'", target)
    return network


def _metrics(prefix: str) -> MetricCollection:
    """Per-image PSNR and SSIM on sRGB in [0, 1] with ``data_range=1``: ``compute()`` gives ``(N,)`` values, one per
    image of the epoch (gathered from every process), which :func:`summarise` turns into means and standard errors."""
    return MetricCollection(
        {
            "psnr": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3), reduction="none"),
            "ssim": StructuralSimilarityIndexMeasure(data_range=1.0, reduction="none"),
        },
        prefix=prefix,
    )


def mean_and_standard_error(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of per-image ``values (N,)`` and its standard error ``std / sqrt(N)`` (sample std, N - 1 degrees of
    freedom); the error is NaN for a single image."""
    values = values.double().flatten()
    n = values.numel()
    error = values.std(unbiased=True) / n**0.5 if n > 1 else values.new_tensor(float("nan"))
    return values.mean(), error


def summarise(model: Mapping[str, torch.Tensor], bicubic: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Epoch figures from per-image scores (``{"<prefix>psnr": (N,), ...}`` of the model, and of bicubic upsampling
    with the postfix ``_bicubic``): each metric's mean, its standard error (key ``+ "_se"``), and the mean per-image
    gain of the model over bicubic in PSNR, ``<prefix>psnr_gain``, with its (paired) standard error."""
    out: dict[str, torch.Tensor] = {}
    for name, values in {**model, **bicubic}.items():
        out[name], out[f"{name}_se"] = mean_and_standard_error(values)
    for name, values in model.items():
        if name.endswith("psnr"):
            gain = values.double() - bicubic[f"{name}_bicubic"].double()
            out[f"{name}_gain"], out[f"{name}_gain_se"] = mean_and_standard_error(gain)
    return {k: v.float() for k, v in out.items()}


def verdict(metrics: Mapping[str, float], prefix: str = "val/") -> str | None:
    """One sentence saying whether the model beats bicubic upsampling in PSNR, by how much and how surely (the
    per-image gain against twice its standard error); ``None`` without the figures."""
    keys = [f"{prefix}psnr", f"{prefix}psnr_bicubic", f"{prefix}psnr_gain", f"{prefix}psnr_gain_se"]
    if not all(k in metrics for k in keys):
        return None
    psnr, bicubic, gain, error = (float(metrics[k]) for k in keys)
    if gain > 2 * error:
        words = f"beats bicubic by {gain:.2f} dB"
    elif gain < -2 * error:
        words = f"is {-gain:.2f} dB below bicubic"
    else:
        words = f"is level with bicubic ({gain:+.2f} dB, within twice its standard error)"
    return (
        f"{prefix}psnr {psnr:.2f} dB against bicubic {bicubic:.2f} dB: the model {words} "
        f"(per-image gain {gain:+.2f} ± {error:.2f} dB, mean ± standard error)"
    )


class RawSRModule(L.LightningModule):
    """Trains the network of ``model.net`` (by default :class:`rawsr.model.RawSRNet`) with an L1 loss on the sRGB
    output.

    Args:
        net: the network's config: ``_target_`` (a class, see :func:`build_network`) and its keyword arguments;
            without ``_target_``, the keyword arguments of :class:`~rawsr.model.RawSRNet` (release 0.1.0).
        tile: LR tile side used for validation and prediction, a multiple of the network's ``SIZE_MULTIPLE``; the
            channel attention pools over the whole tile, so this is the training crop (the released code does the
            same).
        optimizer: a Hydra config of the optimiser, without ``params`` (default Adam 2e-4).
        scheduler: a Hydra config of an epoch-wise LR scheduler, without ``optimizer`` (default
            :class:`PaperSchedule`); ``None`` for a constant rate.
        linear_loss_weight: weight of an extra L1 on the linear output against ``hr_linear``; 0 as in the
            released code.
        val_blend: how validation merges overlapping tiles: ``"mean"`` is the paper's protocol.
        degradation: the simulation the training data went through (the composed ``degradation`` config), kept
            in the hyper-parameters as a record for ``rawsr.evaluate``; the module does not use it. ``None`` when
            no simulation was composed, and in checkpoints of release 0.1.0.
        lr_scaling: ``none``, ``linear`` or ``sqrt``: the optimiser's ``lr`` times the global batch (the data
            module's ``batch_size`` times the processes) over ``lr_reference_batch``, or its square root
            (:func:`~rawsr.training.schedule.lr_factor`); applied when the optimiser is built, and logged.
        lr_reference_batch: the global batch the configured ``lr`` was tuned for (``None``: the data module's own
            ``batch_size``, so that only the number of processes scales the rate).
        memory_format: ``contiguous`` (NCHW, PyTorch's default) or ``channels_last`` (NHWC): the layout of the
            network's weights, which its convolutions and their gradients follow
            (:data:`rawsr.inference.accelerate.MEMORY_FORMATS`). Same results either way; see docs/results.md for
            which is faster where.
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        tile: int,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        linear_loss_weight: float = 0.0,
        val_blend: str = "mean",
        degradation: Mapping[str, Any] | None = None,
        lr_scaling: str = "none",
        lr_reference_batch: int | None = None,
        memory_format: str = "contiguous",
    ) -> None:
        super().__init__()
        net, optimizer, scheduler, degradation = _plain(net), _plain(optimizer), _plain(scheduler), _plain(degradation)
        if optimizer is None:
            optimizer = {"_target_": "torch.optim.Adam", "lr": 2e-4}
        require(linear_loss_weight >= 0, "model.linear_loss_weight", "a weight >= 0", linear_loss_weight)
        require_choice(val_blend, "model.val_blend", BLENDS)
        require_choice(lr_scaling, "model.lr_scaling", LR_SCALINGS)
        require_choice(memory_format, "model.memory_format", MEMORY_FORMATS)
        self.save_hyperparameters(
            {
                "net": net,
                "tile": tile,
                "optimizer": optimizer,
                "scheduler": scheduler,
                "linear_loss_weight": linear_loss_weight,
                "val_blend": val_blend,
                "degradation": degradation,
                "lr_scaling": lr_scaling,
                "lr_reference_batch": lr_reference_batch,
                "memory_format": memory_format,
            }
        )
        self.net = build_network(net).to(memory_format=MEMORY_FORMATS[memory_format])
        self.scale: int = self.net.scale
        multiple = self.net.SIZE_MULTIPLE
        ok = isinstance(tile, int) and not isinstance(tile, bool) and tile > 0 and tile % multiple == 0
        require(ok, "model.tile (data.crop)", f"a positive multiple of {multiple}, the network's SIZE_MULTIPLE", tile)
        self.tile = tile
        self.val_metrics = _metrics("val/")
        self.val_bicubic = _metrics("val/").clone(postfix="_bicubic")
        self.test_metrics: MetricCollection | None = None  # made by setup("test"): kept out of the fit's summary
        self.test_bicubic: MetricCollection | None = None

    def forward(self, raw: torch.Tensor, ref: torch.Tensor, wb=None, ccm=None) -> dict[str, torch.Tensor]:
        """``raw (B, 1, H, W)``, ``ref (B, 3, H, W)`` -> ``{"srgb", "linear"}`` of shape ``(B, 3, sH, sW)``."""
        return self.net(raw, ref, wb=wb, ccm=ccm)

    def loss(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        loss = F.l1_loss(out["srgb"].float(), batch["hr_srgb"])
        if self.hparams.linear_loss_weight > 0:
            if "hr_linear" not in batch:
                raise ConfigError(
                    f"config key 'model.linear_loss_weight': {self.hparams.linear_loss_weight} needs a data source "
                    "with linear targets (hr_linear: the simulated sources demo and raw_folder); these pairs have "
                    "none (released pairs): set model.linear_loss_weight=0"
                )
            loss = loss + self.hparams.linear_loss_weight * F.l1_loss(out["linear"].float(), batch["hr_linear"])
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self(batch["lr_raw"], batch["lr_ref"], batch.get("wb"), batch.get("ccm"))
        loss = self.loss(out, batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["lr_raw"].shape[0])
        return loss

    def super_resolve(
        self, batch: Mapping[str, torch.Tensor], blend: str | None = None, pad: int = 0, tta: bool = False
    ) -> torch.Tensor:
        """Tile-wise sRGB prediction of whole images, clipped to [0, 1]: ``(B, 3, sH, sW)`` in float32
        (:func:`rawsr.inference.super_resolve`, whose ``pad`` and ``tta`` these are); ``blend`` defaults to
        ``val_blend``."""
        return super_resolve(
            self.net,
            batch["lr_raw"],
            batch["lr_ref"],
            self.tile,
            self.scale,
            wb=batch.get("wb"),
            ccm=batch.get("ccm"),
            blend=blend or self.hparams.val_blend,
            pad=pad,
            tta=tta,
        )

    def bicubic(self, lr_ref: torch.Tensor) -> torch.Tensor:
        """The trivial answer: the LR reference upsampled bicubically, ``(B, 3, sH, sW)`` in [0, 1]."""
        up = F.interpolate(lr_ref.float(), scale_factor=self.scale, mode="bicubic", align_corners=False)
        return up.clamp(0, 1)

    def _score(
        self, batch: dict[str, torch.Tensor], metrics: MetricCollection, bicubic: MetricCollection
    ) -> dict[str, torch.Tensor]:
        """Update and log ``metrics`` and ``bicubic`` on one batch; return ``{"prediction": (B, 3, sH, sW)}``, the
        tiled sRGB prediction in [0, 1] (callbacks read it from the batch-end hooks' ``outputs``)."""
        target = batch["hr_srgb"].float()
        prediction = self.super_resolve(batch)
        metrics.update(prediction, target)
        bicubic.update(self.bicubic(batch["lr_ref"]), target)
        return {"prediction": prediction}

    def _log_epoch(self, metrics: MetricCollection, bicubic: MetricCollection) -> None:
        """Log the epoch's means and standard errors (:func:`summarise`) and reset the per-image scores. The
        progress bar shows PSNR next to bicubic's."""
        figures = summarise(metrics.compute(), bicubic.compute())
        metrics.reset()
        bicubic.reset()
        shown = {k for k in figures if k.endswith(("/psnr", "/psnr_bicubic", "/ssim"))}
        self.log_dict({k: v for k, v in figures.items() if k in shown}, prog_bar=True)
        self.log_dict({k: v for k, v in figures.items() if k not in shown})

    def setup(self, stage: str) -> None:
        """Create the test metrics when testing starts (``test=true`` runs ``trainer.test`` after fitting)."""
        if stage == "test" and self.test_metrics is None:
            self.test_metrics = _metrics("test/")
            self.test_bicubic = _metrics("test/").clone(postfix="_bicubic")

    def on_fit_start(self) -> None:
        # Metric states must not be shared between processes started by ddp_spawn.
        for collection in (self.val_metrics, self.val_bicubic):
            collection.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Score one validation batch; returns ``{"prediction": (B, 3, sH, sW)}`` (see :meth:`_score`)."""
        return self._score(batch, self.val_metrics, self.val_bicubic)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch(self.val_metrics, self.val_bicubic)

    def on_test_epoch_end(self) -> None:
        self._log_epoch(self.test_metrics, self.test_bicubic)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Score one test batch; returns ``{"prediction": (B, 3, sH, sW)}`` (see :meth:`_score`)."""
        return self._score(batch, self.test_metrics, self.test_bicubic)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming through Lightning: bring a checkpoint of an earlier release up to the current names
        (:func:`rawsr.training.legacy.upgrade_checkpoint`) before Lightning loads its state dict."""
        upgrade_checkpoint(checkpoint)

    def effective_lr(self) -> float | None:
        """The optimiser's configured ``lr`` scaled for this run's global batch (``model.lr_scaling``), logged once
        with the global batch; ``None`` when the optimiser config gives no ``lr`` (its own default, unscaled)."""
        scaling, lr = self.hparams.lr_scaling, self.hparams.optimizer.get("lr")
        per_process = getattr(self.trainer.datamodule, "batch_size", None)
        if scaling != "none" and (lr is None or per_process is None):
            raise ConfigError(
                f"config key 'model.lr_scaling': {scaling} needs model.optimizer.lr and a data module with batch_size"
            )
        if lr is None or per_process is None:
            return lr
        processes = self.trainer.world_size
        reference = self.hparams.lr_reference_batch or per_process
        scaled = float(lr) * lr_factor(scaling, per_process * processes, reference)
        rank_zero_info(
            f"learning rate {scaled:.4g} (model.lr_scaling={scaling}: configured {float(lr):.4g}, global batch "
            f"{per_process * processes} = {per_process} x {processes} process(es), reference batch {reference})"
        )
        return scaled

    def configure_optimizers(self) -> dict[str, Any]:
        lr = self.effective_lr()
        optimizer_config = {**self.hparams.optimizer, **({} if lr is None else {"lr": lr})}
        optimizer = hydra.utils.instantiate(optimizer_config, params=self.parameters())
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        scheduler = hydra.utils.instantiate(self.hparams.scheduler, optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
