"""Generate ``docs/configs.md``, the reference of every config group, option and key, from ``configs/``.

Usage::

    python scripts/gen_config_docs.py            # rewrite docs/configs.md
    python scripts/gen_config_docs.py --check    # exit 1 if docs/configs.md differs from configs/

For every YAML file the page lists each key as a dotted path with its default, exactly as written in the file,
and its YAML comment: the comment on the key's line, the comment lines that continue it (aligned with it), and
comment lines written just above the key. A file's leading comment block becomes its description. The primary
configs (``train.yaml``, ``evaluate.yaml``, ...) come first, then one section per config group (a folder of
``configs/``, nested groups such as ``hydra/launcher`` included), each option with its own table.

The configs are plain block-style YAML; the line scanner below handles what they use (nested mappings, block and
flow lists, inline and full-line comments) and checks its key paths against a real YAML parser, so a construct it
does not understand stops the generation instead of producing a wrong page.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
OUTPUT = REPO / "docs" / "configs.md"
PRIMARY_ORDER = ("train", "evaluate", "predict", "prepare")
COMMAND = "python scripts/gen_config_docs.py"

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


_MARKDOWN_SPECIAL = re.compile(r"([\\*_<>$\[\]])")


def _text(text: str, table: bool = False) -> str:
    """Escape comment text for Markdown outside its `code spans` (and '|' everywhere inside a table cell)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code spans
        parts = [text.replace("`", "\\`")]
    out = "`".join(part if i % 2 else _MARKDOWN_SPECIAL.sub(r"\\\1", part) for i, part in enumerate(parts))
    return out.replace("|", "\\|") if table else out


def _cell(text: str) -> str:
    """Escape a value for a code span inside a Markdown table cell."""
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def render_description(lines: list[str]) -> list[str]:
    """A file's leading comment as Markdown: prose joined into paragraphs, command lines (starting with
    ``python``, continued by a trailing backslash) as code blocks."""
    out: list[str] = []
    prose: list[str] = []
    code: list[str] = []
    for raw in lines:
        line = raw.strip()
        if code and code[-1].endswith("\\"):
            code.append("    " + line)
            continue
        if line.startswith("python "):
            if prose:
                out += [" ".join(prose), ""]
                prose = []
            code.append(line)
            continue
        if code:
            out += ["```bash", *code, "```", ""]
            code = []
        if line:
            prose.append(_text(line))
        elif prose:
            out += [" ".join(prose), ""]
            prose = []
    if prose:
        out += [" ".join(prose), ""]
    if code:
        out += ["```bash", *code, "```", ""]
    return out


def render_config(config: ConfigFile, heading: str) -> list[str]:
    """Markdown for one file: heading, description, package and defaults, then the key table."""
    out = [heading, ""]
    out += render_description(config.description)
    if config.package:
        out += [f"Package: `{config.package}` (its keys apply at that place of the composed config).", ""]
    if config.defaults:
        out += ["Defaults list: " + ", ".join(_code(d) for d in config.defaults) + ".", ""]
    if config.entries:
        out += ["| key | default | comment |", "|---|---|---|"]
        for e in config.entries:
            default = "*(section)*" if e.is_section else _code(_cell(e.default))
            out.append(f"| {_code(_cell(e.path))} | {default} | {_text(e.comment, table=True)} |")
        out.append("")
    elif not config.defaults:
        out += ["*(no keys)*", ""]
    return out


def group_defaults(primaries: dict[str, ConfigFile]) -> dict[str, list[str]]:
    """``group -> ["train.yaml: demo", ...]``: the option each primary config selects by default."""
    chosen: dict[str, list[str]] = {}
    for name, config in primaries.items():
        for item in config.defaults:
            entry = item.split("  (")[0]
            if ":" not in entry:
                continue
            group, option = (s.strip() for s in entry.split(":", 1))
            group = group.removeprefix("override ").removeprefix("optional ").strip()
            chosen.setdefault(group, []).append(f"{name}: `{option}`")
    return chosen


def render(config_dir: Path = CONFIG_DIR) -> str:
    """The whole of ``docs/configs.md`` for the configs in ``config_dir``."""
    config_dir = Path(config_dir)
    primary_files = sorted(config_dir.glob("*.yaml"), key=lambda p: (_primary_rank(p.stem), p.stem))
    primaries = {p.name: parse_config(p.read_text(), p.name) for p in primary_files}
    groups = sorted(
        {p.parent.relative_to(config_dir).as_posix() for p in config_dir.rglob("*.yaml") if p.parent != config_dir}
    )
    chosen = group_defaults(primaries)
    out = [
        "# Configuration reference",
        "",
        f"<!-- Generated by `{COMMAND}` from configs/: do not edit by hand. -->",
        "",
        f"Generated by `{COMMAND}` from the YAML files in `configs/`; `tests/test_docs.py` fails when this page",
        "and the configs differ. Every key is listed with its default as written in the file and its YAML comment.",
        "Select an option of a group on the command line with `group=option` (e.g. `experiment=x4_blind`), and",
        "set any key with `key=value` (e.g. `data.batch_size=12`). Where a comment says *project default*, the",
        "value is this project's documented choice, not a value from the rawSR paper.",
        "",
        "## Primary configs",
        "",
    ]
    out += [f"- [`{name}`](#{_anchor(name)})" for name in primaries]
    out += ["", "## Config groups", ""]
    out += [f"- [`{g}`](#group-{_anchor(g)}): " + ", ".join(_options(config_dir, g)) for g in groups]
    out.append("")
    for name, config in primaries.items():
        out += render_config(config, f"### {name}")
    for group in groups:
        out += [f"## Group `{group}`", ""]
        line = f"Folder `configs/{group}/`; choose with `{group}=<option>`."
        if group in chosen:
            line += " Selected by default in " + "; ".join(chosen[group]) + "."
        out += [line, ""]
        for path in sorted((config_dir / group).glob("*.yaml")):
            config = parse_config(path.read_text(), f"{group}/{path.name}")
            out += render_config(config, f"### `{group}={path.stem}`")
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def _primary_rank(stem: str) -> int:
    return PRIMARY_ORDER.index(stem) if stem in PRIMARY_ORDER else len(PRIMARY_ORDER)


def _options(config_dir: Path, group: str) -> list[str]:
    return [f"`{p.stem}`" for p in sorted((config_dir / group).glob("*.yaml"))]


def _anchor(text: str) -> str:
    """GitHub's heading anchor for simple names: lower case, '.' and '/' dropped."""
    return re.sub(r"[^a-z0-9_\- ]", "", text.lower()).replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=Path, default=CONFIG_DIR, help="the configs folder (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="the page to write (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the page is out of date")
    args = parser.parse_args(argv)
    text = render(args.configs)
    if args.check:
        current = args.output.read_text() if args.output.is_file() else None
        if current != text:
            print(f"{args.output} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
