"""CPU threads on a shared machine: how many torch threads, and how OpenMP threads wait."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from rawsr.config import ConfigError

if TYPE_CHECKING:
    pass


#: The values of an ``omp_wait_policy`` key (``null`` too: leave the environment alone).
OMP_WAIT_POLICIES = ("passive", "active")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; all of them where the platform has none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def idle_cpus(seconds: float = 0.2) -> float | None:
    """How many CPUs were idle over the next ``seconds``, from the kernel's counters (``/proc/stat``): the machine's
    CPU count times the idle share of their time. ``None`` where the counters cannot be read (not Linux)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        return sum(ticks), ticks[3] + ticks[4]

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (idle1 - idle0) / (total1 - total0)


def auto_threads(usable: int, idle: float | None) -> int:
    """The rule of ``threads: auto``: the usable CPUs that are idle when the run starts, rounded to the nearest whole
    CPU, at least 1 and at most ``usable`` (all of them when ``idle`` is unknown)."""
    if idle is None:
        return usable
    return max(1, min(usable, int(idle + 0.5)))


def resolve_threads(value: Any, key: str = "threads") -> int | None:
    """The torch CPU thread count that a ``threads`` config key asks for: ``None`` (torch's default), a positive
    integer, or ``auto`` (:func:`auto_threads` of the CPUs idle over 0.2 s now).

    Raises:
        ConfigError: naming ``key`` for any other value.
    """
    if value is None:
        return None
    if value == "auto":
        return auto_threads(usable_cpus(), idle_cpus())
    if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        raise ConfigError(f"config key '{key}': expected auto, null or a positive integer, got {value!r}")
    return value


def set_omp_wait_policy(policy: Any, key: str = "omp_wait_policy") -> str | None:
    """Set ``OMP_WAIT_POLICY`` to ``policy`` (upper case) unless the environment already sets it; ``None`` leaves it
    alone. OpenMP reads it once, when torch loads it: call this before ``import torch``. Returns the value the
    process runs with (``None``: unset), or raises :class:`ConfigError` naming ``key`` for a value not in
    :data:`OMP_WAIT_POLICIES`.

    ``passive``: OpenMP threads that wait for work sleep at once. The default (unset) lets each of them spin for
    some 300,000 turns (GNU OpenMP) after every parallel operation, which costs nothing on free cores but takes the
    cores from whatever else runs on them, another training run included.
    """
    if policy is not None and str(policy).lower() not in OMP_WAIT_POLICIES:
        raise ConfigError(f"config key '{key}': expected one of {', '.join(OMP_WAIT_POLICIES)} or null, got {policy!r}")
    if policy is not None and "OMP_WAIT_POLICY" not in os.environ:
        if "torch" in sys.modules:
            logging.getLogger("rawsr").debug("%s=%s comes too late: torch has loaded OpenMP already", key, policy)
        else:
            os.environ["OMP_WAIT_POLICY"] = str(policy).upper()
    return os.environ.get("OMP_WAIT_POLICY")
