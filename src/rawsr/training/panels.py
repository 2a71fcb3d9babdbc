"""Image panels of fixed validation images for W&B and TensorBoard."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from rawsr.config import require_positive_int

PANEL_CAPTIONS = ("LR reference (bicubic)", "output", "ground truth")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` floats in [0, 1] -> the same shape in uint8 on the CPU (rounded, clipped)."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


class ImagePanels(Callback):
    """At every validation, logs a panel per validation image with index below ``num_images``: the LR reference
    upsampled bicubically, the network's output and the ground truth, each ``(3, sH, sW)``. The output is the
    ``prediction`` that the module's ``validation_step`` returns (``outputs`` of the batch-end hook).

    W&B gets the three images under ``val/panel/<index>`` with captions; TensorBoard gets them side by side. Other
    loggers get nothing. With several processes the panels are gathered on rank 0, which logs them.
    """

    def __init__(self, num_images: int = 4) -> None:
        require_positive_int(num_images, "callbacks.image_panels.num_images")
        self.num_images = num_images
        self._panels: dict[int, torch.Tensor] = {}

    @staticmethod
    def _image_loggers(trainer: L.Trainer) -> list[Any]:
        from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

        return [lg for lg in trainer.loggers if isinstance(lg, (WandbLogger, TensorBoardLogger))]

    @staticmethod
    def _prediction(outputs: Any, n: int) -> torch.Tensor | None:
        """The ``(n, 3, sH, sW)`` prediction that :meth:`rawsr.training.RawSRModule.validation_step` returned as
        ``{"prediction": ...}``, or ``None`` when ``outputs`` holds none for the batch's ``n`` images."""
        prediction = outputs.get("prediction") if isinstance(outputs, dict) else None
        if not torch.is_tensor(prediction) or prediction.ndim != 4 or prediction.shape[0] != n:
            return None
        return prediction

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._panels = {}

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if trainer.sanity_checking or not self._image_loggers(trainer):
            return
        n = batch["hr_srgb"].shape[0]
        index = batch.get("index")
        indices = index.tolist() if torch.is_tensor(index) else list(range(batch_idx * n, (batch_idx + 1) * n))
        wanted = [i for i, idx in enumerate(indices) if idx < self.num_images]
        if not wanted:
            return
        prediction = self._prediction(outputs, n)
        if prediction is None:  # a module whose validation_step returns no prediction
            prediction = pl_module.super_resolve(batch)
        for i in wanted:
            reference = pl_module.bicubic(batch["lr_ref"][i : i + 1])[0]
            panel = torch.stack([reference, prediction[i].float(), batch["hr_srgb"][i].float()])
            self._panels[int(indices[i])] = to_uint8(panel)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._image_loggers(trainer):
            return
        panels = dict(self._panels)
        if torch.distributed.is_available() and torch.distributed.is_initialized() and trainer.world_size > 1:
            gathered: list[dict[int, torch.Tensor]] = [{} for _ in range(trainer.world_size)]
            torch.distributed.all_gather_object(gathered, panels)
            panels = {k: v for part in gathered for k, v in part.items()}
        self._panels = {}
        if not trainer.is_global_zero:
            return
        from lightning.pytorch.loggers import WandbLogger

        step = trainer.global_step
        for logger in self._image_loggers(trainer):
            if isinstance(logger, WandbLogger):  # one history row for all panels
                import wandb

                logger.log_metrics(
                    {
                        f"val/panel/{index}": [
                            wandb.Image(image.permute(1, 2, 0).numpy(), caption=caption)
                            for image, caption in zip(panel, PANEL_CAPTIONS, strict=True)
                        ]
                        for index, panel in sorted(panels.items())
                    },
                    step=step,
                )
            else:
                for index, panel in sorted(panels.items()):
                    logger.experiment.add_image(f"val/panel/{index}", torch.cat(list(panel), dim=-1), step)
