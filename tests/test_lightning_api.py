"""Lightning's private API is used in one module only (rawsr.training.lightning_api), and the installed Lightning
still has every private name that module relies on."""

from __future__ import annotations

import importlib
import re
from functools import cache
from pathlib import Path

import lightning
import pytest

from rawsr.training import lightning_api
from rawsr.training.lightning_api import PRIVATE_API

SRC = Path(__file__).resolve().parents[1] / "src" / "rawsr"
ADAPTER = SRC / "training" / "lightning_api.py"


def _owner(name: str) -> object:
    """The object named in the owner column of :data:`PRIVATE_API`: a module path, a class, or ``Class()``."""
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loops.fetchers import _PrefetchDataFetcher
    from lightning.pytorch.strategies import DDPStrategy
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
    from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

    owners = {
        "_SubprocessScriptLauncher": lambda: _SubprocessScriptLauncher,
        "_SubprocessScriptLauncher()": lambda: _SubprocessScriptLauncher(LightningEnvironment(), 1, 1),
        "DDPStrategy": lambda: DDPStrategy,
        "DDPStrategy()": lambda: DDPStrategy(),
        "Trainer().fit_loop": lambda: (
            Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False).fit_loop
        ),
        "Trainer()": lambda: Trainer(accelerator="cpu", logger=False, enable_checkpointing=False),
        "_SignalConnector": lambda: _SignalConnector,
        "LightningModule": lambda: LightningModule,
        "_PrefetchDataFetcher()": lambda: _PrefetchDataFetcher(),
        "CSVLogger()": lambda: CSVLogger("unused-csv-logger-folder"),
    }
    if name in owners:
        return owners[name]()
    return importlib.import_module(name)


@pytest.mark.parametrize("adapter,owner,attribute", PRIVATE_API, ids=[f"{a}-{n}" for a, _, n in PRIVATE_API])
def test_installed_lightning_has_every_private_name_the_adapter_uses(adapter, owner, attribute):
    assert hasattr(lightning_api, adapter.split(".")[0]), f"PRIVATE_API names {adapter}, which lightning_api lacks"
    assert hasattr(_owner(owner), attribute), (
        f"lightning {lightning.__version__}: {owner} has no attribute {attribute!r}, which "
        f"rawsr.training.lightning_api.{adapter} relies on; adapt that function to this Lightning"
    )


def test_the_table_lists_every_private_name_the_adapter_uses():
    listed = {attribute for _, _, attribute in PRIVATE_API} | {owner.rstrip("()") for _, owner, _ in PRIVATE_API}
    used = set(re.findall(r"(?<![\w.])_[A-Z]\w*|\._[a-z]\w*", _code(ADAPTER)))
    used = {name.lstrip(".") for name in used}
    assert used <= listed, f"lightning_api.py uses private names missing from PRIVATE_API: {sorted(used - listed)}"


# -- no private name of Lightning outside the adapter ------------------------------------------------------------------

#: rawsr's own names that Lightning's sources also happen to contain (each defined by rawsr for itself).
PROJECT_NAMES = {"_loader", "_main", "_metrics", "_score", "_epoch_start"}
#: Public members of Lightning's private classes that rawsr reaches (``fetcher.fetched``, ``launcher.procs``).
PRIVATE_CLASS_MEMBERS = {"fetched", "procs"}


@cache
def lightning_private_names() -> frozenset[str]:
    """Every name with one leading underscore in the installed Lightning's sources (``_x``, ``_X``, not dunders)."""
    root = Path(lightning.__file__).parent
    names: set[str] = set()
    for path in root.rglob("*.py"):
        names |= set(re.findall(r"\b_[A-Za-z]\w*", path.read_text(errors="ignore")))
    return frozenset(names - PROJECT_NAMES)


def _code(path: Path) -> str:
    return path.read_text()


def private_uses(text: str) -> list[str]:
    """The private names of Lightning (and the public members of its private classes) that ``text`` uses."""
    found = [name for name in re.findall(r"\b_[A-Za-z]\w*", text) if name in lightning_private_names()]
    members = "|".join(sorted(PRIVATE_CLASS_MEMBERS))
    found += [match.lstrip(".") for match in re.findall(rf"\.(?:{members})\b", text)]
    return sorted(set(found))


def test_the_pattern_finds_the_private_names_rawsr_used_to_spread():
    example = """
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.loops.fetchers import _DataLoaderIterDataFetcher
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.pytorch.utilities.data import _update_dataloader
class Launcher(_SubprocessScriptLauncher):
    def _call_children_scripts(self):
        self._check_can_spawn_children()
        self.procs = []
class Strategy(DDPStrategy):
    def _configure_launcher(self):
        self._launcher = Launcher()
fetcher = trainer.fit_loop._data_fetcher
loaders = trainer.fit_loop._combined_loader.flattened
batch = module._on_before_batch_transfer(batch, dataloader_idx=0)
fetcher.fetched -= 3
experiment = logger._experiment
"""
    expected = {
        "_SubprocessScriptLauncher", "_DataLoaderIterDataFetcher", "_set_sampler_epoch", "_update_dataloader",
        "_call_children_scripts", "_check_can_spawn_children", "_configure_launcher", "_launcher", "_data_fetcher",
        "_combined_loader", "_on_before_batch_transfer", "_experiment", "fetched", "procs",
    }  # fmt: skip
    assert set(private_uses(example)) == expected
    assert private_uses("def _plain(value): return self._panels, batch.fetched_at, _score\n") == []


def test_project_names_that_lightning_also_uses_are_the_projects_own():
    sources = "\n".join(_code(path) for path in SRC.rglob("*.py") if path != ADAPTER)
    for name in PROJECT_NAMES:
        defined = re.search(rf"(def |class |self\.|^){name}\b\s*[(:=]", sources, re.M)
        assert defined, f"PROJECT_NAMES lists {name}, which rawsr does not define: remove it from the list"


@pytest.mark.parametrize(
    "path", sorted(p for p in SRC.rglob("*.py") if p != ADAPTER), ids=lambda p: str(p.relative_to(SRC))
)
def test_no_private_name_of_lightning_outside_the_adapter(path):
    uses = private_uses(_code(path))
    assert not uses, (
        f"{path.relative_to(SRC.parent)} uses Lightning's private API {uses}: "
        "put it behind a function of rawsr.training.lightning_api"
    )
