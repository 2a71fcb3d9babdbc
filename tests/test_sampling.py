"""Uniform draws and the weighted-mixture config shared by the kernel and noise samplers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from rawsr.config import ConfigError
from rawsr.degradation import KernelSampler, NoiseSampler
from rawsr.degradation.sampling import (
    draw_uniforms,
    lerp_range,
    normal_from_uniform,
    parse_mixture,
    weighted_choice,
)

KINDS = {"a": ("x",), "b": ("x", "y")}


def _build(name, settings, key):
    return (name, settings, key)


# --- uniform draws ------------------------------------------------------------------------------------------


def test_lerp_range_and_normal_from_uniform_match_numpy_and_scipy():
    u = torch.tensor([0.0, 0.1, 0.5, 0.9], dtype=torch.float64)
    np.testing.assert_allclose(lerp_range(u, (2.0, 6.0)).numpy(), [2.0, 2.4, 4.0, 5.6], atol=1e-12)
    np.testing.assert_allclose(normal_from_uniform(u[1:]).numpy(), stats.norm.ppf([0.1, 0.5, 0.9]), atol=1e-9)
    assert torch.isfinite(normal_from_uniform(torch.tensor([0.0, 1.0]))).all()


def test_weighted_choice_edges_are_the_cumulative_probabilities():
    u = torch.tensor([0.0, 0.1999, 0.2, 0.4999, 0.5, 0.9999])
    assert weighted_choice(u, [1.0, 1.5, 2.5]).tolist() == [0, 0, 1, 1, 2, 2]
    # A zero weight is never chosen.
    assert 1 not in weighted_choice(torch.rand(1000), [1.0, 0.0, 1.0]).tolist()


def test_draw_uniforms_draws_one_row_per_generator():
    rows = draw_uniforms([torch.Generator().manual_seed(s) for s in (4, 7)], 5)
    assert rows.shape == (2, 5) and rows.dtype == torch.float32
    assert torch.equal(rows[1], torch.rand(5, generator=torch.Generator().manual_seed(7)))


# --- the mixture config ---------------------------------------------------------------------------------------


def test_mixture_builds_entries_in_order_and_normalises_the_weights():
    cfg = {"b": {"weight": 3.0, "y": 2}, "a": {"weight": 1, "x": 5}}
    entries, weights = parse_mixture(cfg, "mix", KINDS, _build)
    assert entries == [("b", {"y": 2}, "mix.b"), ("a", {"x": 5}, "mix.a")]
    assert weights == [0.75, 0.25]
    assert cfg["b"] == {"weight": 3.0, "y": 2}  # the config is not modified


def test_mixture_weight_defaults_to_one_and_a_zero_weight_is_kept():
    entries, weights = parse_mixture(
        {"a": {}, "b": {"weight": 2}, "c": {"weight": 0}}, "mix", KINDS | {"c": ()}, _build
    )
    assert [e[0] for e in entries] == ["a", "b", "c"]
    assert weights == pytest.approx([1 / 3, 2 / 3, 0.0])


@pytest.mark.parametrize(
    ("cfg", "key", "expected"),
    [
        ({"a": {"weight": -1}}, "mix.a.weight", "a number in [0.0, inf]"),
        ({"a": {"weight": "heavy"}}, "mix.a.weight", "a number in [0.0, inf]"),
        ({"a": {"weight": None}}, "mix.a.weight", "a number in [0.0, inf]"),
        ({"a": {"weight": 0}, "b": {"weight": 0.0}}, "mix", "at least one positive weight"),
        ({"c": {}}, "mix.c", "one of ['a', 'b']"),
        ({"a": {"y": 1}}, "mix.a.y", "a key among ['weight', 'x']"),
        ({}, "mix", "a non-empty mapping of ['a', 'b'] to their settings"),
        (None, "mix", "a non-empty mapping"),
        ([{"a": {}}], "mix", "a non-empty mapping"),
        ({"a": None}, "mix.a", "a mapping"),
        ({"a": [1]}, "mix.a", "a mapping"),
    ],
)
def test_bad_mixture_raises_naming_the_key(cfg, key, expected):
    with pytest.raises(ConfigError) as error:
        parse_mixture(cfg, "mix", KINDS, _build)
    assert str(error.value).startswith(f"config key '{key}': expected {expected}")


def test_null_settings_are_empty_only_when_allowed():
    entries, weights = parse_mixture({"a": None, "b": {"weight": 3}}, "mix", KINDS, _build, allow_null=True)
    assert entries == [("a", {}, "mix.a"), ("b", {}, "mix.b")]
    assert weights == [0.25, 0.75]
    with pytest.raises(ConfigError, match=r"'mix\.a': expected a mapping"):
        parse_mixture({"a": None}, "mix", KINDS, _build)
    with pytest.raises(ConfigError, match=r"'mix\.a': expected a mapping, got \[1\]"):
        parse_mixture({"a": [1]}, "mix", KINDS, _build, allow_null=True)  # only null is taken as empty


def test_an_entry_error_comes_before_the_weight_check():
    def build(name, settings, key):
        raise ConfigError(f"config key '{key}.x': bad")

    with pytest.raises(ConfigError, match=r"'mix\.a\.x': bad"):
        parse_mixture({"a": {"weight": 0, "x": 1}}, "mix", KINDS, build)


# --- the two samplers' policies ---------------------------------------------------------------------------------


def test_noise_profiles_accept_a_null_block_and_kernel_families_do_not():
    sampler = NoiseSampler({"profiles": {"brooks": None, "uniform": {"weight": 3}}})
    assert sampler.weights == [0.25, 0.75]
    with pytest.raises(ConfigError, match=r"'degradation\.kernel\.families\.defocus': expected a mapping"):
        KernelSampler({"mode": "blind", "size": 11, "families": {"defocus": None}})


@pytest.mark.parametrize(
    ("make", "cfg", "key"),
    [
        (NoiseSampler, {"profiles": {"brooks": {"weight": 0}}}, "degradation.noise.profiles"),
        (NoiseSampler, {"profiles": {"brooks": {"weight": -0.5}}}, "degradation.noise.profiles.brooks.weight"),
        (
            KernelSampler,
            {"mode": "blind", "size": 9, "families": {"gaussian": {"weight": 0, "sigma": 1}}},
            "degradation.kernel.families",
        ),
        (KernelSampler, {"mode": "blind", "size": 9, "families": None}, "degradation.kernel.families"),
    ],
)
def test_samplers_refuse_bad_weights_and_missing_mixtures(make, cfg, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        make(cfg)
