"""Inference speed-ups give the plain forward's numbers: memory format, in-place activations, torch.compile; FLOP
counting and native bfloat16 detection."""

from __future__ import annotations

import copy
import ctypes
import logging

import numpy as np
import pytest
import torch
from test_evaluate import save_checkpoint as training_checkpoint
from test_predict import compose, linear_scene, read_png, save_checkpoint, write_bayer_dng
from torch import nn

import rawsr.inference.accelerate as accelerate
from rawsr.config import ConfigError
from rawsr.evaluate import evaluate
from rawsr.inference.accelerate import (
    MEMORY_FORMATS,
    CompiledNetwork,
    activations_in_place,
    cpu_flags,
    native_bf16,
    network_flops,
    prepare_network,
    retain_freed_memory,
)
from rawsr.model import RawSRNet
from rawsr.predict import run

TOLERANCE = 1e-4
"""Largest absolute difference allowed from the plain float32 forward."""


def network(width: int = 128, growth: int = 16, dense_layers: int = 8, seed: int = 0) -> RawSRNet:
    """A randomly initialised x2 network whose outputs are far from zero: the fusion gates are open (they start at
    zero) and the colour head is scaled up, so that the sRGB output has a standard deviation of about 0.1 and a
    difference of ``TOLERANCE`` is a small fraction of it."""
    torch.manual_seed(seed)
    net = RawSRNet(scale=2, width=width, growth=growth, dense_layers=dense_layers).eval()
    with torch.no_grad():
        for gate in (net.color.fuse_low, net.color.fuse_high):
            gate.proj.weight.normal_(std=0.05)
        net.color.head.weight.mul_(30)
    return net


def inputs(batch: int, size: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, size, size, generator=g), torch.rand(batch, 3, size, size, generator=g)


def assert_same(out: dict, plain: dict) -> None:
    for key in ("srgb", "linear"):
        assert plain[key].std() > 0.03, key  # a difference of TOLERANCE would be visible
        torch.testing.assert_close(out[key], plain[key], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("memory_format", list(MEMORY_FORMATS))
def test_paper_network_prepared_gives_the_plain_forward(memory_format):
    net = network()
    raw, ref = inputs(2, 64)
    with torch.no_grad():
        plain = net(raw, ref)
        prepared = prepare_network(copy.deepcopy(net), memory_format)
        out = prepared(raw, ref)
    assert_same(out, plain)
    channels_last = memory_format == "channels_last"
    assert all(
        m.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        for m in prepared.modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)  # a 1x1 weight is both
    )
    assert out["linear"].is_contiguous(memory_format=torch.channels_last) == channels_last  # activations follow


def test_contiguous_converts_a_channels_last_network_back():
    net = prepare_network(network(8, 4, 2), "channels_last")
    prepare_network(net, "contiguous")
    assert all(p.is_contiguous() for p in net.parameters())


def test_activations_after_convolutions_run_in_place_with_the_same_results_and_gradients():
    net = network(16, 8, 2).train()
    changed = copy.deepcopy(net)
    switched = activations_in_place(changed)
    relus = [m for m in changed.modules() if isinstance(m, nn.LeakyReLU)]
    assert switched == sum(m.inplace for m in relus) == len(relus) - 2  # the two fusion gates' are no Sequential
    assert not changed.color.fuse_low.act.inplace
    assert activations_in_place(changed) == 0
    raw, ref = inputs(2, 32)
    target = torch.rand(2, 3, 64, 64)
    for model in (net, changed):
        (model(raw, ref)["srgb"] - target).abs().mean().backward()
    with torch.no_grad():
        assert_same(changed(raw, ref), net(raw, ref))
    for a, b in zip(net.parameters(), changed.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=1e-4)


def test_prepare_network_refuses_bad_options():
    with pytest.raises(ValueError, match="memory_format must be one of"):
        prepare_network(network(8, 4, 2), "nhwc")
    with pytest.raises(ValueError, match="compile must be true or false"):
        prepare_network(network(8, 4, 2), compile="yes")


@pytest.mark.slow
def test_compiled_network_gives_the_plain_forward_with_one_graph_for_all_batches():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    net = network(8, 4, 2)
    prepared = prepare_network(copy.deepcopy(net), compile=True)
    assert isinstance(prepared, CompiledNetwork)
    assert sum(1 for _ in prepared.parameters()) == sum(1 for _ in net.parameters())  # registered once
    with torch.inference_mode():  # as rawsr.predict runs it, tiles made in inference mode
        raw, ref = inputs(3, 32)
        plain = net(raw, ref)
        whole = prepared(raw, ref)
        part = prepared(raw[1:], ref[1:])  # the last, partial batch of an image: padded, not compiled again
    assert counters["stats"]["unique_graphs"] == 1
    assert not prepared.eager
    assert_same(whole, plain)
    assert_same(part, {k: v[1:] for k, v in plain.items()})


def test_compiled_network_runs_eagerly_when_compiling_fails(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: broken)
    net = network(8, 4, 2)
    raw, ref = inputs(2, 32)
    prepared = prepare_network(copy.deepcopy(net), compile=True)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="rawsr.inference"):
        out = prepared(raw, ref)
        plain = net(raw, ref)
    assert prepared.eager
    assert "torch.compile failed" in caplog.text and "no C++ compiler" in caplog.text
    assert_same(out, plain)


# ------------------------------------------------------------------------------------------------ FLOPs


def hook_flops(net: nn.Module, *args) -> int:
    """FLOPs of every convolution and transposed convolution from their shapes, counted by forward hooks."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] // module.groups
        if isinstance(module, nn.ConvTranspose2d):
            total += 2 * inputs[0].numel() * module.out_channels * kernel
        else:
            total += 2 * output.numel() * module.in_channels * kernel

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        net(*args)
    for hook in hooks:
        hook.remove()
    return total


def test_network_flops_counts_convolutions_only():
    layers = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1), nn.Flatten(), nn.Linear(600, 5)
    )
    x = torch.rand(2, 3, 5, 5)
    conv = 2 * (2 * 8 * 5 * 5) * 3 * 9  # per output value: 3 channels x 9 taps multiply-adds
    deconv = 2 * (2 * 8 * 5 * 5) * 6 * 16  # per input value: 6 channels x 16 taps
    assert network_flops(layers, x) == conv + deconv == hook_flops(layers, x)


def test_network_flops_of_the_paper_network():
    net = RawSRNet(scale=2).eval()
    raw, ref = inputs(1, 32)
    flops = network_flops(net, raw, ref)
    assert flops == hook_flops(net, raw, ref)
    assert flops * (256 // 32) ** 2 == pytest.approx(157.0e9, rel=0.01)  # per 256x256 LR tile


# ------------------------------------------------------------------------------------------------ bfloat16


CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse avx2 avx512f {extra}
bogomips\t: 4200.00

processor\t: 1
flags\t\t: fpu sse avx2 avx512f {extra}
"""


def test_cpu_flags_reads_the_first_processor():
    assert cpu_flags(CPUINFO.format(extra="amx_bf16")) == {"fpu", "sse", "avx2", "avx512f", "amx_bf16"}
    assert cpu_flags("Features\t: fp asimd bf16\n") == {"fp", "asimd", "bf16"}
    assert cpu_flags("") == set()


@pytest.mark.parametrize(
    ("extra", "native"), [("", False), ("avx512_bf16", True), ("amx_bf16 amx_tile", True), ("avx512_fp16", False)]
)
def test_native_bf16_on_the_cpu_follows_its_flags(extra, native):
    assert native_bf16("cpu", cpu_flags(CPUINFO.format(extra=extra))) is native


def test_native_bf16_elsewhere():
    assert native_bf16("meta") is False
    assert isinstance(native_bf16("cpu"), bool)  # this machine's own /proc/cpuinfo, or False without one


# ------------------------------------------------------------------------------------------------ training


def test_training_in_channels_last_gives_the_same_loss_and_gradients(tmp_path):
    from rawsr.training import RawSRModule

    net = {"scale": 2, "width": 8, "growth": 4, "dense_layers": 2}
    torch.manual_seed(0)
    modules = {name: RawSRModule(net=net, tile=16, memory_format=name) for name in MEMORY_FORMATS}
    modules["channels_last"].load_state_dict(modules["contiguous"].state_dict())
    weight = modules["channels_last"].net.restoration.conv_in[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    raw, ref, target = torch.rand(2, 1, 16, 16), torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32)
    losses, grads = {}, {}
    for name, module in modules.items():
        with torch.no_grad():  # open the zero-initialised fusion gates so that every weight gets a gradient
            for gate in (module.net.color.fuse_low, module.net.color.fuse_high):
                gate.proj.weight.fill_(0.01)
        loss = module.loss(module(raw, ref), {"hr_srgb": target})
        loss.backward()
        losses[name] = loss.item()
        grads[name] = {k: p.grad for k, p in module.named_parameters()}
    assert losses["channels_last"] == pytest.approx(losses["contiguous"], rel=1e-6)
    for key, grad in grads["contiguous"].items():
        torch.testing.assert_close(grads["channels_last"][key], grad, rtol=1e-4, atol=1e-6)
    # A checkpoint of channels-last weights loads, with weights_only, into a module of either layout.
    torch.save(modules["channels_last"].state_dict(), tmp_path / "state.pt")
    restored = RawSRModule(net=net, tile=16)
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    for key, value in restored.state_dict().items():
        torch.testing.assert_close(value, modules["channels_last"].state_dict()[key], rtol=0, atol=0)


def test_training_refuses_an_unknown_memory_format():
    from rawsr.training import RawSRModule

    with pytest.raises(ConfigError, match="config key 'model.memory_format'"):
        RawSRModule(net={"scale": 2, "width": 8, "growth": 4, "dense_layers": 1}, tile=16, memory_format="nhwc")


# ------------------------------------------------------------------------------------------------ freed memory


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc 2.33 and later)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def mapped_bytes_of_a_large_block() -> int:
    """How many more bytes glibc holds in separately mapped blocks while a 64 MiB array is alive."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    before = libc.mallinfo2().hblkhd
    block = np.ones(16 * 2**20, dtype=np.float32)  # 64 MiB, written so that its pages exist
    mapped = libc.mallinfo2().hblkhd - before
    del block
    return mapped


def test_retained_memory_comes_from_the_heap_and_the_defaults_return_after():
    if accelerate._glibc() is None or not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("needs glibc 2.33 or later (mallinfo2)")
    assert mapped_bytes_of_a_large_block() >= 64 * 2**20  # glibc's default: a large block is mapped on its own
    with retain_freed_memory() as retained:
        assert retained is True
        assert mapped_bytes_of_a_large_block() == 0
    assert mapped_bytes_of_a_large_block() >= 64 * 2**20
    with retain_freed_memory(False) as retained:
        assert retained is False
        assert mapped_bytes_of_a_large_block() >= 64 * 2**20


def test_retained_memory_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(accelerate.platform, "libc_ver", lambda: ("", ""))
    with retain_freed_memory() as retained:
        assert retained is False


# ------------------------------------------------------------------------------------------------ entry points


@pytest.mark.parametrize("options", [(), ("border_pad=4", "tta=true")], ids=["defaults", "tta"])
def test_predict_prepares_the_network_as_configured_with_the_same_output(tmp_path, monkeypatch, options):
    ckpt = save_checkpoint(tmp_path / "model.ckpt", tile=16)
    write_bayer_dng(tmp_path / "photo.dng", linear_scene(40, 52), "RGGB")
    seen = []

    def spy(net, memory_format="channels_last", compile=False):
        seen.append((memory_format, compile))
        return prepare_network(net, memory_format, compile)

    monkeypatch.setattr(accelerate, "prepare_network", spy)
    outputs = {}
    for memory_format in MEMORY_FORMATS:
        out_dir = tmp_path / memory_format
        paths = (f"ckpt_path={ckpt}", f"input={tmp_path / 'photo.dng'}", f"output_dir={out_dir}")
        assert run(compose(*paths, "preview=false", f"memory_format={memory_format}", *options)) == 0
        outputs[memory_format] = read_png(out_dir / "photo_x2.png").astype(int)
    assert seen == [(name, False) for name in MEMORY_FORMATS]
    assert outputs["channels_last"].std() > 100
    assert abs(outputs["channels_last"] - outputs["contiguous"]).max() <= 1  # of 65535


@pytest.mark.parametrize(("override", "key"), [("memory_format=nhwc", "memory_format"), ("compile=yes", "compile")])
def test_predict_and_evaluate_name_a_bad_option(tmp_path, caplog, compose_train, override, key):
    ckpt = save_checkpoint(tmp_path / "model.ckpt", tile=16)
    cfg = compose(f"ckpt_path={ckpt}", f"input={ckpt}", f"output_dir={tmp_path / 'out'}", override)
    with caplog.at_level(logging.ERROR, logger="rawsr.predict"):
        assert run(cfg) == 2
    assert f"config key '{key}'" in caplog.text
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        evaluate(compose_train(f"ckpt_path={ckpt}", override, config_name="evaluate"))


def test_evaluate_prepares_every_checkpoint_with_the_same_scores(tmp_path, compose_train, monkeypatch):
    a, b = training_checkpoint(tmp_path / "a.ckpt"), training_checkpoint(tmp_path / "b.ckpt", seed=1)
    seen = []

    def spy(net, memory_format="channels_last", compile=False):
        seen.append(memory_format)
        return prepare_network(net, memory_format, compile)

    monkeypatch.setattr(accelerate, "prepare_network", spy)
    scores = {}
    for memory_format in MEMORY_FORMATS:
        overrides = (f"compare=[{b}]", "data.num_workers=0", "data.val.val_crops=64", "limit=1")
        cfg = compose_train(f"ckpt_path={a}", *overrides, f"memory_format={memory_format}", config_name="evaluate")
        scores[memory_format] = {row["model"]: row["psnr"] for row in evaluate(cfg)}
    assert seen == ["channels_last"] * 2 + ["contiguous"] * 2
    for model, psnr in scores["channels_last"].items():
        assert psnr == pytest.approx(scores["contiguous"][model], abs=1e-3)
