"""``python -m rawsr.<entry> --help``: each entry point's own page, from the comments of its config file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rawsr.cli import comment_choices, parse_config
from rawsr.config import config_dir

ENTRIES = ("train", "evaluate", "predict", "prepare", "report")
TRAINING_GROUPS = ("ablation", "trainer", "hparams_search", "experiment", "callbacks", "logger", "debug", "model")

# Prints the page of the entry point named in argv[1] as ``python -m`` would, then which heavy modules it imported.
PAGE_SCRIPT = """
import runpy, sys
entry = sys.argv[1]
sys.argv = [entry, "--help"]
try:
    runpy.run_module(entry, run_name="__main__")
finally:
    heavy = [m for m in ("torch", "lightning", "rawpy", "kornia") if m in sys.modules]
    print("imported:", " ".join(heavy) or "none")
"""


def python_env() -> dict[str, str]:
    import rawsr

    src = str(Path(rawsr.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def pages() -> dict[str, subprocess.CompletedProcess]:
    env = python_env()
    run = {
        entry: subprocess.run(
            [sys.executable, "-c", PAGE_SCRIPT, f"rawsr.{entry}"], env=env, capture_output=True, text=True, timeout=120
        )
        for entry in ENTRIES
    }
    return run


def key_line(page: str, key: str) -> str:
    lines = [line for line in page.splitlines() if line.strip().startswith(f"{key}=")]
    assert len(lines) == 1, f"{key}: {lines}"
    return lines[0]


@pytest.mark.parametrize("entry", ENTRIES)
def test_help_exits_0_before_importing_torch(pages, entry):
    done = pages[entry]
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith(f"usage: python -m rawsr.{entry} [key=value ...]")
    assert done.stdout.rstrip().endswith("imported: none")


@pytest.mark.parametrize("entry", ENTRIES)
def test_every_key_has_its_line_with_its_comment(pages, entry):
    config = parse_config((config_dir() / f"{entry}.yaml").read_text(), f"{entry}.yaml")
    page = pages[entry].stdout
    keys = [e for e in config.entries if not e.is_section and not e.path.startswith("hydra")]
    assert keys
    for e in keys:
        line = key_line(page, e.path)
        assert line.split()[0] == f"{e.path}={e.default}"
        assert line.endswith(e.comment), line


@pytest.mark.parametrize("entry", ["evaluate", "predict", "prepare", "report"])
def test_no_training_group_on_the_other_pages(pages, entry):
    for group in TRAINING_GROUPS:
        assert f"{group}=" not in pages[entry].stdout


def test_train_page_lists_groups_with_their_options(pages):
    page = pages["train"].stdout
    assert key_line(page, "trainer").split(None, 1) == ["trainer=default", "cpu | ddp | ddp_sim | default | gpu"]
    assert key_line(page, "experiment").startswith("  experiment=demo")
    assert "x4_blind" in key_line(page, "experiment")
    assert "resume=false" in page


def test_prepare_page_shows_the_task_values(pages):
    assert comment_choices(key_line(pages["prepare"].stdout, "task").split(None, 1)[1]) == ["cache", "valset"]


def test_choices_on_the_pages_are_the_ones_the_code_accepts():
    from rawsr.cli import DEVICES
    from rawsr.evaluate import PROTOCOLS
    from rawsr.inference import BLENDS, PRECISIONS
    from rawsr.predict import OUTPUT_SUFFIXES

    devices = [d.strip() for d in DEVICES.replace(" or ", ", ").split(",")]

    def choices(entry: str) -> dict[str, list[str]]:
        config = parse_config((config_dir() / f"{entry}.yaml").read_text(), entry)
        return {e.path: comment_choices(e.comment) for e in config.entries}

    predict, evaluate, prepare = choices("predict"), choices("evaluate"), choices("prepare")
    assert predict["format"] == list(OUTPUT_SUFFIXES)
    assert sorted(predict["blend"]) == sorted(BLENDS) and sorted(evaluate["blend"]) == sorted(BLENDS)
    assert predict["precision"] == [str(p) for p in PRECISIONS]
    assert predict["device"] == evaluate["device"] == prepare["valset.device"] == devices
    assert evaluate["protocol"] == list(PROTOCOLS)
    assert prepare["task"] == ["cache", "valset"]


def test_comment_choices_reads_only_a_leading_list():
    assert comment_choices("png | tiff: the output") == ["png", "tiff"]
    assert comment_choices("auto | cpu | cuda | cuda:N: where") == ["auto", "cpu", "cuda", "cuda:N"]
    assert comment_choices("How tiles merge. linear | mean") == []
    assert comment_choices("") == []
