"""Exit codes and how an entry point ends: one line for a user error (exit 2) or a Ctrl-C (exit 130), its own
``--help`` page before Hydra runs."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from omegaconf.errors import MissingMandatoryValue

from rawsr.cli.help import help_page, wants_help
from rawsr.config import ConfigError

if TYPE_CHECKING:
    pass


EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
"""Done; done but some inputs were skipped; a user error (named in one line); interrupted (Ctrl-C)."""


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
