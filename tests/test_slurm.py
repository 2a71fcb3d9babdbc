"""SLURM preemption on one machine: a faked SLURM environment, an ``scontrol`` that records its call, SIGUSR1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_scale import QUICK

ARGS = (*QUICK, "data.train.samples_per_epoch=256", "trainer.max_epochs=2", "trainer.deterministic=true",
        "callbacks.step_checkpoint.every_n_train_steps=1000", "callbacks.progress_bar=null",
        "trainer.log_every_n_steps=1")  # fmt: skip
RUN = Path("logs/train/runs/slurm-4242")


def slurm_env(cwd: Path) -> dict[str, str]:
    """This environment as SLURM would set it for job 4242 (one task), with a recording ``scontrol`` first on PATH."""
    bin_dir = cwd / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {cwd / "scontrol-calls.txt"}\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SLURM_"))}
    env.update(OMP_NUM_THREADS="1", RAWSR_LOG_DIR="logs", WANDB_MODE="disabled", PATH=f"{bin_dir}:{env['PATH']}")
    env.update(SLURM_JOB_ID="4242", SLURM_NTASKS="1", SLURM_JOB_NAME="rawsr", SLURM_PROCID="0", SLURM_LOCALID="0",
               SLURM_NODEID="0", SLURM_NODELIST="localhost", SLURM_NTASKS_PER_NODE="1")  # fmt: skip
    return env


def start(cwd: Path) -> subprocess.Popen:
    out = open(cwd / "out.txt", "a")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen([sys.executable, "-m", "rawsr.train", *ARGS], cwd=cwd, env=slurm_env(cwd), stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    out.close()
    return proc


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.2)


def final_weights(cwd: Path) -> dict[str, torch.Tensor]:
    return torch.load(cwd / RUN / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_sigusr1_writes_a_whole_checkpoint_requeues_and_the_requeued_job_continues_exactly(tmp_path):
    reference, preempted = tmp_path / "reference", tmp_path / "preempted"
    reference.mkdir(), preempted.mkdir()
    proc = start(reference)
    try:
        assert proc.wait(timeout=300) == 0, (reference / "out.txt").read_text()[-3000:]
    finally:
        proc.kill()

    proc = start(preempted)
    calls = preempted / "scontrol-calls.txt"
    try:
        wait_for(lambda: "SLURM auto-requeueing enabled" in (preempted / "out.txt").read_text(), proc, "training")
        time.sleep(2)  # a few steps in (the run has 128)
        proc.send_signal(signal.SIGUSR1)
        wait_for(calls.is_file, proc, "scontrol call")
        proc.kill()  # SLURM ends the job once it is requeued
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert calls.read_text() == "requeue 4242\n"
    hpc = torch.load(preempted / RUN / "hpc_ckpt_1.ckpt", weights_only=True)
    step = int(hpc["global_step"])
    assert 0 < step < 128, step  # mid-run
    assert not list((preempted / RUN).glob(".*.part"))  # written through the atomic writer, nothing left over

    proc = start(preempted)  # the requeued job: the same command line and environment
    try:
        assert proc.wait(timeout=300) == 0, (preempted / "out.txt").read_text()[-3000:]
    finally:
        proc.kill()
    log = (preempted / "out.txt").read_text()
    assert f"hpc_ckpt_1.ckpt (global step {step}," in log
    assert [p.name for p in (preempted / "logs/train/runs").iterdir()] == ["slurm-4242"]
    expected, got = final_weights(reference), final_weights(preempted)
    difference = max(float((expected[k] - got[k]).abs().max()) for k in expected)
    print(f"largest weight difference after the requeue: {difference:.3g}")
    assert difference < 1e-5
