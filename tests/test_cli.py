"""``rawsr.cli``: one device resolution and one error report for the four entry points."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rawsr.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, resolve_device, run_entry
from rawsr.config import ConfigError

REPO = Path(__file__).resolve().parents[1]


def python_env() -> dict[str, str]:
    import rawsr

    src = str(Path(rawsr.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def test_resolve_device_accepts_auto_cpu_and_cuda():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda:0", "valset.device") == torch.device("cuda:0")


@pytest.mark.parametrize("value", ["gpu", "CPU", "cuda:", "cuda:x", "cuda:-1", "", None, 0])
def test_resolve_device_refuses_other_values_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"^config key 'valset\.device': expected auto, cpu, cuda or cuda:N, got "):
        resolve_device(value, "valset.device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("value", ["cuda", "cuda:0"])
def test_resolve_device_refuses_absent_cuda(value):
    with pytest.raises(ConfigError, match=rf"^config key 'device': {value} asked for, but this machine has 0 CUDA"):
        resolve_device(value)


def test_run_entry_turns_endings_into_exit_codes(caplog):
    log = logging.getLogger("rawsr.test_cli")

    def bad() -> int:
        raise ConfigError("config key 'x': expected y, got z")

    def interrupted() -> int:
        raise KeyboardInterrupt

    with caplog.at_level(logging.ERROR, logger="rawsr.test_cli"):
        assert run_entry(lambda: None, log) == EXIT_OK
        assert run_entry(lambda: 1, log) == 1
        assert run_entry(bad, log) == EXIT_USAGE
        assert run_entry(interrupted, log) == EXIT_INTERRUPTED
    assert [r.getMessage() for r in caplog.records] == ["config key 'x': expected y, got z", "interrupted"]


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("module", "arguments"),
    [
        ("rawsr.predict", ["ckpt_path=m.ckpt", "input=a.dng", "device=gpu"]),
        ("rawsr.evaluate", ["ckpt_path=m.ckpt", "device=gpu"]),
    ],
)
def test_entry_point_given_a_bad_device_exits_2_with_one_line(tmp_path, module, arguments):
    command = [sys.executable, "-m", module, *arguments, f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run(command, cwd=tmp_path, env=python_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_USAGE, done.stdout + done.stderr
    lines = error_lines(done)
    assert len(lines) == 1, lines
    assert "config key 'device': expected auto, cpu, cuda or cuda:N, got 'gpu'" in lines[0]
