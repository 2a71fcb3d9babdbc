"""The config keys a data source names in its errors.

A source is configured under a key prefix (``data.train``, ``data.val``, or ``valset`` for ``rawsr.prepare``); its
own arguments are ``<prefix>.<argument>``. ``scale`` and ``crop`` are given to it by whoever builds it: the data
module passes ``data.scale`` and ``data.crop``, so they are named under the prefix's parent; a prefix without a parent
(``valset``) holds them itself.
"""

from __future__ import annotations


def source_key(key: str | None, split: str) -> str:
    """The key prefix of a source: ``key``, or the data module's ``data.<split>`` when ``key`` is ``None``."""
    return key or f"data.{split}"


def shared_key(key: str, name: str) -> str:
    """The key of ``scale`` or ``crop`` for a source under ``key``: ``data.train`` -> ``data.crop``,
    ``valset`` -> ``valset.crop``."""
    parent = key.rpartition(".")[0]
    return f"{parent or key}.{name}"
