"""What the entry points (``rawsr.train``, ``rawsr.evaluate``, ``rawsr.predict``, ``rawsr.prepare``, ``rawsr.export``,
``rawsr.report``) share, one module per concern:

- :mod:`rawsr.cli.exits`: exit codes (0 done; 1 some inputs skipped; 2 a user error, named in one line; 130
  interrupted), :func:`run_entry` and :func:`launch` (the ``--help`` page, then Hydra).
- :mod:`rawsr.cli.devices`: :func:`resolve_device` for every ``device`` key.
- :mod:`rawsr.cli.folders`: dataset paths (:func:`check_data_paths`), output and run folders checked before any work
  (:class:`RunFolderCheck`), and the run folder of a failed start removed.
- :mod:`rawsr.cli.threads`: torch threads and the OpenMP wait policy on a shared machine.
- :mod:`rawsr.cli.help`: the configs' comments, the one source of the ``--help`` pages and of docs/configs.md.
"""

from rawsr.cli.devices import DEVICES, resolve_device
from rawsr.cli.exits import EXIT_INTERRUPTED, EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, launch, run_entry
from rawsr.cli.folders import (
    PATH_KEYS,
    RunFolderCheck,
    check_data_paths,
    check_output_folder,
    holds_only_a_start,
    move_file_logs,
    remove_unused_run_folder,
    shown_path,
)
from rawsr.cli.help import ConfigFile, comment_choices, help_page, parse_config, wants_help
from rawsr.cli.threads import (
    OMP_WAIT_POLICIES,
    auto_threads,
    idle_cpus,
    resolve_threads,
    set_omp_wait_policy,
    usable_cpus,
)

__all__ = [
    "DEVICES",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SKIPPED",
    "EXIT_USAGE",
    "OMP_WAIT_POLICIES",
    "PATH_KEYS",
    "ConfigFile",
    "RunFolderCheck",
    "auto_threads",
    "check_data_paths",
    "check_output_folder",
    "comment_choices",
    "help_page",
    "holds_only_a_start",
    "idle_cpus",
    "launch",
    "move_file_logs",
    "parse_config",
    "remove_unused_run_folder",
    "resolve_device",
    "resolve_threads",
    "run_entry",
    "set_omp_wait_policy",
    "shown_path",
    "usable_cpus",
    "wants_help",
]
