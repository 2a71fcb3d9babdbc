"""``resume=true`` without ``run_name`` finds the newest run of the experiment; ``resume=PATH`` continues a given run;
with nothing to resume, one line and exit 2."""

from __future__ import annotations

import csv

import pytest
import torch
from test_console import TINY, message, run_train, runs, without_progress

RUNS = "logs/train/runs"


def last_step(tmp_path, name: str) -> int:
    return int(torch.load(tmp_path / RUNS / name / "checkpoints" / "last.ckpt", weights_only=True)["global_step"])


def epochs_in_csv(tmp_path, name: str) -> list[str]:
    with open(tmp_path / RUNS / name / "csv" / "metrics.csv") as handle:
        return sorted({row["epoch"] for row in csv.DictReader(handle) if row.get("val/psnr")})


def succeed(tmp_path, *args: str) -> list[str]:
    result = run_train(tmp_path, *TINY, "+trainer.num_sanity_val_steps=0", *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [message(line) for line in without_progress(result.stdout)]


@pytest.mark.slow
def test_resume_finds_the_newest_run_of_the_experiment_or_the_one_given(tmp_path):
    succeed(tmp_path, "run_name=older")
    succeed(tmp_path, "run_name=newer")
    assert (last_step(tmp_path, "older"), last_step(tmp_path, "newer")) == (2, 2)

    lines = succeed(tmp_path, "resume=true", "trainer.max_epochs=2")
    assert lines[:2] == [
        f"run folder: {RUNS}/newer",
        f"resuming run 'newer' from {RUNS}/newer/checkpoints/last.ckpt (global step 2, epoch 1)",
    ]
    assert runs(tmp_path) == ["newer", "older"]  # the folder this start was given is gone
    assert (last_step(tmp_path, "older"), last_step(tmp_path, "newer")) == (2, 4)
    assert epochs_in_csv(tmp_path, "newer") == ["0", "1"]  # the CSV rows continue
    log = (tmp_path / RUNS / "newer" / "train.log").read_text()
    assert log.count("run folder: ") == 2 and "resuming run 'newer'" in log  # the log continues too

    lines = succeed(tmp_path, f"resume={RUNS}/older", "trainer.max_epochs=2")
    assert lines[:2] == [
        f"run folder: {RUNS}/older",
        f"resuming run 'older' from {RUNS}/older/checkpoints/last.ckpt (global step 2, epoch 1)",
    ]
    assert (last_step(tmp_path, "older"), last_step(tmp_path, "newer")) == (4, 4)
    assert runs(tmp_path) == ["newer", "older"]

    # A failed start of a resumed run keeps the run's folder.
    result = run_train(tmp_path, *TINY, "resume=true", "trainer.max_epochs=-1")
    assert result.returncode == 2
    assert [message(line) for line in result.stdout.splitlines()] == [
        "config key 'trainer.max_epochs': -1 trains without end; give a number of epochs, or bound the run with "
        "+trainer.max_steps=N or +trainer.max_time=DD:HH:MM:SS"
    ]
    assert runs(tmp_path) == ["newer", "older"] and last_step(tmp_path, "older") == 4
    assert (tmp_path / RUNS / "older" / "train.log").read_text().count("trainer.max_epochs': -1") == 1


def test_resume_with_nothing_to_resume_says_what_it_looked_for(tmp_path):
    (tmp_path / RUNS / "other").mkdir(parents=True)  # a run of another experiment
    (tmp_path / RUNS / "other" / ".hydra").mkdir()
    (tmp_path / RUNS / "other" / ".hydra" / "config.yaml").write_text("experiment_name: x4_blind\n")
    (tmp_path / RUNS / "other" / "checkpoints").mkdir()
    (tmp_path / RUNS / "other" / "checkpoints" / "last.ckpt").write_bytes(b"")
    result = run_train(tmp_path, "resume=true")
    assert result.returncode == 2
    assert [message(line) for line in (result.stdout + result.stderr).splitlines()] == [
        f"resume=true: no run of experiment 'demo' under {RUNS} holds checkpoints/last.ckpt; start a new run "
        "without resume, or give resume=PATH (a run folder or a checkpoint)"
    ]
    assert runs(tmp_path) == ["other"]
