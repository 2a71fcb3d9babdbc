"""The checks that need a GPU, for a session that has one; one line per figure.

    python scripts/gpu_check.py              # from the repository root, with rawsr importable

1. The CUDA tests the CPU skips (tests/test_simulate.py: the simulation on CUDA against the CPU, and per-sample
   reproducibility across batch compositions), through pytest.
2. A DDP training run of two steps through ``python -m rawsr.train trainer=ddp``: two processes (NCCL) when two
   GPUs are visible, one otherwise.
3. Training steps at the paper's x4 size (batch 6, LR crop 128, width 128) in bf16-mixed and in fp32: the whole
   step (simulation on the device, network, L1 loss, backward, Adam), images per second after warm-up steps.

Without CUDA it prints one line saying so and exits 0. The exit status is 1 when a check failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CUDA_TESTS = (
    "tests/test_simulate.py::test_cuda_matches_cpu_statistics",
    "tests/test_simulate.py::test_cuda_reproducible_across_batch_compositions",
)
#: A narrow network and tiny crops: the DDP check is about processes and collectives, not speed.
TINY = ("model.net.width=16", "model.net.growth=8", "model.net.dense_layers=2", "data.crop=32", "data.batch_size=4",
        "data.val.val_crops=32", "data.num_workers=0", "+trainer.num_sanity_val_steps=0",
        "callbacks.model_summary=null", "callbacks.progress_bar=null", "logger=csv")  # fmt: skip


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def cuda_tests() -> bool:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *CUDA_TESTS],
                            cwd=REPO, capture_output=True, text=True)  # fmt: skip
    summary = (result.stdout.strip().splitlines() or ["no output"])[-1]
    ok = result.returncode == 0 and "skipped" not in summary
    print(f"cuda tests: {'ok' if ok else 'FAILED'} ({summary.strip('= ')}) in {time.perf_counter() - start:.0f} s")
    if not ok:
        print(tail(result.stdout + result.stderr))
    return ok


def ddp_step(devices: int) -> bool:
    """Two optimiser steps of ``python -m rawsr.train trainer=ddp`` on ``devices`` GPUs, in a temporary folder."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rawsr-gpu-check-") as folder:
        env = {**os.environ, "RAWSR_LOG_DIR": folder, "WANDB_MODE": "disabled"}
        args = ["trainer=ddp", f"trainer.devices={devices}", "+trainer.max_steps=2", "trainer.max_epochs=1",
                "data.train.samples_per_epoch=64", "run_name=gpu-check", *TINY]  # fmt: skip
        result = subprocess.run([sys.executable, "-m", "rawsr.train", *args], cwd=folder, env=env,
                                capture_output=True, text=True, timeout=600)  # fmt: skip
        last = Path(folder) / "train" / "runs" / "gpu-check" / "checkpoints" / "last.ckpt"
        ok = result.returncode == 0 and last.is_file()
    what = f"{devices} process{'es' if devices > 1 else ''} ({'NCCL' if devices > 1 else 'one GPU'})"
    print(f"ddp: {'ok' if ok else 'FAILED'}, {what}, 2 steps in {time.perf_counter() - start:.0f} s (with start-up)")
    if not ok:
        print(tail(result.stdout + result.stderr))
    return ok


def images_per_second(precision: str, device: str = "cuda", batch: int = 6, crop: int = 128, width: int = 128,
                      warmup: int = 3, steps: int = 10) -> float:  # fmt: skip
    """Images per second of the whole training step at x4 (simulation on the device included), after ``warmup``
    steps; ``precision`` is ``bf16-mixed`` or ``32-true``."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rawsr.config import config_dir, instantiate

    overrides = [
        "data.scale=4", f"data.crop={crop}", f"data.batch_size={batch}", "data.num_workers=0",
        f"data.val.val_crops={crop}",
        "data.train.images=[astronaut,retina,immunohistochemistry,hubble_deep_field]",  # >= 512 px: room for x4
        f"model.net.width={width}", "model.net.growth=16", "model.net.dense_layers=8",
    ]  # fmt: skip
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    GlobalHydra.instance().clear()
    torch.manual_seed(0)
    data = instantiate(cfg.data)
    data.degradation = instantiate(cfg.degradation)
    data.setup("fit")
    batches = [b for b, _ in zip(data.train_dataloader(), range(4), strict=False)]
    model = instantiate(cfg.model).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)  # the paper's; no trainer to ask the module for it
    dtype = torch.bfloat16 if precision == "bf16-mixed" else None
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step(batch: dict) -> None:
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        batch = data.degrade(batch, training=True)
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model.loss(model(batch["lr_raw"], batch["lr_ref"], batch.get("wb"), batch.get("ccm")), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(warmup):
        step(batches[i % len(batches)])
    sync()
    start = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    sync()
    return batch * steps / (time.perf_counter() - start)


def train_steps() -> bool:
    import torch

    ok = True
    for precision in ("bf16-mixed", "32-true"):
        try:
            torch.cuda.reset_peak_memory_stats()
            rate = images_per_second(precision)
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(f"x4 train step {precision}: {rate:.1f} images/s (batch 6, LR crop 128, width 128; "
                  f"peak {peak:.1f} GiB)")  # fmt: skip
        except Exception as error:  # noqa: BLE001 (reported on its line; the other figures still run)
            print(f"x4 train step {precision}: FAILED ({type(error).__name__}: {error})")
            ok = False
        torch.cuda.empty_cache()
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device (torch {torch.__version__}): nothing to check")
        return 0
    count = torch.cuda.device_count()
    print(f"gpu_check: {count} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    results = [cuda_tests(), ddp_step(min(count, 2)), train_steps()]
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
