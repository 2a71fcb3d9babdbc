"""How the demo degrades on a shared CPU: each setting alone, then two of it at once, wall times and slowdowns.

    python scripts/bench_shared_cpu.py                          # the whole demo (6 epochs of 256 crops)
    python scripts/bench_shared_cpu.py --epochs 2               # about 10 minutes on the 2-core machine
    python scripts/bench_shared_cpu.py --epochs 1 --samples 64  # a quick check that it works

Runs ``python -m rawsr.train`` (the demo) for two settings: ``before``, the behaviour before the thread defaults
(``threads=null omp_wait_policy=null``: torch's one thread per core and GNU OpenMP's spinning waits, with
``OMP_WAIT_POLICY`` removed from the environment), and ``after``, the current defaults. For each, one run alone, then
two runs started together. A line per setting gives the wall times and ``slowdown`` = the mean paired time over the
alone time; on a machine with N free cores, two runs of N threads each cannot do better than about 2. The last line
is ``summary before_slowdown=<x> after_slowdown=<y> ...``. Every run is a subprocess with its own run folder under a
temporary log folder (``--keep DIR`` to look at them); the load average when the bench starts says how quiet the
machine was.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BEFORE = "threads=null omp_wait_policy=null"
AFTER = ""


def run_demos(count: int, overrides: list[str], env: dict[str, str], logs: Path, tag: str) -> list[tuple[float, str]]:
    """Start ``count`` demos at once; return each one's ``(wall seconds, torch threads it chose or 'default')``."""
    started = []
    for i in range(count):
        name = f"{tag}-{i}"
        out = (logs / f"{name}.out").open("w")
        command = [sys.executable, "-m", "rawsr.train", f"run_name={name}", *overrides]
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        started.append((process, time.perf_counter(), out, logs / f"{name}.out"))
    results = []
    for process, start, out, path in started:
        code = process.wait()
        wall = time.perf_counter() - start
        out.close()
        text = path.read_text(errors="replace")
        if code != 0:
            sys.exit(f"{tag}: python -m rawsr.train exited with {code}; its output ends:\n{text[-3000:]}")
        chosen = re.search(r"threads=auto: (\d+) torch thread", text)
        results.append((wall, chosen.group(1) if chosen else "default"))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6, help="trainer.max_epochs (the demo: 6)")
    parser.add_argument("--samples", type=int, default=256, help="data.train.samples_per_epoch (the demo: 256)")
    parser.add_argument("--before", default=BEFORE, help=f"overrides of the 'before' setting (default: {BEFORE!r})")
    parser.add_argument("--after", default=AFTER, help="overrides of the 'after' setting (default: none)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders and outputs here")
    args = parser.parse_args()

    common = [
        f"trainer.max_epochs={args.epochs}",
        f"data.train.samples_per_epoch={args.samples}",
    ]
    settings = {"before": args.before.split(), "after": args.after.split()}
    load = os.getloadavg()
    print(f"cpus={os.cpu_count()} loadavg_at_start={load[0]:.2f},{load[1]:.2f},{load[2]:.2f} " + " ".join(common))
    slowdowns = {}
    with tempfile.TemporaryDirectory() as tmp:
        logs = args.keep or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        base = dict(os.environ, RAWSR_LOG_DIR=str(logs / "runs"), WANDB_MODE="disabled")
        for name, overrides in settings.items():
            env = dict(base)
            if name == "before":
                env.pop("OMP_WAIT_POLICY", None)
            ((alone, threads),) = run_demos(1, common + overrides, env, logs, f"{name}-alone")
            paired = run_demos(2, common + overrides, env, logs, f"{name}-paired")
            mean = sum(wall for wall, _ in paired) / len(paired)
            slowdowns[name] = (alone, mean)
            print(
                f"{name:6s} overrides='{' '.join(overrides)}' alone_s={alone:.1f} (threads {threads}) "
                f"paired_s={','.join(f'{w:.1f}' for w, _ in paired)} (threads {','.join(t for _, t in paired)}) "
                f"slowdown={mean / alone:.2f}",
                flush=True,
            )
    (b_alone, b_pair), (a_alone, a_pair) = slowdowns["before"], slowdowns["after"]
    print(
        f"summary before_slowdown={b_pair / b_alone:.2f} after_slowdown={a_pair / a_alone:.2f} "
        f"before_alone_s={b_alone:.1f} after_alone_s={a_alone:.1f} before_paired_s={b_pair:.1f} "
        f"after_paired_s={a_pair:.1f} paired_after_over_before_alone={a_pair / b_alone:.2f}"
    )


if __name__ == "__main__":
    main()
