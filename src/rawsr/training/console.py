"""The console of a training run: each message once, through the handlers Hydra gives the root logger (the console
and the run's ``train.log``), without Lightning's advert and a known-harmless deprecation warning."""

from __future__ import annotations

import logging
import warnings

from rawsr.training.lightning_api import PYTREE_MODULE

#: The start of Lightning's advert for its cloud logger, logged by every Trainer that has no LitLogger.
ADVERT = "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]"
#: The logger Lightning's ``rank_zero_info`` writes to.
RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"
#: torch 2.13 deprecates ``isinstance(spec, LeafSpec)``, which Lightning 2.6 still uses in every batch transfer.
PYTREE_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
#: Lightning's loggers that may carry a console handler of their own.
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


class DropAdvert(logging.Filter):
    """Drops the record of Lightning's cloud-logger advert (:data:`ADVERT`), and nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ADVERT)


class OneLineWarning(logging.Filter):
    """Strips the newline that ``warnings.formatwarning`` ends a captured warning with (no blank line after it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(a.rstrip("\n") if isinstance(a, str) else a for a in record.args)
        return True


def _add_filter(logger: logging.Logger, kind: type[logging.Filter]) -> None:
    if not any(isinstance(f, kind) for f in logger.filters):
        logger.addFilter(kind())


def single_console() -> None:
    """Send Lightning's messages and Python warnings through the root logger's handlers only, once each.

    Importing ``lightning`` gives its ``lightning`` logger a console handler of its own, and the logger also
    propagates to the root logger, so each Lightning line is printed twice: plain, then in Hydra's format. When the
    root logger has handlers (Hydra's console and ``train.log``), this removes Lightning's; it also routes warnings
    into logging (so they reach ``train.log`` too), drops :data:`ADVERT` and ignores :data:`PYTREE_WARNING`.
    Call it after importing ``lightning``; calling it again changes nothing.
    """
    if logging.getLogger().handlers:
        for name in LIGHTNING_LOGGERS:
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                if type(handler) is logging.StreamHandler:
                    logger.removeHandler(handler)
            logger.propagate = True
        logging.captureWarnings(True)
        _add_filter(logging.getLogger("py.warnings"), OneLineWarning)
    _add_filter(logging.getLogger(RANK_ZERO_LOGGER), DropAdvert)
    warnings.filterwarnings("ignore", message=PYTREE_WARNING, category=FutureWarning, module=PYTREE_MODULE)
