"""The batched imaging-process simulation: shapes, the model it implements, reproducibility, devices, configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from scipy import ndimage

from rawsr.config import ConfigError
from rawsr.degradation import Degradation, sample_camera
from rawsr.degradation.noise import quantise
from rawsr.imaging import demosaic, render_srgb

KERNEL = {
    "mode": "blind",
    "size": 15,
    "families": {
        "defocus_motion": {"weight": 1.0, "radius": [0.0, 2.0], "length": [0.0, 8.0]},
        "gaussian": {"weight": 1.0, "sigma": [0.3, 2.0], "isotropic": False, "theta": [0, 180]},
    },
}
NOISE = {"profiles": {"brooks": {"weight": 1.0}, "bsraw_hetero": {"weight": 1.0}}}
TINY_NOISE = {"profiles": {"uniform": {"shot": 1e-12, "read": 1e-12}}}
FIXED_NOISE = {"profiles": {"uniform": {"shot": 2e-3, "read": 4e-5}}}


def _batch(b=4, size=64, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    wb, ccm = sample_camera(g, b, "cpu")
    hr = torch.rand(b, 3, size, size, generator=g) * 0.8
    return {"hr_linear": hr.to(device), "wb": wb.to(device), "ccm": ccm.to(device)}


def _sub(batch, index):
    return {k: v[index] for k, v in batch.items()}


@pytest.mark.parametrize("scale", [2, 4])
def test_output_shapes(scale):
    deg = Degradation(scale, KERNEL, NOISE, reference={"jpeg": [70, 90]})
    out = deg(_batch(3, 64), torch.arange(3))
    h = 64 // scale
    expected = {
        "lr_raw": (3, 1, h, h),
        "lr_ref": (3, 3, h, h),
        "hr_srgb": (3, 3, 64, 64),
        "hr_linear": (3, 3, 64, 64),
        "wb": (3, 3),
        "ccm": (3, 3, 3),
        "kernel": (3, 15, 15),
        "shot": (3,),
        "read": (3,),
    }
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(v.dtype == torch.float32 for v in out.values())
    assert out["lr_raw"].min() >= 0 and out["lr_raw"].max() <= 1
    assert torch.equal(quantise(out["lr_raw"], 12), out["lr_raw"])
    assert torch.equal(quantise(out["lr_ref"], 8), out["lr_ref"])


def test_reproducible_bit_for_bit_across_batch_compositions():
    deg = Degradation(2, KERNEL, NOISE, reference={"jpeg": [60, 95]})
    batch, seeds = _batch(4), torch.tensor([101, 7, 55, 2**40])
    full = deg(batch, seeds)
    for i in range(4):
        alone = deg(_sub(batch, slice(i, i + 1)), seeds[i : i + 1])
        for key, value in full.items():
            assert torch.equal(alone[key][0], value[i]), (key, i)
    perm = torch.tensor([2, 0, 3, 1])
    shuffled = deg(_sub(batch, perm), seeds[perm])
    for key, value in full.items():
        assert torch.equal(shuffled[key], value[perm]), key
    other = deg(batch, seeds + 1)
    assert not torch.equal(other["lr_raw"], full["lr_raw"])
    assert not torch.equal(other["kernel"], full["kernel"])


def test_lr_raw_is_the_blurred_downsampled_mosaic_computed_independently():
    deg = Degradation(2, KERNEL, TINY_NOISE, bits=None, clip=False)
    batch = _batch(3, 32)
    out = deg(batch, torch.tensor([4, 5, 6]))
    hr = batch["hr_linear"].double().numpy()
    k = out["kernel"].double().numpy()
    for b in range(3):
        blurred = np.stack([ndimage.convolve(hr[b, c], k[b], mode="mirror") for c in range(3)])
        lr = blurred.reshape(3, 16, 2, 16, 2).mean((2, 4))
        mosaic = np.empty((16, 16))
        mosaic[0::2, 0::2], mosaic[0::2, 1::2] = lr[0, 0::2, 0::2], lr[1, 0::2, 1::2]
        mosaic[1::2, 0::2], mosaic[1::2, 1::2] = lr[1, 1::2, 0::2], lr[2, 1::2, 1::2]
        np.testing.assert_allclose(out["lr_raw"][b, 0].numpy(), mosaic, atol=2e-5)


def test_reference_and_target_come_from_the_shared_renderer():
    deg = Degradation(2, KERNEL, NOISE, tone=True)
    batch = _batch(2, 32)
    out = deg(batch, torch.tensor([1, 2]))
    expected_ref = quantise(render_srgb(demosaic(out["lr_raw"]), out["wb"], out["ccm"], tone=True), 8)
    assert torch.equal(out["lr_ref"], expected_ref)
    assert torch.equal(out["hr_srgb"], render_srgb(batch["hr_linear"], batch["wb"], batch["ccm"], tone=True))
    assert torch.equal(out["hr_linear"], batch["hr_linear"])
    jpeg = Degradation(2, KERNEL, NOISE, tone=True, reference={"jpeg": [30, 40]})(batch, torch.tensor([1, 2]))
    assert torch.equal(jpeg["lr_raw"], out["lr_raw"])
    difference = (jpeg["lr_ref"] - out["lr_ref"]).abs().mean().item()
    assert 0 < difference < 0.05


def test_clean_reference_source_skips_noise():
    deg = Degradation(2, KERNEL, NOISE, reference={"source": "clean"})
    flat = _batch(2, 32)
    flat["hr_linear"] = torch.full_like(flat["hr_linear"], 0.25)
    out = deg(flat, torch.tensor([1, 2]))
    expected = quantise(render_srgb(torch.full((2, 3, 16, 16), 0.25), out["wb"], out["ccm"]), 8)
    torch.testing.assert_close(out["lr_ref"], expected, atol=1e-6, rtol=0)


def _noise_residual_stats(device: str):
    """Normalised noise residual of lr_raw on flat grey images: ((y - x) / sqrt(shot x + read)) mean and variance."""
    deg = Degradation(2, KERNEL, FIXED_NOISE, bits=None, clip=False)
    batch = _batch(8, 512, device=device)
    level = torch.tensor([0.05, 0.2, 0.5, 0.8] * 2, device=device)
    batch["hr_linear"] = level[:, None, None, None].expand(8, 3, 512, 512).contiguous()
    out = deg(batch, torch.arange(8))
    x = level[:, None, None, None]
    model_std = (out["shot"][:, None, None, None] * x + out["read"][:, None, None, None]).sqrt()
    z = ((out["lr_raw"] - x) / model_std).double().cpu().flatten(1)
    return z.mean(1).numpy(), z.var(1).numpy(), out["kernel"].cpu()


def test_noise_statistics_follow_the_model():
    mean, var, _ = _noise_residual_stats("cpu")
    np.testing.assert_allclose(var, 1.0, rtol=0.05)
    assert np.abs(mean).max() < 5 / np.sqrt(256 * 256)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_matches_cpu_statistics():
    mean_cpu, var_cpu, kernels_cpu = _noise_residual_stats("cpu")
    mean_gpu, var_gpu, kernels_gpu = _noise_residual_stats("cuda")
    np.testing.assert_allclose(var_gpu, 1.0, rtol=0.05)
    np.testing.assert_allclose(var_gpu.mean(), var_cpu.mean(), rtol=0.03)
    assert np.abs(mean_gpu).max() < 5 / np.sqrt(256 * 256)
    assert (kernels_gpu >= 0).all()
    torch.testing.assert_close(kernels_gpu.sum((1, 2)), torch.ones(8), atol=1e-5, rtol=0)
    # The same kernel and a tiny noise give the same image on both devices.
    deg = Degradation(
        2,
        {"mode": "nonblind", "size": 9, "fixed": {"family": "defocus", "radius": 2.5}},
        TINY_NOISE,
        bits=None,
        clip=False,
        reference={"jpeg": [80, 80], "jpeg_codec": "kornia"},  # `auto` would pick libjpeg on the CPU only
    )
    batch = _batch(2, 64)
    cpu = deg(batch, torch.tensor([1, 2]))
    gpu = deg({k: v.cuda() for k, v in batch.items()}, torch.tensor([1, 2]))
    torch.testing.assert_close(gpu["lr_raw"].cpu(), cpu["lr_raw"], atol=1e-4, rtol=0)
    assert (gpu["lr_ref"].cpu() - cpu["lr_ref"]).abs().mean() < 2e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_reproducible_across_batch_compositions():
    # The random draws are per sample on CUDA too; batched CUDA kernels (cuBLAS, cuDNN, reductions) may pick
    # algorithms by batch shape, so values agree to float rounding rather than bit for bit.
    deg = Degradation(2, KERNEL, NOISE, reference={"jpeg": [60, 95]})
    batch, seeds = _batch(4, device="cuda"), torch.tensor([101, 7, 55, 3])
    full = deg(batch, seeds)
    alone = deg(_sub(batch, slice(2, 3)), seeds[2:3])
    assert torch.equal(alone["shot"][0], full["shot"][2]) and torch.equal(alone["read"][0], full["read"][2])
    torch.testing.assert_close(alone["kernel"][0], full["kernel"][2], atol=1e-6, rtol=0)
    raw_diff = (alone["lr_raw"][0] - full["lr_raw"][2]).abs()
    assert raw_diff.max() <= 1 / 4095 + 1e-6 and (raw_diff > 0).float().mean() < 0.01
    assert (alone["lr_ref"][0] - full["lr_ref"][2]).abs().mean() < 2e-3


def test_half_precision_input_and_autocast_give_fp32():
    deg = Degradation(2, KERNEL, NOISE)
    batch = _batch(2, 32)
    half = {k: v.to(torch.bfloat16) for k, v in batch.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = deg(half, torch.tensor([1, 2]))
    assert all(v.dtype == torch.float32 for v in out.values())


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (
            {"kernel": {**KERNEL, "families": {"defocus": {"radius": [3, 1]}}}},
            "degradation.kernel.families.defocus.radius",
        ),
        ({"downsample": "nearest"}, "degradation.downsample"),
        ({"bits": 0}, "degradation.bits"),
        ({"clip": "yes"}, "degradation.clip"),
        ({"compile": "fast"}, "degradation.compile"),
        ({"reference": {"jpeg": [0, 120]}}, "degradation.reference.jpeg"),
        ({"reference": {"source": "noisy"}}, "degradation.reference.source"),
        ({"reference": {"bit": 8}}, "degradation.reference.bit"),
        ({"scale": 0}, "degradation.scale"),
        ({"noise": {"profiles": {"brooks": {"shot": [0, 1]}}}}, "degradation.noise.profiles.brooks.shot"),
    ],
)
def test_bad_config_raises_naming_the_key(kwargs, key):
    args = {"scale": 2, "kernel": KERNEL, "noise": NOISE, **kwargs}
    with pytest.raises(ConfigError, match=f"'{key}'"):
        Degradation(**args)


def test_bad_batch_raises_clear_errors():
    deg = Degradation(4, KERNEL, NOISE)
    with pytest.raises(ValueError, match=r"hr_linear.*multiples of 2 \* scale = 8"):
        deg(_batch(2, 36), torch.arange(2))
    with pytest.raises(ValueError, match="seeds must be an integer tensor"):
        deg(_batch(2, 32), torch.rand(2))
    with pytest.raises(KeyError, match="ccm"):
        deg({"hr_linear": torch.rand(1, 3, 32, 32), "wb": torch.ones(1, 3)}, torch.arange(1))


@pytest.mark.parametrize("preset", ["paper", "blind", "nonblind", "brooks", "bsraw"])
def test_presets_compose_and_run(compose_train, preset):
    cfg = compose_train(f"degradation={preset}", "data.scale=2")
    deg = instantiate(cfg.degradation)
    assert isinstance(deg, Degradation) and deg.scale == 2
    out = deg(_batch(2, 64), torch.tensor([3, 4]))
    assert out["lr_raw"].shape == (2, 1, 32, 32)
    assert out["kernel"].shape[-1] == deg.kernels.size
    expected_mode = "nonblind" if preset == "nonblind" else "blind"
    assert deg.kernels.mode == expected_mode


@pytest.mark.slow
def test_compiled_renderer_gives_the_eager_outputs():
    eager = Degradation(2, KERNEL, NOISE, reference={"jpeg": [70, 90]})
    compiled = Degradation(2, KERNEL, NOISE, reference={"jpeg": [70, 90]}, compile=True)
    batch, seeds = _batch(3, 32), torch.tensor([3, 4, 5])
    expected, got = eager(batch, seeds), compiled(batch, seeds)
    assert compiled.compile, "compilation fell back to eager"
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0)
    import pickle

    clone = pickle.loads(pickle.dumps(compiled))  # data-loader workers and DDP launchers pickle the data module
    assert clone.compile and clone._compiled is None
    torch.testing.assert_close(clone(batch, seeds)["hr_srgb"], expected["hr_srgb"], atol=1e-6, rtol=0)


def test_failed_compilation_warns_once_and_renders_eagerly(monkeypatch, caplog):
    def broken(fn):
        def call(*args):
            raise RuntimeError("no C++ compiler")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    deg = Degradation(2, KERNEL, NOISE, compile=True)
    batch, seeds = _batch(2, 32), torch.tensor([1, 2])
    with caplog.at_level("WARNING", logger="rawsr.degradation.simulate"):
        out = deg(batch, seeds)
        deg(batch, seeds)
    messages = [r.getMessage() for r in caplog.records if "degradation.compile" in r.getMessage()]
    assert len(messages) == 1 and "no C++ compiler" in messages[0]
    assert not deg.compile
    expected = Degradation(2, KERNEL, NOISE)(batch, seeds)
    assert all(torch.equal(out[k], expected[k]) for k in out)
