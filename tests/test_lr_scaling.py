"""``model.lr_scaling``: the learning rate for a global batch other than the one it was tuned for."""

from __future__ import annotations

import logging
import math

import pytest
from test_train import FAST_DEV_RUN, NARROW, SMALL_DATA

from rawsr.config import ConfigError
from rawsr.train import instantiate_all
from rawsr.training.schedule import lr_factor


@pytest.mark.parametrize(
    ("scaling", "global_batch", "reference", "factor"),
    [("none", 48, 6, 1.0), ("linear", 24, 6, 4.0), ("linear", 48, 6, 8.0), ("sqrt", 24, 6, 2.0),
     ("sqrt", 48, 6, math.sqrt(8)), ("linear", 3, 6, 0.5)],
)  # fmt: skip
def test_the_factor_is_the_batch_ratio_or_its_square_root(scaling, global_batch, reference, factor):
    assert lr_factor(scaling, global_batch, reference) == pytest.approx(factor)


@pytest.mark.parametrize(
    ("args", "message"),
    [(("cubic", 24, 6), "config key 'model.lr_scaling'"), (("linear", 24, 0), "config key 'model.lr_reference_batch'"),
     (("sqrt", 0, 6), "global batch")],
)  # fmt: skip
def test_bad_values_name_their_key(args, message):
    with pytest.raises(ConfigError, match=message):
        lr_factor(*args)


def test_the_optimiser_gets_the_scaled_rate_and_the_start_says_so(compose_train, caplog):
    cfg = compose_train(*NARROW, *SMALL_DATA, *FAST_DEV_RUN, "data.batch_size=4", "model.optimizer.lr=1e-3",
                        "model.lr_scaling=linear", "model.lr_reference_batch=2")  # fmt: skip
    datamodule, model, trainer = instantiate_all(cfg)
    with caplog.at_level(logging.INFO):
        trainer.fit(model, datamodule=datamodule)
    assert trainer.optimizers[0].param_groups[0]["initial_lr" if cfg.model.scheduler else "lr"] == pytest.approx(2e-3)
    assert (
        "learning rate 0.002 (model.lr_scaling=linear: configured 0.001, global batch 4 = 4 x 1 process(es), "
        "reference batch 2)" in caplog.messages
    )


def test_the_paper_experiments_keep_their_rate_by_default_and_name_their_reference(compose_train):
    cfg = compose_train("experiment=x4_blind", "data.root=/nowhere", "data.batch_size=12")
    assert cfg.model.lr_scaling == "none" and cfg.model.lr_reference_batch == 6
    assert compose_train().model.lr_reference_batch == compose_train().data.batch_size  # others: their own batch
