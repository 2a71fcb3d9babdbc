"""The documentation cannot drift from the code: the config reference is regenerated and compared, every config
key and default is checked against a YAML parser, config groups, module names, paths and commands named in the
guides must exist and compose."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
DOCS = REPO / "docs"
GUIDES = ("architecture.md", "reproducing.md")
#: ``python -m <module>`` -> the primary config it composes.
ENTRY_POINTS = {f"rawsr.{name}": name for name in ("train", "evaluate", "prepare", "predict", "report")}


@pytest.fixture(scope="module")
def gen():
    """``scripts/gen_config_docs.py`` imported as a module."""
    spec = importlib.util.spec_from_file_location("gen_config_docs", REPO / "scripts" / "gen_config_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def config_files() -> list[Path]:
    return sorted(CONFIGS.rglob("*.yaml"))


def group_folders() -> list[str]:
    return sorted({p.parent.relative_to(CONFIGS).as_posix() for p in config_files() if p.parent != CONFIGS})


# ------------------------------------------------------------------------------------------------ configs.md


def test_configs_md_is_regenerated_from_configs(gen):
    expected = gen.render(CONFIGS)
    actual = (DOCS / "configs.md").read_text()
    assert actual == expected, "docs/configs.md differs from configs/: run `python scripts/gen_config_docs.py`"


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    """Dotted path -> value of every key of a parsed YAML mapping (an independent walk of the parser's result)."""
    out = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        out[path] = value
        if isinstance(value, dict):
            out.update(_flatten(value, path + "."))
    return out


def _section(page: str, heading: str) -> str:
    """The text of ``page`` from ``heading`` to the next heading of level 2 or 3."""
    start = page.index(heading + "\n")
    rest = page[start + len(heading) + 1 :]
    end = re.search(r"^#{2,3} ", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def _rows(section: str) -> dict[str, str]:
    """Key -> default cell of the table rows ``| `key` | `default` | comment |`` of a section."""
    rows = {}
    for line in section.splitlines():
        cells = re.split(r"(?<!\\)\|", line)
        if len(cells) >= 4 and cells[1].strip().startswith("`"):
            key = cells[1].strip().strip("`").strip().replace("\\|", "|")
            rows[key] = cells[2].strip()
    return rows


def _code_value(cell: str) -> object:
    """Parse a default cell written as a code span back into a YAML value."""
    text = cell.replace("\\|", "|")
    text = text[3:-3] if text.startswith("`` ") else text[1:-1]
    return yaml.safe_load(text) if text != "" else None


@pytest.mark.parametrize("path", config_files(), ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_every_key_is_documented_with_the_default_of_its_file(path):
    page = (DOCS / "configs.md").read_text()
    relative = path.relative_to(CONFIGS)
    if relative.parent == Path("."):
        heading = f"### {relative.name}"
    else:
        heading = f"### `{relative.parent.as_posix()}={relative.stem}`"
    rows = _rows(_section(page, heading))
    parsed = yaml.safe_load(path.read_text()) or {}
    expected = {k: v for k, v in _flatten(parsed).items() if k != "defaults"}
    assert set(rows) == set(expected), f"{relative}: documented keys differ from the file's"
    for key, value in expected.items():
        if isinstance(value, dict) and value:
            assert rows[key] == "*(section)*", f"{relative}: {key} is a mapping"
        else:
            assert _code_value(rows[key]) == value, f"{relative}: {key} documented as {rows[key]}, file has {value!r}"


def test_comments_are_attached_to_their_keys(gen):
    text = """# The first line of the description,
# and its second line.
#   python -m rawsr.train a=1 \\
#       b=2
defaults:
  - _self_
  - data: demo   # the data

alpha: 1            # inline comment
                    # continued on the next line
# written above beta
beta:
  gamma: [1, 2]     # a flow list
  delta: "x # y"
  eps:              # a block list
    - [1.0, 2.0]
    - [3.0, 4.0]
zeta: ???
"""
    config = gen.parse_config(text, "t.yaml")
    assert config.defaults == ["_self_", "data: demo  (the data)"]
    assert [e.path for e in config.entries] == ["alpha", "beta", "beta.gamma", "beta.delta", "beta.eps", "zeta"]
    entries = {e.path: e for e in config.entries}
    assert entries["alpha"].comment == "inline comment continued on the next line"
    assert entries["beta"].comment == "written above beta" and entries["beta"].is_section
    assert (entries["beta.gamma"].default, entries["beta.gamma"].comment) == ("[1, 2]", "a flow list")
    assert (entries["beta.delta"].default, entries["beta.delta"].comment) == ('"x # y"', "")
    assert entries["beta.eps"].default == "[[1.0, 2.0], [3.0, 4.0]]"
    assert entries["zeta"].default == "???" and entries["zeta"].comment == ""
    markdown = "\n".join(gen.render_description(config.description))
    assert "The first line of the description, and its second line." in markdown
    assert "```bash\npython -m rawsr.train a=1 \\\n    b=2\n```" in markdown


def test_a_structure_the_scanner_cannot_read_is_refused(gen):
    text = "items:\n  - name: a\n    value: 1\n"
    with pytest.raises(ValueError, match=r"t\.yaml"):
        gen.parse_config(text, "t.yaml")


def test_markdown_special_characters_are_escaped_outside_code(gen):
    assert gen._text("under images/<model>/ | a_b *c* `x_y|z`", table=True) == (
        r"under images/\<model\>/ \| a\_b \*c\* `x_y\|z`"
    )


def test_check_mode_reports_drift(gen, tmp_path, capsys):
    configs = tmp_path / "configs"
    (configs / "data").mkdir(parents=True)
    (configs / "train.yaml").write_text("# Train.\ndefaults:\n  - data: demo\nseed: 1  # the seed\n")
    (configs / "data" / "demo.yaml").write_text("scale: 2  # factor\n")
    out = tmp_path / "configs.md"
    assert gen.main(["--configs", str(configs), "--output", str(out)]) == 0
    text = out.read_text()
    assert "| `seed` | `1` | the seed |" in text and "Selected by default in train.yaml: `demo`." in text
    assert gen.main(["--configs", str(configs), "--output", str(out), "--check"]) == 0
    (configs / "data" / "demo.yaml").write_text("scale: 4  # factor\n")
    assert gen.main(["--configs", str(configs), "--output", str(out), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ guides


def test_every_config_group_appears_in_architecture():
    text = (DOCS / "architecture.md").read_text()
    missing = [g for g in group_folders() if f"configs/{g}/" not in text]
    assert not missing, f"docs/architecture.md does not mention the config groups {missing}"


def _resolve(name: str) -> object:
    """Import the longest module prefix of a dotted name, then get the remaining attributes."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


@pytest.mark.parametrize("guide", GUIDES)
def test_names_and_paths_in_the_guides_exist(guide):
    text = (DOCS / guide).read_text()
    names = set(re.findall(r"(?<![/\w])(rawsr(?:\.[A-Za-z_]\w*)+)", text))
    missing = []
    for name in sorted(names):
        try:
            _resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    assert not missing, f"docs/{guide} names what does not exist: {missing}"
    paths = set(re.findall(r"`((?:src|configs|tests|scripts|notebooks|docs)/[^`\s<>*]*)`", text))
    absent = [p for p in sorted(paths) if not (REPO / p.split("::")[0]).exists()]
    assert not absent, f"docs/{guide} names missing files: {absent}"
    tests = re.findall(r"`(tests/test_\w+\.py)::(\w+)`", text)
    for file, function in tests:
        assert re.search(rf"^def {function}\(", (REPO / file).read_text(), flags=re.M), f"{file}::{function}"


def _commands(text: str) -> list[str]:
    """The ``python -m rawsr.*`` commands of the bash blocks, continuation lines joined and shell variables that
    the blocks assign substituted."""
    variables: dict[str, str] = {}
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            assignment = re.fullmatch(r"([A-Z_]+)=(.*)", line)
            for name in sorted(variables, key=len, reverse=True):
                line = line.replace(f"${name}", variables[name])
            if assignment:
                variables[assignment.group(1)] = shlex.split(line.split("=", 1)[1])[0]
            elif line.startswith("python -m rawsr."):
                commands.append(line)
    return commands


def test_the_guide_commands_compose():
    """Every command of docs/reproducing.md composes with the configs (sweeps: the first value of each list)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    commands = _commands((DOCS / "reproducing.md").read_text())
    assert len(commands) >= 10
    for command in commands:
        words = shlex.split(command)
        config_name = ENTRY_POINTS[words[2]]
        overrides = []
        for word in words[3:]:
            if word in ("-m", "--multirun"):
                continue
            key, value = word.split("=", 1)
            if "," in value and not value.startswith("["):
                value = value.split(",")[0]
            overrides.append(f"{key}={value}")
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
                cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
        except Exception as error:  # the message names the command
            raise AssertionError(f"`{command}` does not compose: {error}") from error
        finally:
            GlobalHydra.instance().clear()
        assert "$" not in " ".join(overrides), f"unresolved shell variable in `{command}`"
        if config_name == "train" and "experiment" in dict(o.split("=", 1) for o in overrides):
            assert cfg.experiment_name in {p.stem for p in (CONFIGS / "experiment").glob("*.yaml")}
            assert cfg.run_name == cfg.experiment_name + cfg.run_suffix, "experiments have stable run folders"
            assert cfg.logger.get("wandb") is None or cfg.logger.wandb.group == cfg.experiment_name


def test_reproducing_keeps_the_time_placeholder_and_names_project_defaults():
    text = (DOCS / "reproducing.md").read_text()
    assert "Time per epoch: see docs/results.md" in text
    for preset in ("paper", "nonblind"):
        assert f"`{preset}`" in text
    assert text.count("**project default**") >= 5


# ------------------------------------------------------------------------------------------------ notebooks


@pytest.mark.parametrize("path", sorted((REPO / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs_and_open_with_an_explanation(path):
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), f"{path.name}: clear its outputs"
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert any('matplotlib.use("Agg")' in c.source for c in code), f"{path.name}: figures need no display"
