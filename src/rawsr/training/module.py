"""The LightningModule: the two-branch network, its loss, optimiser, schedule and validation metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra.utils
import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from rawsr.config import require
from rawsr.inference import super_resolve
from rawsr.model import RawSRNet


def _plain(value: Any) -> Any:
    """Turn OmegaConf containers into plain Python ones, so that checkpoints load with ``weights_only=True``."""
    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _metrics(prefix: str) -> MetricCollection:
    """PSNR as the mean of per-image values and SSIM, both on sRGB in [0, 1] with ``data_range=1``."""
    return MetricCollection(
        {
            "psnr": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
            "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
        },
        prefix=prefix,
    )


class RawSRModule(L.LightningModule):
    """Trains :class:`rawsr.model.RawSRNet` with an L1 loss on the sRGB output.

    Args:
        net: keyword arguments of :class:`~rawsr.model.RawSRNet` (``scale``, ``width``, ...).
        tile: LR tile side used for validation and prediction; the channel attention pools over the whole
            tile, so this is the training crop (the released code does the same).
        optimizer: a Hydra config of the optimiser, without ``params`` (default Adam 2e-4).
        scheduler: a Hydra config of an epoch-wise LR scheduler, without ``optimizer`` (default
            :class:`PaperSchedule`); ``None`` for a constant rate.
        linear_loss_weight: weight of an extra L1 on the linear output against ``hr_linear``; 0 as in the
            released code.
        val_blend: how validation merges overlapping tiles: ``"mean"`` is the paper's protocol.
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        tile: int,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        linear_loss_weight: float = 0.0,
        val_blend: str = "mean",
    ) -> None:
        super().__init__()
        net, optimizer, scheduler = _plain(net), _plain(optimizer), _plain(scheduler)
        if optimizer is None:
            optimizer = {"_target_": "torch.optim.Adam", "lr": 2e-4}
        require(linear_loss_weight >= 0, "model.linear_loss_weight", "a weight >= 0", linear_loss_weight)
        require(val_blend in ("mean", "linear"), "model.val_blend", "'mean' or 'linear'", val_blend)
        self.save_hyperparameters(
            {
                "net": net,
                "tile": tile,
                "optimizer": optimizer,
                "scheduler": scheduler,
                "linear_loss_weight": linear_loss_weight,
                "val_blend": val_blend,
            }
        )
        self.net = RawSRNet(**net)
        self.scale: int = int(net.get("scale", 2))
        self.tile = tile
        self.val_metrics = _metrics("val/")
        self.val_bicubic = _metrics("val/").clone(postfix="_bicubic")
        self.test_metrics = _metrics("test/")
        self.test_bicubic = _metrics("test/").clone(postfix="_bicubic")

    def forward(self, raw: torch.Tensor, ref: torch.Tensor, wb=None, ccm=None) -> dict[str, torch.Tensor]:
        """``raw (B, 1, H, W)``, ``ref (B, 3, H, W)`` -> ``{"srgb", "linear"}`` of shape ``(B, 3, sH, sW)``."""
        return self.net(raw, ref, wb=wb, ccm=ccm)

    def loss(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        loss = F.l1_loss(out["srgb"].float(), batch["hr_srgb"])
        if self.hparams.linear_loss_weight > 0:
            require("hr_linear" in batch, "model.linear_loss_weight", "a data source with hr_linear", "none")
            loss = loss + self.hparams.linear_loss_weight * F.l1_loss(out["linear"].float(), batch["hr_linear"])
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self(batch["lr_raw"], batch["lr_ref"], batch.get("wb"), batch.get("ccm"))
        loss = self.loss(out, batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["lr_raw"].shape[0])
        return loss

    def super_resolve(self, batch: Mapping[str, torch.Tensor], blend: str | None = None) -> torch.Tensor:
        """Tile-wise sRGB prediction of whole images, clipped to [0, 1]: ``(B, 3, sH, sW)`` in float32
        (:func:`rawsr.inference.super_resolve`)."""
        return super_resolve(
            self.net,
            batch["lr_raw"],
            batch["lr_ref"],
            self.tile,
            self.scale,
            wb=batch.get("wb"),
            ccm=batch.get("ccm"),
            blend=blend or self.hparams.val_blend,
        )

    def bicubic(self, lr_ref: torch.Tensor) -> torch.Tensor:
        """The trivial answer: the LR reference upsampled bicubically, ``(B, 3, sH, sW)`` in [0, 1]."""
        up = F.interpolate(lr_ref.float(), scale_factor=self.scale, mode="bicubic", align_corners=False)
        return up.clamp(0, 1)

    def _score(self, batch: dict[str, torch.Tensor], metrics: MetricCollection, bicubic: MetricCollection) -> None:
        target = batch["hr_srgb"].float()
        prediction = self.super_resolve(batch)
        metrics.update(prediction, target)
        bicubic.update(self.bicubic(batch["lr_ref"]), target)
        n = target.shape[0]
        self.log_dict(metrics, on_epoch=True, prog_bar=True, batch_size=n)
        self.log_dict(bicubic, on_epoch=True, batch_size=n)
        self.last_prediction = prediction

    def on_fit_start(self) -> None:
        # Metric states must not be shared between processes started by ddp_spawn.
        for collection in (self.val_metrics, self.val_bicubic):
            collection.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._score(batch, self.val_metrics, self.val_bicubic)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._score(batch, self.test_metrics, self.test_bicubic)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = hydra.utils.instantiate(self.hparams.optimizer, params=self.parameters())
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        scheduler = hydra.utils.instantiate(self.hparams.scheduler, optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
