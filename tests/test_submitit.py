"""SLURM through hydra-submitit-launcher without a cluster: a sweep through submitit's local executor (pickled jobs,
started from their pickles, logged as on SLURM), the batch script a cluster would receive, the GPU check's CPU exit."""

from __future__ import annotations

import csv
import os
import re
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_scale import QUICK

REPO = Path(__file__).resolve().parents[1]


def sbatch_directives(script: str) -> dict[str, str]:
    """``#SBATCH --key=value`` lines as ``{key: value}`` (``True`` for a flag)."""
    found = re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?$", script, flags=re.MULTILINE)
    return {key: value or True for key, value in found}


def test_the_batch_script_asks_for_the_tasks_gpus_and_the_requeue_signal(tmp_path, monkeypatch):
    from rawsr.training.slurm import render_sbatch

    monkeypatch.setenv("RAWSR_LOG_DIR", str(tmp_path / "logs"))
    launcher = ("hydra.launcher.partition=gpu", "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4",
                "hydra.launcher.timeout_min=600")  # fmt: skip
    training = ("experiment=x4_blind", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2")
    script = render_sbatch([*launcher, *training])
    directives = sbatch_directives(script)
    assert {k: directives.get(k) for k in ("nodes", "ntasks-per-node", "gpus-per-node", "cpus-per-task", "time")} == {
        "nodes": "2", "ntasks-per-node": "4", "gpus-per-node": "4", "cpus-per-task": "8", "time": "600"}  # fmt: skip
    assert directives["signal"] == "USR1@120"  # Lightning's requeue signal, to every task, the launcher's delay
    assert directives["requeue"] is True
    assert directives["job-name"] == "train" and directives["partition"] == "gpu" and "array" not in directives
    assert script.count("--signal") == 1  # submitit's own USR2 request replaced, not doubled
    assert re.search(r"^srun .* -m submitit\.core\._submit ", script, flags=re.MULTILINE)
    assert str(tmp_path / "logs" / "train" / "multirun") in script  # the sweep folder, beside the runs

    sweep = render_sbatch([*launcher, "hydra.launcher.signal_delay_s=300", "model.optimizer.lr=1e-4,2e-4,4e-4"])
    directives = sbatch_directives(sweep)
    assert directives["array"] == "0-2%3" and directives["signal"] == "USR1@300"


def test_the_render_script_prints_the_batch_script(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAWSR_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(sys, "argv", ["render_sbatch.py", "hydra.launcher.nodes=2"])
    runpy.run_path(str(REPO / "scripts" / "render_sbatch.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert printed.startswith("#!/bin/bash") and sbatch_directives(printed)["nodes"] == "2"
    assert not (tmp_path / "logs").exists()  # rendered: nothing submitted, nothing written


def test_the_rendered_script_is_the_one_the_launcher_submits(tmp_path, monkeypatch):
    """The real ``-m hydra/launcher=slurm`` against an ``sbatch`` that keeps the script it is given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncat "$1" > {tmp_path}/submitted.sh\necho "Submitted batch job 777"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it; the job never runs
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    env.update(RAWSR_LOG_DIR=str(tmp_path / "logs"), PATH=f"{bin_dir}:{env['PATH']}")
    args = ["hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4", "trainer=ddp", "trainer.devices=4"]
    command = [sys.executable, "-m", "rawsr.train", "-m", "hydra/launcher=slurm", *args]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:  # once submitted, the launcher would wait for the job: stop it there
        deadline = time.monotonic() + 120
        while not (tmp_path / "submitted.sh").is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # the copy finishes
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    submitted = (tmp_path / "submitted.sh").read_text()
    from rawsr.training.slurm import render_sbatch

    monkeypatch.setenv("RAWSR_LOG_DIR", str(tmp_path / "logs"))
    rendered = render_sbatch(args)
    stamp = re.compile(r"multirun/[\d_-]+/")  # the sweep folders' times differ
    assert stamp.sub("multirun/T/", rendered) == stamp.sub("multirun/T/", submitted)


@pytest.mark.slow
def test_a_sweep_through_submitit_runs_each_job_from_its_pickle_in_its_own_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SLURM_", "SUBMITIT_"))}
    env.update(OMP_NUM_THREADS="1", RAWSR_LOG_DIR=str(tmp_path / "logs"), WANDB_MODE="disabled", HYDRA_FULL_ERROR="1")
    args = ["-m", "hydra/launcher=slurm_local", "model.optimizer.lr=1e-3,2e-3", *QUICK, "threads=1",
            "data.train.samples_per_epoch=8", "trainer.max_epochs=1", "callbacks.progress_bar=null"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "rawsr.train", *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # the sweep and its job processes, which share its session
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, output[-4000:]

    (sweep,) = (tmp_path / "logs" / "train" / "multirun").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0", "1"]
    for job, lr in zip(jobs, ("0.001", "0.002"), strict=True):
        assert (job / "checkpoints" / "last.ckpt").is_file()
        with open(job / "csv" / "metrics.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert {row["lr-Adam"] for row in rows if row.get("lr-Adam")} == {lr}
        assert any(row.get("val/psnr") for row in rows)
        assert f"model.optimizer.lr={lr}" in (job / ".hydra" / "overrides.yaml").read_text()
    # submitit's side, as on SLURM: the pickled job, its result and its logs in .submitit/<job id>/
    submitted = sorted((sweep / ".submitit").glob("*/*_submitted.pkl"))
    results = [p.with_name(p.name.replace("submitted", "0_result")) for p in submitted]
    assert len(submitted) == 2 and all(p.is_file() for p in results)
    logs = [p.read_text() + p.with_suffix(".err").read_text() for p in (sweep / ".submitit").glob("*/*_0_log.out")]
    assert len(logs) == 2 and all("Job completed successfully" in text for text in logs)


def test_gpu_check_without_cuda_says_so_in_one_line_and_succeeds():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: scripts/gpu_check.py runs its checks instead")
    result = subprocess.run([sys.executable, REPO / "scripts" / "gpu_check.py"], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("\n") == 1 and "no CUDA" in result.stdout
