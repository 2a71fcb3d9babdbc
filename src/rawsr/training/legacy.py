"""Checkpoints of earlier releases, brought up to the current names before they are loaded."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from rawsr.training.ema import TRAINING_WEIGHTS

LEGACY_STATE_PREFIXES = {"net.colour.": "net.color."}
"""State-dict key prefixes renamed since release 0.1.0 (``RawSRNet.colour`` became ``RawSRNet.color``)."""

LEGACY_TARGETS = {"rawsr.module.PaperSchedule": "rawsr.training.PaperSchedule"}
"""``_target_`` strings of classes that moved since release 0.1.0 (``rawsr.module`` became ``rawsr.training``)."""


def _rename_prefixes(state: MutableMapping[str, Any]) -> None:
    """Rename the keys of ``state`` that start with an old prefix of :data:`LEGACY_STATE_PREFIXES`, in place,
    keeping the order of the keys."""
    renamed = {}
    for key, value in state.items():
        for old, new in LEGACY_STATE_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        renamed[key] = value
    state.clear()
    state.update(renamed)


def _rename_targets(value: Any) -> Any:
    """``value`` with every ``_target_`` of :data:`LEGACY_TARGETS` replaced, in nested mappings and lists."""
    if isinstance(value, MutableMapping):
        for key, item in value.items():
            if key == "_target_" and isinstance(item, str):
                value[key] = LEGACY_TARGETS.get(item, item)
            else:
                value[key] = _rename_targets(item)
    elif isinstance(value, list):
        return [_rename_targets(item) for item in value]
    return value


def upgrade_checkpoint(checkpoint: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Bring a checkpoint dictionary (as ``torch.load`` returns it) of an earlier release up to this one, in place.

    - ``state_dict`` and, in a checkpoint of a run with the moving average of the weights, the training weights
      beside it (``current_model_state``): keys under ``net.colour.`` become ``net.color.``
      (:data:`LEGACY_STATE_PREFIXES`);
    - ``hyper_parameters``: ``_target_`` strings of moved classes get their new path (:data:`LEGACY_TARGETS`).

    A network mapping without ``_target_`` (release 0.1.0) stays as it is: :class:`rawsr.training.RawSRModule`
    reads it as the keyword arguments of :class:`rawsr.model.RawSRNet`. A current checkpoint is left unchanged.
    Returns ``checkpoint`` itself.
    """
    for key in ("state_dict", TRAINING_WEIGHTS):
        state = checkpoint.get(key)
        if isinstance(state, MutableMapping):
            _rename_prefixes(state)
    hparams = checkpoint.get("hyper_parameters")
    if isinstance(hparams, MutableMapping):
        _rename_targets(hparams)
    return checkpoint
