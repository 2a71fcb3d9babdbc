"""Checkpoints of release 0.1.0 are brought up to the current names (rawsr.training.legacy.upgrade_checkpoint), by
load_checkpoint and by Lightning's own loading (RawSRModule.on_load_checkpoint)."""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from rawsr.training import RawSRModule
from rawsr.training.legacy import upgrade_checkpoint

LEGACY = Path(__file__).parent / "data" / "legacy"


def old_checkpoint() -> dict:
    """A small checkpoint dictionary with release 0.1.0's names."""
    state = OrderedDict(
        [("net.restoration.conv_in.0.weight", 1), ("net.colour.head.weight", 2), ("net.colour.up.0.bias", 3)]
    )
    hparams = {
        "net": {"scale": 2, "width": 8},
        "scheduler": {"_target_": "rawsr.module.PaperSchedule", "decay": 0.96},
        "optimizer": {"_target_": "torch.optim.Adam", "lr": 1e-3, "betas": [0.9, 0.999]},
        "nested": [{"_target_": "rawsr.module.PaperSchedule"}],
    }
    return {"state_dict": state, "hyper_parameters": hparams, "epoch": 3}


def test_upgrade_renames_colour_keys_and_moved_targets_in_place():
    checkpoint = old_checkpoint()
    upgraded = upgrade_checkpoint(checkpoint)
    assert upgraded is checkpoint
    assert list(checkpoint["state_dict"].items()) == [
        ("net.restoration.conv_in.0.weight", 1),
        ("net.color.head.weight", 2),
        ("net.color.up.0.bias", 3),
    ]
    hparams = checkpoint["hyper_parameters"]
    assert hparams["scheduler"] == {"_target_": "rawsr.training.PaperSchedule", "decay": 0.96}
    assert hparams["nested"] == [{"_target_": "rawsr.training.PaperSchedule"}]
    assert hparams["optimizer"] == old_checkpoint()["hyper_parameters"]["optimizer"]
    assert hparams["net"] == {"scale": 2, "width": 8} and checkpoint["epoch"] == 3


def test_upgrade_leaves_a_current_checkpoint_unchanged():
    checkpoint = upgrade_checkpoint(old_checkpoint())
    again = upgrade_checkpoint(copy.deepcopy(checkpoint))
    assert again == checkpoint


def test_lightning_loading_of_the_0_1_0_checkpoint_maps_the_old_keys():
    module = RawSRModule.load_from_checkpoint(LEGACY / "rawsr-0.1.0.ckpt", map_location="cpu").eval()
    assert module.hparams["degradation"] is None and module.net.color is not None
    expected = np.load(LEGACY / "expected_forward.npz")
    with torch.no_grad():
        out = module(torch.from_numpy(expected["raw"]), torch.from_numpy(expected["ref"]))
    np.testing.assert_allclose(out["srgb"].numpy(), expected["srgb"], rtol=0, atol=1e-6)
