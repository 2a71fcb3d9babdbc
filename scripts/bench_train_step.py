"""Overhead of Lightning's training step over a bare PyTorch loop, on the same model and the same batches.

Both loops run the whole step: the imaging-process simulation of an HR batch on the device (the data module's
``degrade``, which ``on_after_batch_transfer`` calls under Lightning), the network, the L1 loss, backward and the
optimiser step. Lightning runs through ``trainer.fit`` with ``limit_train_batches``; the bare loop does the same
work by hand. The two alternate in rounds (so that a busy machine slows both alike); each round's first steps are
warm-up, then the step times are summed over windows of consecutive steps and the medians of the windows compared.

    python scripts/bench_train_step.py                       # CPU, moderate model at x2
    python scripts/bench_train_step.py --device cuda --precision bf16-mixed --width 128 --crop 128   # x4, paper size

Each loop's images/s and achieved FLOP/s (the convolutions of one training step, forward and backward, counted by
``torch.utils.flop_counter``) are printed. ``--memory-format contiguous channels_last`` times both layouts of the
network (``model.memory_format``) in the same rounds. The last line is ``overhead=<Lightning time / bare time>`` for
the first layout named (``overhead_<layout>=`` for the others just before it).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import hydra.utils
import lightning as L
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from rawsr.config import config_dir, instantiate
from rawsr.data import RawSRDataModule
from rawsr.inference.accelerate import MEMORY_FORMATS
from rawsr.training import RawSRModule, ReproducibleResume


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"])
    parser.add_argument("--scale", type=int, default=None, help="default: 4 on cuda (the GPU figure), 2 on cpu")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--crop", type=int, default=64, help="LR crop side; HR side = scale * crop")
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument(
        "--memory-format",
        nargs="+",
        default=["contiguous"],
        choices=["contiguous", "channels_last"],
        help="the network's layout (model.memory_format); several alternate in the same rounds and are compared",
    )
    parser.add_argument("--warmup", type=int, default=2, help="steps discarded at the start of each round")
    parser.add_argument("--window", type=int, default=3, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=3, help="timed windows per round")
    parser.add_argument("--rounds", type=int, default=4, help="alternating Lightning / bare rounds")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (0: torch's default); one thread keeps CPU timings steady on a shared machine",
    )
    return parser.parse_args()


def build(args: argparse.Namespace) -> tuple[RawSRDataModule, RawSRModule, list[dict]]:
    """The project's data module (with its simulation) and model, and a fixed list of collated HR batches."""
    overrides = [
        f"data.scale={args.scale}",
        f"data.crop={args.crop}",
        f"data.batch_size={args.batch}",
        "data.num_workers=0",
        f"data.val.val_crops={args.crop}",  # unused here; keeps the validation crops inside the photographs
        "data.train.images=[astronaut,retina,immunohistochemistry,hubble_deep_field]",  # >= 512 px: room for x4
        "data.val.images=[astronaut]",
        f"model.net.width={args.width}",
        "model.net.growth=16",
        "model.net.dense_layers=8",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    L.seed_everything(0, verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.degradation = instantiate(cfg.degradation)
    datamodule.setup("fit")
    steps = args.warmup + args.window * args.windows
    loader = datamodule.train_dataloader()
    batches = [batch for batch, _ in zip(loader, range(steps), strict=False)]
    return datamodule, instantiate(cfg.model), batches


class FixedBatches(L.LightningDataModule):
    """Serves the fixed HR batches and simulates them on the device exactly as :class:`RawSRDataModule` does."""

    def __init__(self, data: RawSRDataModule, batches: list[dict]) -> None:
        super().__init__()
        self.data, self.batches = data, batches

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.batches, batch_size=None, shuffle=False)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return self.data.degrade(batch, training=self.trainer.training)


class StepClock(L.Callback):
    """Time stamps at the end of every training step (after the optimiser step)."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync, self.stamps = sync, []

    def on_train_batch_end(self, *args) -> None:
        self.sync()
        self.stamps.append(time.perf_counter())


def windows(start: float, stamps: list[float], warmup: int, size: int) -> list[float]:
    """Seconds per step of each window of ``size`` consecutive steps after ``warmup`` steps."""
    times = [start, *stamps][warmup:]
    return [(times[i + size] - times[i]) / size for i in range(0, len(times) - size, size)]


def lightning_round(args, data, model, batches, device, sync) -> list[float]:
    clock = StepClock(sync)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=args.precision,
        max_epochs=1,
        limit_train_batches=len(batches),
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock, ReproducibleResume()],
    )
    trainer.fit(model, datamodule=FixedBatches(data, batches))
    return windows(clock.stamps[0], clock.stamps[1:], args.warmup - 1, args.window)


def bare_round(args, data, model, batches, device, sync) -> list[float]:
    model = model.to(device).train()
    # The optimiser the module configures, built without a trainer (no learning-rate scaling: one process).
    optimizer = hydra.utils.instantiate(model.hparams.optimizer, params=model.parameters())
    autocast_dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "16-mixed")
    stamps = []
    for batch in batches:
        batch = data.degrade({k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}, training=True)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out = model(batch["lr_raw"], batch["lr_ref"], batch.get("wb"), batch.get("ccm"))
            loss = model.loss(out, batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        sync()
        stamps.append(time.perf_counter())
    return windows(stamps[0], stamps[1:], args.warmup - 1, args.window)


def step_flops(data: RawSRDataModule, model: RawSRModule, batch: dict, device: torch.device) -> int:
    """Floating-point operations of the convolutions in one training step (forward and backward) on ``batch``."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model).to(device).train()
    batch = data.degrade({k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}, training=True)
    with FlopCounterMode(display=False) as counter:
        out = model(batch["lr_raw"], batch["lr_ref"], batch.get("wb"), batch.get("ccm"))
        model.loss(out, batch).backward()
    counts = counter.get_flop_counts().get("Global", {})
    return int(sum(n for op, n in counts.items() if "convolution" in str(op)))


def main() -> None:
    args = parse_args()
    if args.scale is None:
        args.scale = 4 if args.device == "cuda" else 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    data, model, batches = build(args)
    flops = step_flops(data, model, batches[0], device)
    print(
        f"device={device.type} precision={args.precision} memory_format={','.join(args.memory_format)} "
        f"scale=x{args.scale} width={args.width} "
        f"LR crop={args.crop} (HR {args.scale * args.crop}) batch={args.batch} threads={torch.get_num_threads()} "
        f"windows={args.rounds}x{args.windows} of {args.window} steps after {args.warmup} warm-up steps"
    )
    models = {fmt: copy.deepcopy(model) for fmt in args.memory_format}
    for fmt, m in models.items():
        m.net.to(memory_format=MEMORY_FORMATS[fmt])  # what model.memory_format does
    timings: dict[tuple[str, str], list[float]] = {}
    for round_index in range(args.rounds):
        for fmt, m in models.items():
            for name, run in (("lightning", lightning_round), ("bare", bare_round)):
                L.seed_everything(round_index, verbose=False)
                timings.setdefault((name, fmt), []).extend(run(args, data, copy.deepcopy(m), batches, device, sync))
    medians = {key: statistics.median(values) for key, values in timings.items()}
    for (name, fmt), values in timings.items():
        spread = ", ".join(f"{v:.3f}" for v in values)
        median = medians[name, fmt]
        print(
            f"{name:>9} {fmt}: median {median:.3f} s/step, {args.batch / median:.2f} images/s, "
            f"{flops / median / 1e9:.1f} GFLOP/s of convolutions ({flops / 1e9:.1f} GFLOP per step)  [{spread}]"
        )
    first, *others = args.memory_format
    for fmt in others:
        print(f"{fmt} over {first}, bare loop: {medians['bare', first] / medians['bare', fmt]:.2f}x faster")
    for fmt in others:
        print(f"overhead_{fmt}={medians['lightning', fmt] / medians['bare', fmt]:.3f}")
    print(f"overhead={medians['lightning', first] / medians['bare', first]:.3f}")


if __name__ == "__main__":
    main()
