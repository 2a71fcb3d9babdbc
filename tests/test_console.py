"""The console of ``python -m rawsr.train``: each message once (and the same lines in ``train.log``), the run folder
first, and a failed start that leaves no run folder behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

NARROW = ("model.net.width=16", "model.net.growth=8", "model.net.dense_layers=2")
SMALL = (
    "data.crop=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.val.val_crops=32",
    "data.val.val_samples=2",
    "trainer.check_val_every_n_epoch=1",
)
TINY = (*NARROW, *SMALL, "data.train.samples_per_epoch=8", "trainer.max_epochs=1", "trainer.log_every_n_steps=1")
#: A refresh of the plain (non-terminal) progress bar: refreshes are separated by carriage returns, and a log line
#: may follow the last one without a newline.
PROGRESS = re.compile(r"^(Sanity Checking|Training|Validation|Testing|Epoch \d+)\b.*(it/s|s/it).*?]")
ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def run_train(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(OMP_NUM_THREADS="1", RAWSR_LOG_DIR="logs", WANDB_MODE="disabled")
    return subprocess.run(
        [sys.executable, "-m", "rawsr.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def message(line: str) -> str:
    """A console line without Hydra's ``[time][logger][LEVEL] - `` prefix."""
    return re.sub(r"^\[[^]]*\]\[[^]]*\]\[[A-Z]+\] - ", "", line)


def without_progress(output: str) -> list[str]:
    """The lines of ``output`` without the progress bar's refreshes (each ``\\r``- or ``\\n``-separated piece
    that is a refresh, and blank pieces, dropped; cursor escapes removed)."""
    lines = []
    for piece in re.split(r"[\r\n]", ESCAPES.sub("", output)):
        while PROGRESS.match(piece):
            piece = PROGRESS.sub("", piece, count=1)
        if piece.strip():
            lines.append(piece.rstrip())
    return lines


def runs(cwd: Path) -> list[str]:
    folder = cwd / "logs" / "train" / "runs"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.slow
def test_a_demo_run_prints_each_line_once_and_the_run_folder_first(tmp_path):
    result = run_train(tmp_path, *TINY)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (name,) = runs(tmp_path)
    lines = without_progress(result.stdout)
    assert message(lines[0]) == f"run folder: logs/train/runs/{name}"
    assert without_progress(result.stderr) == []  # no warning bypasses the log
    # Every line once, apart from the summary table's two rules.
    counts = Counter(message(line) for line in lines if set(message(line)) != {"-"})
    assert [line for line, n in counts.items() if n > 1] == []
    # The same lines, in the same format, in the run's train.log.
    log_file = (tmp_path / "logs" / "train" / "runs" / name / "train.log").read_text()
    assert [line.rstrip() for line in log_file.splitlines() if line.strip()] == lines
    # The model summary once, without the test metrics; no advert, no deprecation warning.
    assert sum("| Name " in line for line in lines) == 1
    assert [line for line in lines if re.search(r"\| test_", line)] == []
    assert [line for line in lines if re.search(r"litlogger|Tip:|deprecated|INFO: ", line)] == []
    assert sum(line.startswith(("INFO:", "WARNING:")) for line in lines) == 0


CONFIG_ERRORS = {  # found in the config alone: one line, before the run folder is announced
    "bad-path": (
        ("experiment=x2_blind", "data.root=/nowhere"),
        "config key 'data.root': the path /nowhere does not exist",
    ),
    "endless": (
        ("trainer.max_epochs=-1",),
        "config key 'trainer.max_epochs': -1 trains without end; give a number of epochs, or bound the run with "
        "+trainer.max_steps=N or +trainer.max_time=DD:HH:MM:SS",
    ),
}
BUILD_ERRORS = {  # found when data and model are built: after the run folder was announced
    "bad-crop": (
        (*NARROW, "data.crop=30"),
        "config key 'data.crop': expected a multiple of 4 (RawSRNet.SIZE_MULTIPLE), got 30",
    ),
    "scale-4-demo": (
        ("data.scale=4", "data.val.val_crops=80"),
        "config key 'data.val.val_crops': 80 LR pixels make crops of 320 px at scale 4, larger than image "
        "chelsea of size (300, 451); set data.val.val_crops to at most 72",
    ),
}


@pytest.mark.parametrize("args,error", CONFIG_ERRORS.values(), ids=CONFIG_ERRORS.keys())
def test_a_config_error_is_one_line_and_leaves_no_run_folder(tmp_path, args, error):
    result = run_train(tmp_path, *args)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert [message(line) for line in (result.stdout + result.stderr).splitlines()] == [error]
    assert runs(tmp_path) == []


@pytest.mark.parametrize("args,error", BUILD_ERRORS.values(), ids=BUILD_ERRORS.keys())
def test_a_failed_build_names_the_key_and_removes_the_announced_run_folder(tmp_path, args, error):
    result = run_train(tmp_path, *args, "data.num_workers=0")
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    raw = result.stdout.splitlines()
    lines = [message(line) for line in raw]
    folder = lines[0].removeprefix("run folder: ")
    assert lines[0].startswith("run folder: logs/train/runs/")
    assert [message(line) for line in raw if "][ERROR] - " in line] == [error]
    assert lines[-1] == f"removed the run folder {folder}: the run did not start"
    assert runs(tmp_path) == []


def test_an_endless_run_bounded_by_time_is_allowed(compose_train):
    from rawsr.train import check_duration

    cfg = compose_train("trainer.max_epochs=-1", "+trainer.max_time=00:00:01:00")
    check_duration(cfg.trainer)  # no error
    check_duration(compose_train("trainer.max_epochs=null", "+trainer.max_steps=10").trainer)
