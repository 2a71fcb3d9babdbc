"""Two DDP "nodes" on one machine: two ``torchrun`` processes (one per node, one process each) joined over gloo."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_scale import QUICK

from rawsr.cli import holds_only_a_start

TESTS = Path(__file__).resolve().parent
RUN = Path("logs/train/runs/mn")
TWO_NODES = (
    "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2",
    "trainer.strategy.process_group_backend=gloo", "run_name=mn", "callbacks.progress_bar=null",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nodes(cwd: Path, port: int, log_dirs: tuple[str, str], *args: str) -> list[subprocess.Popen]:
    """Start node 0 and node 1 (each ``torchrun`` in its own session, output in ``cwd/node<R>.txt``)."""
    procs = []
    for rank, log_dir in enumerate(log_dirs):
        env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
        env.update(OMP_NUM_THREADS="1", RAWSR_LOG_DIR=log_dir, WANDB_MODE="offline")
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}",
            "--nproc-per-node=1", "--master-addr=127.0.0.1", f"--master-port={port}",
            "-m", "rawsr.train", *QUICK, *TWO_NODES, *args,
        ]  # fmt: skip
        out = open(cwd / f"node{rank}.txt", "w")  # noqa: SIM115 (closed with the process)
        procs.append(
            subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        )
        out.close()
    return procs


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (torchrun starts each worker in a session of its own)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def signal_node(proc: subprocess.Popen, signum: int) -> None:
    """Send ``signum`` to a node: its torchrun and every process below it."""
    for pid in [*descendants(proc.pid), proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def kill_nodes(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        signal_node(proc, signal.SIGKILL)
        proc.wait()


def finish(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    """Wait for every node; kill those still running after ``timeout`` seconds (all of them), with their workers."""
    deadline = time.monotonic() + timeout
    try:
        return [proc.wait(timeout=max(1.0, deadline - time.monotonic())) for proc in procs]
    finally:
        kill_nodes(procs)


def output(cwd: Path, rank: int) -> str:
    return (cwd / f"node{rank}.txt").read_text()


def probe(folder: Path) -> tuple[str, ...]:
    return ("+callbacks.probe._target_=rank_probe.RankProbe", f"+callbacks.probe.folder={folder}")


def assert_same_weights(folder: Path) -> None:
    rank0, rank1 = (torch.load(folder / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)


@pytest.mark.slow
def test_two_nodes_train_alike_score_each_image_once_and_resume(tmp_path):
    # Node-local disks for the first start: node 1's run folder must hold only what Hydra writes at a start.
    args = ("data.train.samples_per_epoch=16", "trainer.max_epochs=1", "logger=[csv,wandb]")
    procs = start_nodes(tmp_path, free_port(), ("node0", "node1"), *args, *probe(tmp_path / "first"))
    codes = finish(procs, timeout=240)
    assert codes == [0, 0], output(tmp_path, 0)[-3000:] + output(tmp_path, 1)[-3000:]
    assert "MEMBER: 2/2" in output(tmp_path, 1)

    assert_same_weights(tmp_path / "first")
    records = [json.loads((tmp_path / "first" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["global_step"] for r in records] == [2, 2] and records[0]["world_size"] == 2
    (scored0,), (scored1,) = (r["validations"] for r in records)  # one validation
    assert sorted(scored0 + scored1) == list(range(records[0]["val_images"]))  # each image once, on one rank
    assert scored0 and scored1

    run0, run1 = tmp_path / "node0" / RUN.relative_to("logs"), tmp_path / "node1" / RUN.relative_to("logs")
    assert (run0 / "checkpoints" / "last.ckpt").is_file() and (run0 / "csv" / "metrics.csv").is_file()
    assert (run0 / "wandb-run-id").is_file() and any((run0 / "wandb").glob("offline-run-*"))
    assert holds_only_a_start(run1), sorted(str(p.relative_to(run1)) for p in run1.rglob("*"))

    # A shared file system for the restart: both nodes continue from node 0's last checkpoint.
    args = ("data.train.samples_per_epoch=16", "trainer.max_epochs=2", "resume=true")
    procs = start_nodes(tmp_path, free_port(), ("node0", "node0"), *args, *probe(tmp_path / "resumed"))
    codes = finish(procs, timeout=240)
    assert codes == [0, 0], output(tmp_path, 0)[-3000:] + output(tmp_path, 1)[-3000:]
    for rank in (0, 1):
        assert "resuming run 'mn' from" in output(tmp_path, rank) and "(global step 2, epoch 1)" in output(
            tmp_path, rank
        )
    assert_same_weights(tmp_path / "resumed")
    records = [json.loads((tmp_path / "resumed" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["global_step"] for r in records] == [4, 4]
    assert torch.load(run0 / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


def wait_for_training(cwd: Path, procs: list[subprocess.Popen], timeout: float = 120) -> None:
    """Wait until both nodes joined the process group and rank 0 started its training loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "MEMBER: 2/2" in output(cwd, 1) and "All distributed processes registered" in output(cwd, 0):
            time.sleep(4)  # into the training steps
            return
        assert all(proc.poll() is None for proc in procs), output(cwd, 0)[-2000:] + output(cwd, 1)[-2000:]
        time.sleep(0.5)
    raise AssertionError("the nodes did not start training:\n" + output(cwd, 0)[-2000:] + output(cwd, 1)[-2000:])


def seconds_until_node0_exits(cwd: Path, procs: list[subprocess.Popen], signum: int, limit: float) -> float:
    """Send ``signum`` to node 1 (torchrun and its worker) mid-training; return how long node 0 took to exit (it
    must fail: non-zero)."""
    try:
        wait_for_training(cwd, procs)
        signal_node(procs[1], signum)
        start = time.monotonic()
        code = procs[0].wait(timeout=limit)
        assert code != 0, output(cwd, 0)[-2000:]
        return time.monotonic() - start
    finally:
        kill_nodes(procs)


LONG = ("data.train.samples_per_epoch=4000", "trainer.max_epochs=1", "logger=csv")


@pytest.mark.slow
def test_a_killed_node_stops_the_other_at_once(tmp_path):
    procs = start_nodes(tmp_path, free_port(), ("logs", "logs"), *LONG)
    seconds = seconds_until_node0_exits(tmp_path, procs, signal.SIGKILL, limit=120)
    print(f"node 0 exited {seconds:.1f} s after node 1 was killed")
    assert seconds < 30, seconds  # gloo fails the next collective when the peer's sockets close


@pytest.mark.slow
def test_a_hung_node_stops_the_other_after_the_process_group_timeout(tmp_path):
    procs = start_nodes(tmp_path, free_port(), ("logs", "logs"), *LONG, "trainer.strategy.timeout_s=15")
    seconds = seconds_until_node0_exits(tmp_path, procs, signal.SIGSTOP, limit=120)
    print(f"node 0 exited {seconds:.1f} s after node 1 stopped (timeout_s=15)")
    assert 10 < seconds < 60, seconds
