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


# ------------------------------------------------------------------------------------ run and output folders


def test_check_output_folder_refuses_files_and_folders_under_files(tmp_path):
    from rawsr.cli import check_output_folder

    (tmp_path / "a_file").write_text("x")
    assert check_output_folder(tmp_path / "new" / "deeper", "output_dir") == tmp_path / "new" / "deeper"
    with pytest.raises(ConfigError, match=rf"^config key 'output_dir': expected a folder, but {tmp_path}/a_file is a"):
        check_output_folder(tmp_path / "a_file", "output_dir")
    with pytest.raises(
        ConfigError, match=r"^config key 'cache_dir': cannot create the folder .*/a_file/sub: .* is a file$"
    ):
        check_output_folder(tmp_path / "a_file" / "sub", "cache_dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: the a_file/sub cases stand in")
def test_check_output_folder_refuses_a_read_only_parent(tmp_path):
    from rawsr.cli import check_output_folder

    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(
        ConfigError, match=r"^config key 'x': cannot create the folder .*/ro/sub: no write permission in"
    ):
        check_output_folder(tmp_path / "ro" / "sub", "x")


def write_text_checkpoint(tmp_path: Path) -> Path:
    (tmp_path / "notes.ckpt").write_text("these are notes, not a checkpoint\n")
    return tmp_path / "notes.ckpt"


def write_truncated_checkpoint(tmp_path: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(4096)}, "hyper_parameters": {}}, tmp_path / "whole.ckpt")
    data = (tmp_path / "whole.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.ckpt"


# (module, arguments with {file} = an existing file, {ckpt} = a text checkpoint, {cut} = a truncated one, the line)
USER_ERRORS = [
    (
        "rawsr.predict",
        ["ckpt_path={ckpt}", "input={file}", "output_dir={file}"],
        "config key 'output_dir': expected a folder, but {file} is a file",
    ),
    (
        "rawsr.predict",
        ["ckpt_path={ckpt}", "input={file}", "output_dir={file}/sub"],
        "config key 'output_dir': cannot create the folder {file}/sub: {file} is a file",
    ),
    ("rawsr.train", ["hydra.run.dir={file}"], "config key 'hydra.run.dir': expected a folder, but {file} is a file"),
    (
        "rawsr.train",
        ["run_name=x", "paths.log_dir={file}"],
        "config key 'hydra.run.dir': cannot create the folder {file}/train/runs/x: {file} is a file",
    ),
    (
        "rawsr.evaluate",
        ["ckpt_path={ckpt}", "hydra.run.dir={file}/sub"],
        "config key 'hydra.run.dir': cannot create the folder {file}/sub: {file} is a file",
    ),
    (
        "rawsr.prepare",
        ["task=cache", "hydra.run.dir={file}"],
        "config key 'hydra.run.dir': expected a folder, but {file} is a file",
    ),
    (
        "rawsr.prepare",
        ["task=cache", "input_dir=.", "cache_dir={file}"],
        "config key 'cache_dir': expected a folder, but {file} is a file",
    ),
    (
        "rawsr.prepare",
        ["task=valset", "valset.out_dir={file}/sub"],
        "config key 'valset.out_dir': cannot create the folder {file}/sub: {file} is a file",
    ),
    (
        "rawsr.predict",
        ["ckpt_path={ckpt}", "input={file}", "output_dir=out"],
        "config key 'ckpt_path': {ckpt} is not a rawsr checkpoint (not a file written by torch.save, or one cut short)",
    ),
    (
        "rawsr.predict",
        ["ckpt_path={cut}", "input={file}", "output_dir=out"],
        "config key 'ckpt_path': {cut} is not a rawsr checkpoint (not a file written by torch.save, or one cut short)",
    ),
    (
        "rawsr.evaluate",
        ["ckpt_path={ckpt}", "device=cpu", "hydra.run.dir=run"],
        "config key 'ckpt_path': {ckpt} is not a rawsr checkpoint (not a file written by torch.save, or one cut short)",
    ),
]


@pytest.mark.parametrize(("module", "arguments", "line"), USER_ERRORS, ids=lambda v: v if isinstance(v, str) else "")
def test_user_error_is_one_line_and_exit_2(tmp_path, module, arguments, line):
    paths = {
        "file": tmp_path / "a_file",
        "ckpt": write_text_checkpoint(tmp_path),
        "cut": write_truncated_checkpoint(tmp_path),
    }
    paths["file"].write_text("a file where a folder should be\n")
    before = set(tmp_path.rglob("*"))
    command = [sys.executable, "-m", module, *(a.format(**paths) for a in arguments)]
    done = subprocess.run(command, cwd=tmp_path, env=python_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_USAGE, done.stdout + done.stderr
    lines = error_lines(done)
    assert len(lines) == 1 and lines[0].endswith(line.format(**paths)), done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "(101)" not in done.stderr
    made = {p for p in set(tmp_path.rglob("*")) - before if p.parts[len(tmp_path.parts)] not in ("run", "out")}
    assert not made  # nothing made but the run folder Hydra makes before the command starts
