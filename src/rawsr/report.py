"""``python -m rawsr.report runs=FOLDER output_dir=FOLDER``: the report of an ablation study from its training runs.

A run folder is a folder that holds the config Hydra saved for a training run (``.hydra/config.yaml``, with its
``ablation_name``, ``seed`` and ``experiment_name``) and the metrics Lightning's CSV logger wrote (``csv/metrics.csv``);
every such folder under ``runs`` (one folder or a list, searched recursively) is read. Each run contributes its last
validation (``val/psnr``, ``val/ssim``; ``val/psnr_bicubic`` and ``val/ssim_bicubic`` for reference). Written
atomically into ``output_dir``:

- ``report.md``: per ablation, the number of seeds, the mean and sample standard deviation over seeds of PSNR and
  SSIM, and the difference to the reference ablation (``reference``, the full model) with a confidence interval:
  paired by seed (mean of the per-seed differences +- t(1 - alpha/2, n - 1) sd / sqrt(n)) when every ablation has
  the same seeds, Welch's unequal-variance interval otherwise. A sentence under the table says which.
- ``curves.png``: the validation PSNR against the training step, the mean over seeds of each ablation with a band of
  +- one standard deviation, and bicubic upsampling for reference.

A folder without runs, a run without validation rows, runs of several experiments (unless ``experiment_name`` picks
one), two runs of one ablation and seed, and no run of the reference ablation are refused in one line (exit status 2):
the differences need the full model, so a report without it is not written (``reference=NAME`` compares with another
ablation instead).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from rawsr.cli import launch, run_entry
from rawsr.config import ConfigError, config_dir, require

log = logging.getLogger("rawsr.report")

#: Where a run folder keeps its config and its metrics.
CONFIG_FILE = Path(".hydra") / "config.yaml"
METRICS_FILE = Path("csv") / "metrics.csv"
#: The validation metrics a run must have logged, and those reported for reference when it did.
METRICS = ("val/psnr", "val/ssim")
BICUBIC = ("val/psnr_bicubic", "val/ssim_bicubic")
REPORT_FILE, CURVES_FILE = "report.md", "curves.png"


@dataclass(frozen=True)
class Run:
    """One training run: where it is, what it trained, and its validations in step order (``curve[name]`` is an
    array over validations for ``step``, ``epoch`` and each metric logged)."""

    folder: Path
    experiment: str
    ablation: str
    seed: int
    curve: dict[str, np.ndarray]

    def final(self, metric: str) -> float:
        """The metric at the run's last validation (``nan`` when it was not logged)."""
        values = self.curve.get(metric)
        return float(values[-1]) if values is not None else math.nan


@dataclass(frozen=True)
class Difference:
    """An ablation minus the reference: the estimate and its confidence interval (``nan`` bounds: none, one seed)."""

    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Row:
    """One line of the table: an ablation over its seeds."""

    ablation: str
    seeds: tuple[int, ...]
    mean: dict[str, float]
    sd: dict[str, float]
    difference: dict[str, Difference | None]


@dataclass(frozen=True)
class Summary:
    """The whole report: the rows (the reference first), how the differences were computed, the reference values."""

    experiment: str
    reference: str
    confidence: float
    paired: bool
    rows: list[Row]
    steps: tuple[int, ...]
    bicubic: dict[str, float]


# ------------------------------------------------------------------------------------------------ finding runs


def run_roots(value: object) -> list[Path]:
    """The folders named by the ``runs`` key (one path or a list of them), each checked to be a folder."""
    if value is None or value == "":
        raise ConfigError("config key 'runs' is not set: give runs=FOLDER (a folder of training runs) or runs=[A,B]")
    items = list(value) if isinstance(value, ListConfig | list | tuple) else [value]
    require(bool(items), "runs", "a folder of training runs or a non-empty list of folders", items)
    for item in items:
        if not Path(str(item)).is_dir():
            raise ConfigError(f"config key 'runs': {item} is not a folder")
    return [Path(str(item)) for item in items]


def run_folders(root: Path) -> list[Path]:
    """Every folder under ``root`` (``root`` included) that holds ``.hydra/config.yaml``, sorted."""
    found = {p.parent.parent for p in root.rglob(CONFIG_FILE.as_posix())}
    if (root / CONFIG_FILE).is_file():
        found.add(root)
    return sorted(found)


def read_identity(folder: Path) -> tuple[str, str, int] | None:
    """``(experiment_name, ablation_name, seed)`` from the run's saved config, or ``None`` when the folder is not a
    training run (its config has no ``ablation_name``: another entry point's run)."""
    path = folder / CONFIG_FILE
    try:
        config = OmegaConf.load(path)
    except Exception as error:  # noqa: BLE001 (any unreadable file is named)
        raise ConfigError(f"{path}: not a readable YAML config ({error})") from None
    if not isinstance(config, DictConfig) or "ablation_name" not in config:
        return None
    seed = config.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"{path}: seed is {seed!r}; the report compares runs by their integer seed")
    return str(config.get("experiment_name")), str(config.ablation_name), seed


def read_curve(path: Path) -> dict[str, np.ndarray]:
    """The validation rows of a Lightning ``metrics.csv`` (rows with a ``val/psnr`` value) as arrays in step order;
    a step logged twice (a resumed run) keeps its last row."""
    if not path.is_file():
        raise ConfigError(f"{path.parent.parent}: no {METRICS_FILE} (train with the csv logger, logger=csv)")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = [row for row in reader if row.get(METRICS[0])]
    missing = [c for c in ("step", "epoch", *METRICS) if c not in columns]
    if missing:
        raise ConfigError(f"{path}: expected the columns {missing}, found {columns}")
    if not rows:
        raise ConfigError(f"{path}: no validation rows (no {METRICS[0]} value): the run stopped before validating")
    by_step = {int(float(row["step"])): row for row in rows}
    names = ["epoch", *METRICS, *(c for c in BICUBIC if c in columns)]
    steps = sorted(by_step)
    curve = {"step": np.array(steps, dtype=np.int64)}
    for name in names:
        curve[name] = np.array([_number(by_step[s].get(name)) for s in steps], dtype=np.float64)
    return curve


def _number(text: str | None) -> float:
    return float(text) if text not in (None, "") else math.nan


def find_runs(roots: Sequence[Path], experiment: str | None) -> list[Run]:
    """The training runs under ``roots``, of ``experiment`` (``None``: all, which must be of one experiment)."""
    runs = []
    for folder in sorted({f for root in roots for f in run_folders(root)}):
        identity = read_identity(folder)
        if identity is not None and experiment in (None, identity[0]):
            runs.append(Run(folder, *identity, curve=read_curve(folder / METRICS_FILE)))
    shown = ", ".join(str(r) for r in roots)
    if not runs:
        which = f" of experiment '{experiment}'" if experiment is not None else ""
        raise ConfigError(
            f"config key 'runs': no training runs{which} under {shown} (a run folder holds {CONFIG_FILE} and "
            f"{METRICS_FILE})"
        )
    experiments = sorted({r.experiment for r in runs})
    if len(experiments) > 1:
        raise ConfigError(
            f"config key 'experiment_name': the runs under {shown} are of several experiments {experiments}; "
            "report one with experiment_name=NAME"
        )
    return runs


def by_ablation(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """The runs of each ablation sorted by seed; two runs of one ablation and seed are refused."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.ablation, []).append(run)
    for name, group in groups.items():
        group.sort(key=lambda r: r.seed)
        for a, b in zip(group, group[1:], strict=False):
            if a.seed == b.seed:
                raise ConfigError(
                    f"config key 'runs': two runs of ablation '{name}' with seed {a.seed}: {a.folder} and {b.folder}"
                )
    return groups


# ------------------------------------------------------------------------------------------------ statistics


def t_quantile(confidence: float, df: float) -> float:
    """The two-sided Student t quantile ``t(1 - (1 - confidence) / 2, df)``."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, df))


def sample_sd(values: np.ndarray) -> float:
    """The sample standard deviation (``n - 1``); ``nan`` for fewer than two values."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def paired_difference(ablation: np.ndarray, reference: np.ndarray, confidence: float) -> Difference:
    """Mean of the per-seed differences ``ablation - reference`` +- t(., n - 1) sd / sqrt(n)."""
    differences = ablation - reference
    mean, n = float(differences.mean()), len(differences)
    if n < 2:
        return Difference(mean, math.nan, math.nan)
    half = t_quantile(confidence, n - 1) * sample_sd(differences) / math.sqrt(n)
    return Difference(mean, mean - half, mean + half)


def welch_difference(ablation: np.ndarray, reference: np.ndarray, confidence: float) -> Difference:
    """Difference of the means with Welch's interval: +- t(., nu) sqrt(s1^2/n1 + s2^2/n2), nu by Welch-Satterthwaite."""
    mean = float(ablation.mean() - reference.mean())
    if len(ablation) < 2 or len(reference) < 2:
        return Difference(mean, math.nan, math.nan)
    parts = [np.var(x, ddof=1) / len(x) for x in (ablation, reference)]
    se = math.sqrt(sum(parts))
    if se == 0:
        return Difference(mean, mean, mean)
    nu = se**4 / sum(p**2 / (len(x) - 1) for p, x in zip(parts, (ablation, reference), strict=True))
    half = t_quantile(confidence, nu) * se
    return Difference(mean, mean - half, mean + half)


def finals(group: Sequence[Run], metric: str) -> np.ndarray:
    """The last validation value of ``metric`` of each run of ``group`` (in seed order)."""
    return np.array([run.final(metric) for run in group], dtype=np.float64)


def row_of(name: str, group: list[Run], reference: list[Run], paired: bool, confidence: float, is_ref: bool) -> Row:
    difference: dict[str, Difference | None] = {}
    for metric in METRICS:
        values, ref = finals(group, metric), finals(reference, metric)
        if is_ref:
            difference[metric] = None
        elif paired:
            difference[metric] = paired_difference(values, ref, confidence)
        else:
            difference[metric] = welch_difference(values, ref, confidence)
    return Row(
        ablation=name,
        seeds=tuple(run.seed for run in group),
        mean={m: float(finals(group, m).mean()) for m in METRICS},
        sd={m: sample_sd(finals(group, m)) for m in METRICS},
        difference=difference,
    )


def summarise(runs: list[Run], reference: str, confidence: float) -> Summary:
    """The table of the runs of one experiment against the ablation ``reference``."""
    groups = by_ablation(runs)
    if reference not in groups:
        raise ConfigError(
            f"config key 'reference': no run of ablation '{reference}' (the model the others are compared with) "
            f"among {sorted(groups)}; train it, or give reference=NAME"
        )
    paired = len({tuple(r.seed for r in g) for g in groups.values()}) == 1
    order = [reference, *sorted(n for n in groups if n != reference)]
    rows = [row_of(n, groups[n], groups[reference], paired, confidence, n == reference) for n in order]
    bicubic = {m: float(np.nanmean([r.final(m) for r in runs])) for m in BICUBIC if m in runs[0].curve}
    return Summary(
        experiment=runs[0].experiment,
        reference=reference,
        confidence=confidence,
        paired=paired,
        rows=rows,
        steps=tuple(sorted({int(r.curve["step"][-1]) for r in runs})),
        bicubic=bicubic,
    )


# ------------------------------------------------------------------------------------------------ the report


def _value(x: float, digits: int) -> str:
    return "–" if math.isnan(x) else f"{x:.{digits}f}"


def _difference(d: Difference | None, digits: int) -> str:
    if d is None:
        return "reference"
    text = f"{d.mean:+.{digits}f}"
    if math.isnan(d.low):
        return f"{text} (one seed: no interval)"
    return f"{text} [{d.low:+.{digits}f}, {d.high:+.{digits}f}]"


DIGITS = {"val/psnr": 3, "val/ssim": 4}


def table(summary: Summary) -> list[str]:
    """The Markdown table of :func:`summarise`'s rows."""
    level = f"{100 * summary.confidence:g}%"
    lines = [
        f"| ablation | seeds | PSNR (dB) | PSNR sd | SSIM | SSIM sd | ΔPSNR (dB) [{level} CI] | ΔSSIM [{level} CI] |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary.rows:
        cells = [f"`{row.ablation}`", str(len(row.seeds))]
        for metric in METRICS:
            cells += [_value(row.mean[metric], DIGITS[metric]), _value(row.sd[metric], DIGITS[metric])]
        cells += [_difference(row.difference[m], DIGITS[m]) for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def method(summary: Summary) -> str:
    """The sentence under the table: what each number is and how the differences were computed."""
    q = f"{0.5 + summary.confidence / 2:g}"
    level = f"{100 * summary.confidence:g}%"
    first, last = summary.steps[0], summary.steps[-1]
    steps = f"step {first}" if first == last else f"steps {first} to {last}"
    text = (
        f"Each run contributes its last validation (`val/psnr`, `val/ssim` at {steps}); PSNR and SSIM are the "
        "mean over seeds and sd their sample standard deviation (n − 1). "
        f"Δ is the ablation minus `{summary.reference}` with a {level} confidence interval, "
    )
    if summary.paired:
        seeds = ", ".join(str(s) for s in summary.rows[0].seeds)
        text += (
            f"paired by seed (every ablation has the seeds {seeds}): the mean of the n per-seed differences "
            f"± t({q}, n − 1) · sd / √n, sd the sample standard deviation of the differences."
        )
    else:
        text += (
            "unpaired (the ablations do not all have the same seeds): Welch's interval, the difference of the means "
            f"± t({q}, ν) · √(s₁²/n₁ + s₂²/n₂), ν by the Welch–Satterthwaite equation."
        )
    return text


def reference_line(summary: Summary) -> str:
    if not summary.bicubic:
        return "Bicubic upsampling was not logged by these runs (`val/psnr_bicubic`)."
    parts = [f"{summary.bicubic['val/psnr_bicubic']:.3f} dB PSNR"] if "val/psnr_bicubic" in summary.bicubic else []
    if "val/ssim_bicubic" in summary.bicubic:
        parts.append(f"{summary.bicubic['val/ssim_bicubic']:.4f} SSIM")
    return f"For reference, bicubic upsampling scores {' and '.join(parts)} on the same validation images."


def markdown(summary: Summary, runs: list[Run]) -> str:
    """The whole of ``report.md``."""
    lines = [f"# Ablation study: `{summary.experiment}`", "", *table(summary), "", method(summary), ""]
    lines += [reference_line(summary), "", f"![validation PSNR]({CURVES_FILE})", "", "## Runs", ""]
    lines += ["| ablation | seed | last step | folder |", "|---|---:|---:|---|"]
    for run in sorted(runs, key=lambda r: (r.ablation, r.seed)):
        lines.append(f"| `{run.ablation}` | {run.seed} | {int(run.curve['step'][-1])} | `{run.folder}` |")
    return "\n".join(lines) + "\n"


def mean_curve(group: list[Run], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, mean, sd)`` of ``metric`` over the runs of ``group`` at the steps every one of them validated."""
    common = sorted(set.intersection(*(set(r.curve["step"].tolist()) for r in group)))
    at_step = [dict(zip(r.curve["step"].tolist(), r.curve[metric].tolist(), strict=True)) for r in group]
    values = np.array([[values[s] for s in common] for values in at_step], dtype=np.float64)
    sd = values.std(axis=0, ddof=1) if len(group) > 1 else np.zeros(len(common))
    return np.array(common), values.mean(axis=0), sd


def curves_png(summary: Summary, runs: list[Run]) -> bytes:
    """``curves.png``: the mean validation PSNR of each ablation over its seeds, +- one sd, bicubic dashed."""
    from matplotlib.figure import Figure

    groups = by_ablation(runs)
    figure = Figure(figsize=(7, 4.5), dpi=120, layout="constrained")
    axes = figure.add_subplot()
    for row in summary.rows:
        steps, mean, sd = mean_curve(groups[row.ablation], METRICS[0])
        (line,) = axes.plot(steps, mean, marker="o", markersize=3, label=f"{row.ablation} (n={len(row.seeds)})")
        axes.fill_between(steps, mean - sd, mean + sd, color=line.get_color(), alpha=0.2, linewidth=0)
    if "val/psnr_bicubic" in summary.bicubic:
        axes.axhline(summary.bicubic["val/psnr_bicubic"], color="0.4", linestyle="--", label="bicubic")
    axes.set(xlabel="training step", ylabel="validation PSNR (dB)", title=f"{summary.experiment}: mean ± sd over seeds")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def check_config(cfg: DictConfig) -> None:
    """Refuse bad values of the keys other than ``runs`` naming the key."""
    confidence = cfg.get("confidence")
    ok = isinstance(confidence, float) and 0 < confidence < 1
    require(ok, "confidence", "a number between 0 and 1 (0.95 for 95% intervals)", confidence)
    reference = cfg.get("reference")
    require(isinstance(reference, str) and reference != "", "reference", "an ablation name", reference)
    require(cfg.get("output_dir") not in (None, ""), "output_dir", "a folder", cfg.get("output_dir"))
    experiment = cfg.get("experiment_name")
    require(experiment is None or isinstance(experiment, str), "experiment_name", "null or a name", experiment)


def report(cfg: DictConfig) -> list[Path]:
    """Write ``report.md`` and ``curves.png`` as configured (``configs/report.yaml``); return their paths."""
    from rawsr.writers import atomic_write

    if OmegaConf.is_missing(cfg, "runs"):
        raise ConfigError("config key 'runs' is not set: give runs=FOLDER (a folder of training runs) or runs=[A,B]")
    check_config(cfg)
    roots = run_roots(cfg.runs)
    runs = find_runs(roots, cfg.experiment_name)
    summary = summarise(runs, cfg.reference, float(cfg.confidence))
    if len(summary.steps) > 1:
        log.warning("the runs end at different steps (%d to %d): unfinished runs?", summary.steps[0], summary.steps[-1])
    text, png = markdown(summary, runs), curves_png(summary, runs)
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"config key 'output_dir': {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / REPORT_FILE, out / CURVES_FILE]
    atomic_write(paths[0], lambda f: f.write(text.encode("utf-8")))
    atomic_write(paths[1], lambda f: f.write(png))
    log.info("%d runs of %d ablations of experiment '%s'", len(runs), len(summary.rows), summary.experiment)
    for path in paths:
        log.info("wrote %s", path)
    return paths


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="report")
def _main(cfg: DictConfig) -> None:
    status = run_entry(lambda: report(cfg) and None, log)
    if status:
        raise SystemExit(status)


def main() -> None:
    """Console entry point ``rawsr-report``: ``--help`` lists the keys of ``configs/report.yaml``."""
    launch("report", _main)


if __name__ == "__main__":
    main()
