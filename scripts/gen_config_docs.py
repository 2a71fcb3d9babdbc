"""Generate ``docs/configs.md``, the reference of every config group, option and key, from ``configs/``.

Usage::

    python scripts/gen_config_docs.py            # rewrite docs/configs.md
    python scripts/gen_config_docs.py --check    # exit 1 if docs/configs.md differs from configs/

For every YAML file the page lists each key as a dotted path with its default, exactly as written in the file,
and its YAML comment: the comment on the key's line, the comment lines that continue it (aligned with it), and
comment lines written just above the key. A file's leading comment block becomes its description. The primary
configs (``train.yaml``, ``evaluate.yaml``, ...) come first, then one section per config group (a folder of
``configs/``, nested groups such as ``hydra/launcher`` included), each option with its own table.

The configs are plain block-style YAML; the line scanner (:func:`rawsr.cli.parse_config`, which also writes the
``--help`` page of each entry point) handles what they use (nested mappings, block and flow lists, inline and
full-line comments) and checks its key paths against a real YAML parser, so a construct it does not understand stops
the generation instead of producing a wrong page.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from rawsr.cli import ConfigFile, parse_config

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
OUTPUT = REPO / "docs" / "configs.md"
PRIMARY_ORDER = ("train", "evaluate", "predict", "prepare")
COMMAND = "python scripts/gen_config_docs.py"

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
