"""``python -m rawsr.report``: an ablation study's table and curves from run folders with known metrics, computed here
independently (NumPy and hard-coded t quantiles), and the refusals of what cannot be reported."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from rawsr.config import ConfigError
from rawsr.report import CURVES_FILE, REPORT_FILE, find_runs, mean_curve, read_curve, report, summarise

T975_2 = 4.302652729911275  # t(0.975, 2): three seeds, paired
T975_4 = 2.7764451051977987  # t(0.975, 4): Welch with two groups of three of equal variance
T95_2 = 2.919985580355516  # t(0.95, 2): 90% intervals

#: Final validation PSNR and SSIM per ablation and seed (earlier validations are written with other values).
PSNR = {"full": [20.0, 20.5, 21.1], "no_fusion": [19.4, 20.1, 20.2], "srgb_input": [18.0, 18.9, 18.3]}
SSIM = {"full": [0.70, 0.72, 0.75], "no_fusion": [0.69, 0.70, 0.74], "srgb_input": [0.60, 0.66, 0.61]}
SEEDS = (1, 2, 3)
BICUBIC = (23.5, 0.61)
STEPS = (16, 32, 48)  # validations at the end of epochs 0, 1, 2


def write_run(
    folder: Path,
    ablation: str,
    seed: int,
    psnr: list[float],
    ssim: list[float],
    experiment: str = "ablation",
    steps: tuple[int, ...] = STEPS,
) -> Path:
    """A training run folder as rawsr.train writes it: the saved config and Lightning's CSV metrics (learning-rate
    rows between the validation rows), one validation per step of ``steps`` with the values ``psnr``, ``ssim``."""
    (folder / ".hydra").mkdir(parents=True)
    config = {"experiment_name": experiment, "ablation_name": ablation, "seed": seed, "run_name": folder.name}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    lines = ["epoch,lr-Adam,step,val/psnr,val/psnr_bicubic,val/ssim,val/ssim_bicubic"]
    for epoch, (step, p, s) in enumerate(zip(steps, psnr, ssim, strict=True)):
        lines.append(f",0.001,{step - 1},,,,")
        lines.append(f"{epoch},,{step},{p},{BICUBIC[0]},{s},{BICUBIC[1]}")
    (folder / "csv").mkdir()
    (folder / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return folder


def write_study(root: Path, psnr=PSNR, ssim=SSIM, seeds=None, experiment: str = "ablation") -> Path:
    """One run per ablation and seed under ``root``, whose last validation has the values of ``psnr``, ``ssim``."""
    for ablation in psnr:
        for i, seed in enumerate((seeds or {}).get(ablation, SEEDS)):
            final_p, final_s = psnr[ablation][i], ssim[ablation][i]
            curve_p = [final_p - 3.0 - seed, final_p - 1.0, final_p]  # earlier values: only the last one counts
            curve_s = [final_s - 0.2, final_s - 0.1, final_s]
            write_run(root / f"{experiment}-{ablation}-seed{seed}", ablation, seed, curve_p, curve_s, experiment)
    return root


def report_cfg(*overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rawsr.config import config_dir

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose("report", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def sd(values) -> float:
    """The sample standard deviation, written out."""
    x = np.asarray(values, dtype=np.float64)
    return math.sqrt(((x - x.mean()) ** 2).sum() / (len(x) - 1))


def row(summary, ablation: str):
    (found,) = [r for r in summary.rows if r.ablation == ablation]
    return found


# ------------------------------------------------------------------------------------------------ statistics


def test_paired_by_seed_means_spreads_and_intervals(tmp_path):
    summary = summarise(find_runs([write_study(tmp_path)], None), "full", 0.95)
    assert summary.paired and [r.ablation for r in summary.rows] == ["full", "no_fusion", "srgb_input"]
    for ablation in PSNR:
        got = row(summary, ablation)
        assert got.seeds == SEEDS
        for metric, values in (("val/psnr", PSNR), ("val/ssim", SSIM)):
            assert got.mean[metric] == pytest.approx(sum(values[ablation]) / 3, abs=1e-12)
            assert got.sd[metric] == pytest.approx(sd(values[ablation]), abs=1e-12)
            if ablation == "full":
                assert got.difference[metric] is None
                continue
            d = np.array(values[ablation]) - np.array(values["full"])
            half = T975_2 * sd(d) / math.sqrt(3)
            diff = got.difference[metric]
            assert diff.mean == pytest.approx(d.mean(), abs=1e-12)
            assert (diff.low, diff.high) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))
    assert summary.bicubic == {"val/psnr_bicubic": BICUBIC[0], "val/ssim_bicubic": BICUBIC[1]}
    assert summary.steps == (STEPS[-1],)


def test_welch_when_the_seeds_differ(tmp_path):
    psnr = {"full": [20.0, 21.0, 22.0], "no_fusion": [18.0, 19.0, 20.0]}  # variances 1 and 1: nu = 4
    ssim = {"full": [0.70, 0.72, 0.75], "no_fusion": [0.69, 0.70, 0.74]}
    root = write_study(tmp_path, psnr, ssim, seeds={"no_fusion": (1, 2, 4)})
    summary = summarise(find_runs([root], None), "full", 0.95)
    assert not summary.paired
    diff = row(summary, "no_fusion").difference["val/psnr"]
    half = T975_4 * math.sqrt(1 / 3 + 1 / 3)
    assert diff.mean == pytest.approx(-2.0)
    assert (diff.low, diff.high) == (pytest.approx(-2.0 - half), pytest.approx(-2.0 + half))
    # SSIM: Welch-Satterthwaite written out, with the t quantile of its non-integer degrees of freedom
    a, b = np.array(ssim["no_fusion"]), np.array(ssim["full"])
    va, vb = sd(a) ** 2 / 3, sd(b) ** 2 / 3
    nu = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    from scipy import stats

    half = stats.t.ppf(0.975, nu) * math.sqrt(va + vb)
    got = row(summary, "no_fusion").difference["val/ssim"]
    assert (got.mean, got.low, got.high) == pytest.approx((a.mean() - b.mean(), a.mean() - b.mean() - half,
                                                           a.mean() - b.mean() + half))  # fmt: skip


def test_confidence_sets_the_quantile(tmp_path):
    summary = summarise(find_runs([write_study(tmp_path)], None), "full", 0.90)
    d = np.array(PSNR["no_fusion"]) - np.array(PSNR["full"])
    diff = row(summary, "no_fusion").difference["val/psnr"]
    assert diff.high - diff.mean == pytest.approx(T95_2 * sd(d) / math.sqrt(3))


def test_one_seed_gives_means_without_spread_or_interval(tmp_path):
    root = write_study(tmp_path, {"full": [20.0], "no_fusion": [19.0]}, {"full": [0.7], "no_fusion": [0.6]},
                       seeds={"full": (1,), "no_fusion": (1,)})  # fmt: skip
    summary = summarise(find_runs([root], None), "full", 0.95)
    diff = row(summary, "no_fusion").difference["val/psnr"]
    assert diff.mean == pytest.approx(-1.0) and math.isnan(diff.low) and math.isnan(row(summary, "full").sd["val/psnr"])


def test_the_curve_is_the_mean_and_spread_over_seeds_at_each_step(tmp_path):
    runs = find_runs([write_study(tmp_path)], None)
    steps, mean, spread = mean_curve([r for r in runs if r.ablation == "full"], "val/psnr")
    per_seed = np.array([[p - 3.0 - seed, p - 1.0, p] for p, seed in zip(PSNR["full"], SEEDS, strict=True)])
    assert steps.tolist() == list(STEPS)
    np.testing.assert_allclose(mean, per_seed.mean(axis=0))
    np.testing.assert_allclose(spread, [sd(column) for column in per_seed.T])


def test_a_resumed_run_keeps_the_last_row_of_a_step_and_the_step_order(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(
        "epoch,lr-Adam,step,val/psnr,val/psnr_bicubic,val/ssim,val/ssim_bicubic\n"
        ",0.001,0,,,,\n0,,1,5.0,23.0,0.1,0.5\n1,,3,9.0,23.0,0.2,0.5\n"
        "1,,3,9.5,23.0,0.25,0.5\n2,,5,12.0,23.0,0.3,0.5\n"  # step 3 validated again after a resume
    )
    curve = read_curve(path)
    assert curve["step"].tolist() == [1, 3, 5]
    assert curve["val/psnr"].tolist() == [5.0, 9.5, 12.0] and curve["epoch"].tolist() == [0, 1, 2]


# ------------------------------------------------------------------------------------------------ finding runs


def test_runs_are_found_in_a_list_of_folders_and_other_runs_are_left_out(tmp_path):
    write_study(tmp_path / "a", {"full": PSNR["full"]}, {"full": SSIM["full"]})
    write_study(tmp_path / "b" / "nested", {"no_fusion": PSNR["no_fusion"]}, {"no_fusion": SSIM["no_fusion"]})
    evaluate_run = tmp_path / "b" / "evaluate-run" / ".hydra"  # another entry point's run: no ablation_name
    evaluate_run.mkdir(parents=True)
    (evaluate_run / "config.yaml").write_text(yaml.safe_dump({"ckpt_path": "x.ckpt", "protocol": "paper"}))
    runs = find_runs([tmp_path / "a", tmp_path / "b"], None)
    assert sorted((r.ablation, r.seed) for r in runs) == [(a, s) for a in ("full", "no_fusion") for s in SEEDS]


def test_experiment_name_picks_the_runs_of_one_experiment(tmp_path):
    write_study(tmp_path, experiment="ablation")
    write_study(tmp_path, {"full": [30.0, 31.0, 32.0]}, {"full": [0.9, 0.9, 0.9]}, experiment="x4_blind")
    several = r"^config key 'experiment_name': .* experiments \['ablation', 'x4_blind'\]; .* experiment_name=NAME$"
    with pytest.raises(ConfigError, match=several):
        find_runs([tmp_path], None)
    runs = find_runs([tmp_path], "x4_blind")
    assert {r.experiment for r in runs} == {"x4_blind"} and len(runs) == 3


# ------------------------------------------------------------------------------------------------ the entry point


def test_report_writes_the_table_sentence_and_a_png(tmp_path):
    from PIL import Image

    root, out = write_study(tmp_path / "runs"), tmp_path / "out" / "study"
    paths = report(report_cfg(f"runs={root}", f"output_dir={out}"))
    assert paths == [out / REPORT_FILE, out / CURVES_FILE]
    text = (out / REPORT_FILE).read_text()
    d = np.array(PSNR["srgb_input"]) - np.array(PSNR["full"])
    half = T975_2 * sd(d) / math.sqrt(3)
    line = next(x for x in text.splitlines() if x.startswith("| `srgb_input` |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    expected = [f"{np.mean(PSNR['srgb_input']):.3f}", f"{sd(PSNR['srgb_input']):.3f}"]
    expected += [f"{np.mean(SSIM['srgb_input']):.4f}", f"{sd(SSIM['srgb_input']):.4f}"]
    assert cells[:6] == ["`srgb_input`", "3", *expected]
    assert cells[6] == f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}]"
    assert next(x for x in text.splitlines() if x.startswith("| `full` |")).endswith("| reference | reference |")
    assert "paired by seed (every ablation has the seeds 1, 2, 3)" in text and "t(0.975, n − 1) · sd / √n" in text
    assert f"bicubic upsampling scores {BICUBIC[0]:.3f} dB PSNR and {BICUBIC[1]:.4f} SSIM" in text
    with Image.open(out / CURVES_FILE) as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 300
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # drawn, not blank
    assert sorted(p.name for p in out.iterdir()) == [CURVES_FILE, REPORT_FILE]  # no temporary file left


def test_a_failing_figure_leaves_the_previous_report_untouched(tmp_path, monkeypatch):
    import rawsr.report

    out = tmp_path / "out"
    out.mkdir()
    (out / REPORT_FILE).write_text("previous\n")

    def broken(*args):
        raise RuntimeError("no figure")

    monkeypatch.setattr(rawsr.report, "curves_png", broken)
    with pytest.raises(RuntimeError):
        report(report_cfg(f"runs={write_study(tmp_path / 'runs')}", f"output_dir={out}"))
    assert (out / REPORT_FILE).read_text() == "previous\n" and sorted(p.name for p in out.iterdir()) == [REPORT_FILE]


def without_validation(run: Path) -> None:
    """Leave ``run`` with metrics that hold no validation row (a run stopped before it validated)."""
    header = "epoch,lr-Adam,step,val/psnr,val/psnr_bicubic,val/ssim,val/ssim_bicubic"
    (run / "csv" / "metrics.csv").write_text(f"{header}\n,0.001,0,,,,\n")


@pytest.mark.parametrize(
    ("make", "overrides", "message"),
    [
        (lambda root: None, (), r"^config key 'runs': no training runs under .*runs \(a run folder holds "),
        (lambda root: None, ("runs=[{root}/nowhere]",), r"^config key 'runs': .*nowhere is not a folder$"),
        (
            lambda root: write_study(root, {"no_fusion": PSNR["no_fusion"]}, {"no_fusion": SSIM["no_fusion"]}),
            (),
            r"^config key 'reference': no run of ablation 'full' .* among \['no_fusion'\]; .* reference=NAME$",
        ),
        (
            lambda root: write_study(root) and without_validation(root / "ablation-full-seed2"),
            (),
            r"^.*ablation-full-seed2/csv/metrics\.csv: no validation rows \(no val/psnr value\)",
        ),
        (
            lambda root: (write_study(root), (root / "ablation-full-seed2" / "csv" / "metrics.csv").unlink()),
            (),
            r"^.*ablation-full-seed2: no csv/metrics\.csv \(train with the csv logger",
        ),
        (
            lambda root: (write_study(root), write_run(root / "again", "full", 2, [1.0], [0.1], steps=(8,))),
            (),
            r"^config key 'runs': two runs of ablation 'full' with seed 2: ",
        ),
        (lambda root: write_study(root), ("confidence=95",), r"^config key 'confidence': expected a number between"),
    ],
    ids=["no-runs", "not-a-folder", "no-reference", "no-validation", "no-csv", "same-seed-twice", "confidence"],
)
def test_what_cannot_be_reported_is_refused_naming_the_key_or_file(tmp_path, make, overrides, message):
    root, out = tmp_path / "runs", tmp_path / "out"
    root.mkdir()
    make(root)
    overrides = [o.format(root=root) for o in overrides]
    with pytest.raises(ConfigError, match=message):
        report(report_cfg(f"runs={root}", f"output_dir={out}", *overrides))
    assert not out.exists()


def python_env(tmp_path: Path) -> dict[str, str]:
    import rawsr

    src = str(Path(rawsr.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def run_report(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rawsr.report", *arguments]
    return subprocess.run(command, cwd=tmp_path, env=python_env(tmp_path), capture_output=True, text=True, timeout=120)


def test_the_command_reports_and_refuses_in_one_line_with_exit_2(tmp_path):
    root = write_study(tmp_path / "runs")
    done = run_report(tmp_path, "runs=runs", "output_dir=out")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out" / REPORT_FILE).is_file() and (tmp_path / "out" / CURVES_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "runs"]  # no Hydra folder, no log file

    (root / "ablation-no_fusion-seed1" / "csv" / "metrics.csv").unlink()
    done = run_report(tmp_path, "runs=runs", "output_dir=out2")
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, lines
    assert "ablation-no_fusion-seed1: no csv/metrics.csv" in lines[0] and not (tmp_path / "out2").exists()


@pytest.mark.slow
def test_reports_the_runs_that_training_writes(tmp_path):
    """The real layout: a sweep of two one-epoch demo runs of experiment=ablation, then the report."""
    env = {**python_env(tmp_path), "OMP_NUM_THREADS": "1", "RAWSR_LOG_DIR": str(tmp_path / "logs")}
    env["WANDB_MODE"] = "disabled"
    quick = ["model.net.width=16", "model.net.growth=8", "model.net.dense_layers=2", "data.crop=32", "threads=1",
             "data.batch_size=4", "data.num_workers=0", "data.val.val_crops=32", "data.val.val_samples=2",
             "trainer.check_val_every_n_epoch=1",
             "data.train.samples_per_epoch=8",
             "trainer.max_epochs=1", "+trainer.num_sanity_val_steps=0", "callbacks.model_summary=null"]  # fmt: skip
    command = [sys.executable, "-m", "rawsr.train", "-m", "experiment=ablation", "ablation=none,no_fusion", "seed=7"]
    done = subprocess.run([*command, *quick], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    study = tmp_path / "logs" / "train" / "runs" / "ablation"
    assert sorted(p.name for p in study.iterdir() if p.is_dir()) == ["ablation-full-seed7", "ablation-no_fusion-seed7"]

    done = run_report(tmp_path, f"runs={study}", "output_dir=out")
    assert done.returncode == 0, done.stdout + done.stderr
    text = (tmp_path / "out" / REPORT_FILE).read_text()
    assert "| `full` | 1 |" in text and "| `no_fusion` | 1 |" in text and "(one seed: no interval)" in text
    assert "bicubic upsampling scores" in text and (tmp_path / "out" / CURVES_FILE).stat().st_size > 1000


def test_the_study_logs_each_run_to_wandb_by_ablation_and_seed(compose_train):
    """experiment=ablation: CSV for the report and a W&B run named after its folder, grouped by experiment, typed
    by ablation, tagged with its seed; logger=csv leaves W&B out without a half-built logger."""
    from rawsr.train import build_loggers

    cfg = compose_train("experiment=ablation", "ablation=no_fusion", "seed=4")
    assert sorted(cfg.logger) == ["csv", "tensorboard", "wandb"]
    wandb = cfg.logger.wandb
    assert (wandb.name, wandb.group, wandb.job_type) == ("ablation-no_fusion-seed4", "ablation", "no_fusion")
    assert list(wandb.tags) == ["demo", "ablation", "seed4"] and wandb.ablation == "no_fusion"

    cfg = compose_train("experiment=ablation", "ablation=no_fusion", "seed=4", "logger=csv")
    assert sorted(cfg.logger) == ["csv", "wandb"] and "_target_" not in cfg.logger.wandb
    assert [type(logger).__name__ for logger in build_loggers(cfg)] == ["ResumableCSVLogger"]
