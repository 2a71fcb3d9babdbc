"""The package's layers, as docs/architecture.md writes them: no module imports one of a higher layer, and packages
of one layer do not import each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
ARCHITECTURE = REPO / "docs" / "architecture.md"


def documented_layers() -> dict[str, int]:
    """``{package or module: layer}`` from the block between ``<!-- layers -->`` and ``<!-- /layers -->``."""
    text = ARCHITECTURE.read_text()
    match = re.search(r"<!-- layers -->(.*?)<!-- /layers -->", text, re.S)
    assert match, f"{ARCHITECTURE} has no <!-- layers --> block"
    layers = {}
    for line in match.group(1).splitlines():
        row = re.match(r"\s*(\d+)\s+.*?\s((?:rawsr\.\w+\s*)+)$", line)
        if row:
            for name in row.group(2).split():
                layers[name] = int(row.group(1))
    assert layers, "the layers block lists no module"
    return layers


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, text: str | None = None) -> set[str]:
    """Every rawsr module that ``path`` (or ``text`` in its place) imports, at the top or inside functions, with
    relative imports resolved."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name == "rawsr" or name.startswith("rawsr.")}


def owner(name: str, layers: dict[str, int]) -> str | None:
    """The documented package or module that holds module ``name`` (the longest documented prefix)."""
    candidates = [key for key in layers if name == key or name.startswith(key + ".")]
    return max(candidates, key=len) if candidates else None


SOURCES = sorted(p for p in (SRC / "rawsr").rglob("*.py"))


def test_every_module_has_a_documented_layer():
    layers = documented_layers()
    missing = [module_name(p) for p in SOURCES if module_name(p) != "rawsr" and owner(module_name(p), layers) is None]
    assert not missing, f"modules without a layer in {ARCHITECTURE.name}: {missing}"


def violations(path: Path, text: str | None = None) -> list[str]:
    """The imports of module ``path`` (or of ``text`` as if it were that module) that break the layer order."""
    layers = documented_layers()
    me = owner(module_name(path), layers)
    names = imports_of(path, text)
    if me is None:  # the package root imports nothing of its own
        return sorted(names - {"rawsr"})
    wrong = []
    for name in sorted(names):
        other = owner(name, layers)
        if other is None or other == me:
            continue
        if layers[other] > layers[me]:
            wrong.append(f"{name} (layer {layers[other]}, above {me} at layer {layers[me]})")
        elif layers[other] == layers[me]:
            wrong.append(f"{name} (a sibling of {me} at layer {layers[me]})")
    return wrong


@pytest.mark.parametrize("path", SOURCES, ids=module_name)
def test_no_module_imports_a_higher_layer_or_a_sibling(path):
    wrong = violations(path)
    assert not wrong, f"{module_name(path)} imports {wrong}"


def test_the_checker_reports_upward_and_sideways_imports():
    bayer = SRC / "rawsr" / "imaging" / "bayer.py"
    assert violations(bayer, "from rawsr.training import RawSRModule\n") == [
        f"rawsr.training (layer {documented_layers()['rawsr.training']}, above rawsr.imaging at layer 0)",
        f"rawsr.training.RawSRModule (layer {documented_layers()['rawsr.training']}, above rawsr.imaging at layer 0)",
    ]
    kernels = SRC / "rawsr" / "degradation" / "kernels.py"
    assert violations(kernels, "def f():\n    from ..model import RawSRNet\n")[0].startswith("rawsr.model (a sibling")
    assert violations(kernels, "from .noise import add_noise\nfrom rawsr.imaging import demosaic\n") == []
