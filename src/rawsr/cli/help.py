"""The ``--help`` pages, from the comments of ``configs/``: the one source of the pages and of docs/configs.md
(``scripts/gen_config_docs.py``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rawsr.config import config_dir

if TYPE_CHECKING:
    pass


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
