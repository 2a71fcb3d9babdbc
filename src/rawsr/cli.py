"""What the four entry points (``rawsr.train``, ``rawsr.evaluate``, ``rawsr.predict``, ``rawsr.prepare``) share:
device resolution, the one-line report of a user error, and exit codes.

Exit codes: 0 done; 1 done, but some inputs were skipped; 2 a user error (a bad config value or path, named in one
line); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from rawsr.config import ConfigError, config_dir

if TYPE_CHECKING:
    import torch

EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEVICES = "auto, cpu, cuda or cuda:N"
"""The values every ``device`` key accepts."""
#: Config keys under ``data`` that name a dataset location and must exist before anything heavy starts.
PATH_KEYS = ("root", "cache_dir", "input_dir")


def resolve_device(name: Any, key: str = "device") -> torch.device:
    """The device a ``device`` config key names: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or
    ``cuda:N``.

    Raises:
        ConfigError: naming ``key`` for any other value, or for a CUDA device this machine does not have.
    """
    import torch

    text = str(name)
    index = text.removeprefix("cuda:")
    if text not in ("auto", "cpu", "cuda") and not (text.startswith("cuda:") and index.isdigit()):
        raise ConfigError(f"config key '{key}': expected {DEVICES}, got {name!r}")
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (text != "cuda" and int(index) >= count):
            raise ConfigError(f"config key '{key}': {text} asked for, but this machine has {count} CUDA device(s)")
    return torch.device(text)


def run_entry(function: Callable[[], int | None], log: logging.Logger) -> int:
    """Run an entry point's work and turn what ends it into an exit code.

    ``function`` returns its own code (``None`` means 0). A :class:`rawsr.config.ConfigError` (or a value left at
    ``???``) is logged as one line and gives 2; Ctrl-C gives one line and 130.
    """
    try:
        return function() or EXIT_OK
    except (ConfigError, MissingMandatoryValue) as error:
        log.error("%s", error)
        return EXIT_USAGE
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED


def check_data_paths(data: DictConfig, prefix: str = "data") -> None:
    """Refuse a dataset path that is unset (``???``) or missing, naming the config key and the path."""
    for key in data:
        value_key = f"{prefix}.{key}"
        if OmegaConf.is_missing(data, key):
            if key in PATH_KEYS:
                raise ConfigError(f"config key '{value_key}' is not set: give the dataset path, e.g. {value_key}=/data")
            continue
        value = data[key]
        if isinstance(value, DictConfig):
            check_data_paths(value, value_key)
        elif key in PATH_KEYS and value is not None and not Path(str(value)).exists():
            raise ConfigError(f"config key '{value_key}': the path {value} does not exist")


# --------------------------------------------------------------------------------------------------------------------
# CPU threads on a shared machine

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


# --------------------------------------------------------------------------------------------------------------------
# Run folders: a start that fails leaves nothing behind


#: What Hydra writes into a run folder before the job starts: its record of the config (the log files aside).
START_RECORDS = (".hydra",)


def shown_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies inside it, else as given."""
    absolute = Path(path).absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def detach_file_logs(folder: Path) -> list[logging.FileHandler]:
    """Close and remove the root logger's file handlers that write inside ``folder``; return them."""
    root, detached = logging.getLogger(), []
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == folder.absolute():
            root.removeHandler(handler)
            handler.close()
            detached.append(handler)
    return detached


def move_file_logs(old: Path, new: Path) -> None:
    """Make the root logger's file handlers that write inside ``old`` append to files of the same name in ``new``."""
    for handler in detach_file_logs(old):
        moved = logging.FileHandler(new / Path(handler.baseFilename).name, mode="a", encoding=handler.encoding)
        moved.setFormatter(handler.formatter)
        moved.setLevel(handler.level)
        logging.getLogger().addHandler(moved)


def holds_only_a_start(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but what a start writes before any work (:data:`START_RECORDS`, ``*.log``
    files and empty folders): no checkpoint, metrics or logger run."""

    def unused(path: Path) -> bool:
        return path.suffix == ".log" if path.is_file() else path.is_dir() and all(map(unused, path.iterdir()))

    return folder.is_dir() and all(p.name in START_RECORDS or unused(p) for p in folder.iterdir())


def remove_unused_run_folder(folder: str | Path, log: logging.Logger | None) -> bool:
    """Remove the run folder of a start that did no work (:func:`holds_only_a_start`), first closing the log files
    inside it, and say so on ``log`` (``None``: silently); a folder a run has written to (checkpoints, metrics: a
    resumed run) stays. Returns whether it went."""
    folder = Path(folder)
    if not holds_only_a_start(folder):
        return False
    detach_file_logs(folder)
    shutil.rmtree(folder, ignore_errors=True)
    if log is not None:
        log.info("removed the run folder %s: the run did not start", shown_path(folder))
    return True


# ------------------------------------------------------------------------------------ the configs' comments

#: The comments of ``configs/`` are the one source of the ``--help`` pages and of docs/configs.md
#: (``scripts/gen_config_docs.py``).

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w\-/.@]*|\"[^\"]+\"|'[^']+'): ?(?P<rest>.*)$")
_LIST_LINE = re.compile(r"^(?P<indent> *)- ?(?P<rest>.*)$")


@dataclass
class Entry:
    """One documented key: dotted ``path``, ``default`` as written (``""`` for a mapping), ``comment``."""

    path: str
    default: str
    comment: str = ""
    is_section: bool = False


@dataclass
class ConfigFile:
    """A parsed config file: its description, package line, defaults list and key entries."""

    name: str
    description: list[str] = field(default_factory=list)
    package: str | None = None
    defaults: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)


def split_comment(text: str) -> tuple[str, str, int]:
    """Split ``text`` into (value, comment, column of '#') at the first ``#`` outside quotes and preceded by a
    space (or at the start); the column is -1 when there is no comment."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip(), text[i + 1 :].strip(), i
    return text.rstrip(), "", -1


def _flow(value: object) -> str:
    """A parsed YAML value written back in flow style (for block lists, which have no one-line text)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    return str(value)


def _lookup(data: object, path: list[str]) -> object:
    for key in path:
        data = data[key] if isinstance(data, dict) else None
    return data


def leaf_paths(data: object, prefix: str = "") -> list[str]:
    """Dotted paths of every key in a parsed YAML mapping (mappings and leaves), in file order."""
    paths = []
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}{key}"
            paths.append(path)
            paths.extend(leaf_paths(value, path + "."))
    return paths


def parse_config(text: str, name: str) -> ConfigFile:
    """Parse one config file's text into its description, defaults list and documented keys.

    Raises:
        ValueError: naming the file when the scanned keys disagree with a YAML parser's.
    """
    import yaml

    parsed = yaml.safe_load(text) or {}
    if not isinstance(parsed, dict):
        raise ValueError(f"{name}: expected a YAML mapping at the top level, got {type(parsed).__name__}")
    lines = text.splitlines()
    config = ConfigFile(name=name)

    header: list[str] = []
    body_start = 0
    while body_start < len(lines) and lines[body_start].strip().startswith("#"):
        stripped = lines[body_start].strip()
        if stripped.startswith("# @package"):
            config.package = stripped.split(None, 2)[2].strip()
        else:
            header.append(stripped[1:])
        body_start += 1
    config.description = header

    stack: list[tuple[int, str]] = []  # (indent, key) of the open mappings
    pending: list[str] = []  # full-line comments waiting for the next key
    last: Entry | None = None
    last_comment_col = -1
    in_defaults = False
    for line in lines[body_start:]:
        stripped = line.strip()
        if not stripped:
            pending = []
            continue
        if stripped.startswith("#"):
            col = len(line) - len(line.lstrip())
            if last is not None and last_comment_col >= 0 and col == last_comment_col:
                last.comment = f"{last.comment} {stripped[1:].strip()}".strip()
            else:
                pending.append(stripped[1:].strip())
            continue
        list_match = _LIST_LINE.match(line)
        if list_match and not _KEY_LINE.match(line):
            item, comment, _ = split_comment(list_match.group("rest"))
            if in_defaults:
                config.defaults.append(item + (f"  ({comment})" if comment else ""))
            last_comment_col = -1
            continue
        match = _KEY_LINE.match(line)
        if match is None:
            raise ValueError(f"{name}: cannot read the line {line!r}")
        indent = len(match.group("indent"))
        key = match.group("key").strip("\"'")
        value, comment, col = split_comment(match.group("rest"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [key]
        in_defaults = path == ["defaults"]
        comments = [*pending, comment] if comment else pending
        pending = []
        last_comment_col = len(line) - len(match.group("rest")) + col if col >= 0 else -1
        if in_defaults:
            last = None
            continue
        if value in ("", "|", ">"):
            parsed_value = _lookup(parsed, path)
            if isinstance(parsed_value, dict) or parsed_value is None and value == "":
                stack.append((indent, key))
                entry = Entry(".".join(path), "", " ".join(comments), is_section=isinstance(parsed_value, dict))
                if parsed_value is None:  # an empty value: null
                    entry = Entry(".".join(path), "null", " ".join(comments))
            else:
                entry = Entry(".".join(path), _flow(parsed_value), " ".join(comments))
                stack.append((indent, key))  # its block-list items are indented below it
        else:
            entry = Entry(".".join(path), value, " ".join(comments))
        config.entries.append(entry)
        last = entry

    expected = [p for p in leaf_paths(parsed) if p != "defaults" and not p.startswith("defaults.")]
    found = [e.path for e in config.entries]
    if found != expected:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        raise ValueError(f"{name}: scanned keys disagree with the YAML parser (missing {missing}, extra {extra})")
    return config


# ----------------------------------------------------------------------------------------------- --help pages

#: Groups of Hydra itself, left out of the pages (``--hydra-help`` lists them).
_HYDRA_GROUP = "hydra"
_CHOICES = re.compile(r"^\s*([\w.:/-]+(?:\s*\|\s*[\w.:/-]+)+)")


def comment_choices(comment: str) -> list[str]:
    """The values a comment opens with when it lists them as ``a | b | c`` (e.g. ``cache | valset``), else []."""
    match = _CHOICES.match(comment)
    return [v.strip().rstrip(":") for v in match.group(1).split("|")] if match else []


def wants_help(argv: Sequence[str]) -> bool:
    """Whether the command line asks for the entry point's own page (``--help`` or ``-h``)."""
    return any(arg in ("--help", "-h") for arg in argv)


def group_options(group: str, configs: Path | None = None) -> list[str]:
    """The options of config group ``group``: the YAML files of its folder, by name."""
    return sorted(p.stem for p in ((configs or config_dir()) / group).glob("*.yaml"))


def _default_groups(config: ConfigFile) -> list[tuple[str, str, str]]:
    """``(group, default option, comment)`` for each group in a primary config's defaults list, Hydra's left out."""
    groups = []
    for item in config.defaults:
        entry, _, comment = item.partition("  (")
        if ":" not in entry:
            continue
        group, option = (s.strip() for s in entry.split(":", 1))
        group = group.removeprefix("override ").removeprefix("optional ").strip()
        if group != _HYDRA_GROUP and not group.startswith(_HYDRA_GROUP + "/"):
            groups.append((group, option, comment.removesuffix(")")))
    return groups


def _rows(rows: list[tuple[str, str]]) -> list[str]:
    width = min(max((len(left) for left, _ in rows), default=0), 32)
    return [f"  {left:<{width}}  {right}".rstrip() for left, right in rows]


def help_page(entry: str, configs: Path | None = None) -> str:
    """The ``--help`` page of ``python -m rawsr.<entry>``: what the config file's leading comment says, then one line
    per key of that file (``key=default  comment``), then its config groups with their options."""
    configs = configs or config_dir()
    config = parse_config((configs / f"{entry}.yaml").read_text(), f"{entry}.yaml")
    lines = [f"usage: python -m rawsr.{entry} [key=value ...] [group=option ...]", ""]
    lines += [line.removeprefix(" ") for line in config.description]
    keys = [(f"{e.path}={e.default}", e.comment) for e in config.entries if not e.is_section and not _is_hydra(e.path)]
    lines += ["", "keys (key=value; the default follows '='):", *_rows(keys)]
    groups = [
        (f"{group}={option}", " | ".join(group_options(group, configs)) + (f"  ({comment})" if comment else ""))
        for group, option, comment in _default_groups(config)
    ]
    if groups:
        lines += ["", "config groups (group=option; the default follows '='), and their options:", *_rows(groups)]
    lines += [
        "",
        "Every key of every group: docs/configs.md. Hydra's own flags (--cfg job, --multirun, ...): --hydra-help.",
    ]
    return "\n".join(lines)


def _is_hydra(path: str) -> bool:
    return path == _HYDRA_GROUP or path.startswith(_HYDRA_GROUP + ".")


# ------------------------------------------------------------------------------------ run and output folders


def check_output_folder(path: str | os.PathLike, key: str) -> Path:
    """Refuse an output folder that is a file, that cannot be created (a file or a folder without write permission
    on the way) or that cannot be written, naming ``key`` and the path; return it.

    Raises:
        ConfigError: naming ``key`` and the path.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"config key '{key}': expected a folder, but {path} is a file")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"config key '{key}': no write permission in the folder {path}")
        return path
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"config key '{key}': cannot create the folder {path}: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"config key '{key}': cannot create the folder {path}: no write permission in {ancestor}")
    return path


class RunFolderCheck(Callback):
    """A Hydra callback (``hydra.callbacks``) that checks the run folder before Hydra creates it, so that a folder
    that cannot be made ends the command with one line and exit status 2 instead of Hydra's traceback.

    ``key`` is the config key the message names (``output_dir`` for predict, whose run folder is its output folder).
    """

    def __init__(self, key: str = "hydra.run.dir") -> None:
        self.key = key

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir", self.key)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir", "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, folder_key: str, key: str) -> None:
        try:
            folder = OmegaConf.select(config, folder_key)
        except Exception:  # a value Hydra itself will report
            return
        if folder is None:
            return
        try:
            check_output_folder(str(folder), key)
        except ConfigError as error:
            print(error, file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None


def launch(entry: str, hydra_main: Callable[[], Any], quick_exit: bool = False) -> Any:
    """Run ``python -m rawsr.<entry>``: its own ``--help`` page (printed before torch is imported, exit 0), else the
    Hydra application ``hydra_main``; a Ctrl-C outside the work itself (while Hydra composes the config) also ends
    with one line and exit status 130.

    ``quick_exit``: once the work has handled a Ctrl-C (its workers stopped, its partial files removed), leave at
    once, without the interpreter's teardown of torch and Lightning (over a second here).
    """
    if wants_help(sys.argv[1:]):
        print(help_page(entry))
        raise SystemExit(EXIT_OK)
    try:
        return hydra_main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    except SystemExit as end:
        if not quick_exit or end.code != EXIT_INTERRUPTED:
            raise
    if quick_exit:
        _exit_now(EXIT_INTERRUPTED)
    raise SystemExit(EXIT_INTERRUPTED)


def _exit_now(code: int) -> None:
    """End the process with ``code`` after flushing the logs and the standard streams, skipping the teardown."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)
