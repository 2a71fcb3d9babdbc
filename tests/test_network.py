"""Tests of the two-branch rawSR network (``rawsr.model``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rawsr.imaging import pack_raw
from rawsr.model import (
    DCABlock,
    FusionGate,
    RawSRNet,
    apply_color_transform,
    deconv_geometry,
    unpack_color_planes,
)

NARROW = {"width": 16, "growth": 4, "dense_layers": 2}


def narrow(scale: int = 2, **kwargs) -> RawSRNet:
    torch.manual_seed(0)
    return RawSRNet(scale=scale, **{**NARROW, **kwargs})


def inputs(batch: int = 2, h: int = 16, w: int = 24, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, h, w, generator=g), torch.rand(batch, 3, h, w, generator=g)


# --------------------------------------------------------------------------------------------------------
# Analytic parameter count, written from the layer tables independently of the modules.


def conv_params(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def dca_params(c: int, growth: int, layers: int) -> int:
    dense = sum(conv_params(c + i * growth, growth, 3) for i in range(layers))
    return dense + conv_params(c + layers * growth, c, 1) + 2 * (c * c + c)


def expected_counts(scale: int, width: int, growth: int, layers: int, in_channels: int = 4) -> dict[str, int]:
    w = width
    restoration = (
        conv_params(in_channels, w, 3)
        + 4 * dca_params(w, growth, layers)
        + conv_params(w, w, 3)  # stride-2 conv
        + conv_params(3 * w, w, 1)
        + conv_params(w, w, 4)  # deconv 4x4 stride 2
        + conv_params(w, w, 3)
        + conv_params(4 * w, 2 * w, 1)
        + conv_params(2 * w, 12 * scale**2, 3)
    )
    colour = (
        conv_params(3, w, 3)
        + 2 * conv_params(w, w, 3)
        + 2 * (conv_params(2 * w, 2 * w, 3) + conv_params(2 * w, w, 4) + conv_params(w, w, 3))
        + conv_params(w, w, max(4, scale))  # final deconv of stride `scale`
        + conv_params(w, 12, 3)
    )
    fusion = conv_params(w, 2 * w, 1) + conv_params(2 * w, 2 * w, 1)
    return {"restoration": restoration, "colour": colour, "fusion": fusion}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def fusion_params(model: RawSRNet) -> int:
    return sum(count(m) for m in model.modules() if isinstance(m, FusionGate))


@pytest.mark.parametrize(("scale", "total", "restoration"), [(2, 5_163_324, 1_965_488), (4, 5_495_244, 2_297_408)])
def test_full_width_parameter_count_matches_the_released_model(scale, total, restoration):
    model = RawSRNet(scale=scale)
    assert sum(p.numel() for p in model.parameters()) == total == model.num_parameters()
    assert count(model.restoration) == restoration
    assert fusion_params(model) == 98_816
    assert count(model.color) - fusion_params(model) == 3_099_020
    expected = expected_counts(scale, 128, 16, 8)
    assert sum(expected.values()) == total


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize(("width", "growth", "layers"), [(16, 4, 2), (32, 8, 4)])
def test_parameter_count_follows_the_topology(scale, width, growth, layers):
    model = RawSRNet(scale=scale, width=width, growth=growth, dense_layers=layers)
    expected = expected_counts(scale, width, growth, layers)
    assert count(model.restoration) == expected["restoration"]
    assert fusion_params(model) == expected["fusion"]
    assert count(model.color) == expected["colour"] + expected["fusion"]
    srgb_input = RawSRNet(scale=scale, width=width, growth=growth, dense_layers=layers, input="srgb")
    assert count(srgb_input.restoration) == expected_counts(scale, width, growth, layers, 12)["restoration"]


# --------------------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize(("h", "w"), [(16, 16), (16, 24), (28, 12)])
def test_output_shapes(scale, h, w):
    raw, ref = inputs(2, h, w)
    out = narrow(scale)(raw, ref)
    assert set(out) == {"srgb", "linear"}
    for key in ("srgb", "linear"):
        assert out[key].shape == (2, 3, scale * h, scale * w)
        assert out[key].dtype == torch.float32
        assert torch.isfinite(out[key]).all()


def test_dtype_follows_the_model_and_input():
    raw, ref = inputs(1, 8, 8)
    out = narrow(2).double()(raw.double(), ref.double())
    assert out["srgb"].dtype == out["linear"].dtype == torch.float64


@pytest.mark.parametrize("stride", range(2, 9))
def test_deconv_geometry_multiplies_size_and_covers_every_pixel(stride):
    kernel, padding, output_padding = deconv_geometry(stride)
    layer = nn.ConvTranspose2d(1, 1, kernel, stride, padding, output_padding, bias=False)
    nn.init.ones_(layer.weight)
    out = layer(torch.ones(1, 1, 5, 7))
    assert out.shape == (1, 1, 5 * stride, 7 * stride)
    assert (out > 0).all()  # no output pixel left to the bias alone
    if stride in (2, 4):  # the released model's 4x4 kernels
        assert (kernel, padding, output_padding) == ((4, 1, 0) if stride == 2 else (4, 0, 0))


def test_deconv_geometry_rejects_stride_one():
    with pytest.raises(ValueError, match="stride must be an integer >= 2"):
        deconv_geometry(1)


def test_skip_connections_follow_the_layer_table():
    model = narrow(2)
    seen: dict[str, tuple] = {}

    def record(name: str):
        def hook(module, args, output) -> None:
            seen[name] = (args, output)

        return hook

    for name, module in model.named_modules():
        if name:
            module.register_forward_hook(record(name))
    raw, ref = inputs(1, 16, 16)
    model(raw, ref)
    out = {name: io[1] for name, io in seen.items()}
    cat = torch.cat
    r = "restoration."
    assert torch.equal(seen[r + "conv_in"][0][0], pack_raw(raw))
    assert torch.equal(
        seen[r + "bottleneck_low"][0][0], cat([out[r + "dense2"], out[r + "dense1"], out[r + "down"]], 1)
    )
    assert torch.equal(seen[r + "up"][0][0], out[r + "bottleneck_low"])
    high = cat([out[r + "conv_in"], out[r + "dense0"], out[r + "up"], out[r + "dense3"]], 1)
    assert torch.equal(seen[r + "bottleneck_high"][0][0], high)
    c = "color."
    r0, r1 = F.avg_pool2d(out[c + "conv0"], 2), F.avg_pool2d(out[c + "conv1"], 2)
    assert torch.equal(seen[c + "conv1"][0][0], r0)
    fuse_low_in, fuse_high_in = seen[c + "fuse_low"][0], seen[c + "fuse_high"][0]
    assert torch.equal(fuse_low_in[0], cat([out[c + "conv2"], r1], 1))
    assert torch.equal(fuse_low_in[1], out[r + "bottleneck_low"])
    assert torch.equal(seen[c + "mid"][0][0], out[c + "fuse_low"])
    assert torch.equal(fuse_high_in[0], cat([out[c + "mid"], r0], 1))
    assert torch.equal(fuse_high_in[1], out[r + "bottleneck_high"])
    assert torch.equal(seen[c + "up"][0][0], out[c + "fuse_high"])


# --------------------------------------------------------------------------------------------------------
# Packing, pixel-shuffle placement, per-pixel affine


def numpy_unpack(t: np.ndarray, r: int) -> np.ndarray:
    """Reference depth-to-space per colour with explicit index placement."""
    b, _, h, w = t.shape
    out = np.zeros((b, 3, r * h, r * w), t.dtype)
    for c in range(3):
        for i in range(r):
            for j in range(r):
                out[:, c, i::r, j::r] = t[:, c * r * r + i * r + j]
    return out


@pytest.mark.parametrize("factor", [4, 6, 8])
def test_unpack_color_planes_places_channels_on_expected_pixels(factor):
    t = torch.arange(2 * 3 * factor**2 * 3 * 5, dtype=torch.float32).reshape(2, 3 * factor**2, 3, 5)
    np.testing.assert_array_equal(unpack_color_planes(t, factor).numpy(), numpy_unpack(t.numpy(), factor))


@pytest.mark.parametrize("scale", [2, 4])
def test_linear_output_is_the_per_colour_shuffle_of_the_last_conv(scale):
    model = narrow(scale)
    captured = {}
    model.restoration.conv_out.register_forward_hook(lambda m, i, o: captured.setdefault("t", o))
    out = model(*inputs(1, 8, 12))
    t = captured["t"].detach().numpy()
    assert t.shape == (1, 12 * scale**2, 4, 6)
    np.testing.assert_array_equal(out["linear"].detach().numpy(), numpy_unpack(t, 2 * scale))


def numpy_affine(m: np.ndarray, lin: np.ndarray) -> np.ndarray:
    """``R = sum_k M[k] lin_k + M[9]``, ``G = sum_k M[3+k] lin_k + M[10]``, ``B = sum_k M[6+k] lin_k + M[11]``."""
    out = np.empty_like(lin)
    for row in range(3):
        out[:, row] = m[:, 9 + row] + sum(m[:, 3 * row + k] * lin[:, k] for k in range(3))
    return out


def test_apply_color_transform_matches_numpy():
    m, lin = torch.randn(2, 12, 5, 7, dtype=torch.float64), torch.rand(2, 3, 5, 7, dtype=torch.float64)
    np.testing.assert_allclose(apply_color_transform(m, lin).numpy(), numpy_affine(m.numpy(), lin.numpy()))


@pytest.mark.parametrize("scale", [2, 4])
def test_srgb_is_the_per_pixel_affine_of_linear_with_the_colour_head(scale):
    model = narrow(scale)
    raw, ref = inputs(2, 8, 12)
    forced = torch.randn(2, 12, 8 * scale, 12 * scale, generator=torch.Generator().manual_seed(5))
    handle = model.color.head.register_forward_hook(lambda m, i, o: forced)
    out = model(raw, ref)
    handle.remove()
    expected = numpy_affine(forced.numpy(), out["linear"].detach().numpy())
    np.testing.assert_allclose(out["srgb"].detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    # without the forced head the output differs, so the hook did take effect
    assert not torch.allclose(model(raw, ref)["srgb"], out["srgb"])


# --------------------------------------------------------------------------------------------------------
# Fusion gates


def test_fusion_convolutions_start_at_exactly_zero():
    gates = [m for m in RawSRNet(scale=2, **NARROW).modules() if isinstance(m, FusionGate)]
    assert len(gates) == 2
    for gate in gates:
        assert torch.count_nonzero(gate.proj.weight) == 0
        assert torch.count_nonzero(gate.proj.bias) == 0


def colour_matrix(model: RawSRNet, raw: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, dict]:
    captured = {}
    handle = model.color.head.register_forward_hook(lambda m, i, o: captured.setdefault("m", o))
    out = model(raw, ref)
    handle.remove()
    return captured["m"], out


def test_at_init_raw_reaches_srgb_only_through_linear():
    model = narrow(2)
    raw, ref = inputs(2, 12, 16)
    other_raw = torch.rand_like(raw)
    m1, out1 = colour_matrix(model, raw, ref)
    m2, out2 = colour_matrix(model, other_raw, ref)
    assert not torch.allclose(out1["linear"], out2["linear"])
    assert torch.equal(m1, m2)
    # same weights without fusion gates: bit-identical outputs
    plain = RawSRNet(scale=2, fusion=False, **NARROW)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert missing == [] and unexpected and all(".fuse_" in key for key in unexpected)
    for key, value in plain(raw, ref).items():
        assert torch.equal(value, out1[key])
    # once the gates open, the colour matrices do depend on the raw input
    with torch.no_grad():
        for gate in (model.color.fuse_low, model.color.fuse_high):
            gate.proj.weight.normal_(0, 0.1)
    m1, _ = colour_matrix(model, raw, ref)
    m2, _ = colour_matrix(model, other_raw, ref)
    assert not torch.allclose(m1, m2)


def test_fusion_gate_adds_leaky_relu_of_projection():
    gate = FusionGate(4, 6)
    with torch.no_grad():
        gate.proj.weight.normal_()
        gate.proj.bias.normal_()
    x, guide = torch.randn(2, 6, 3, 5), torch.randn(2, 4, 3, 5)
    z = np.einsum("oi,bihw->bohw", gate.proj.weight[:, :, 0, 0].detach().numpy(), guide.numpy())
    z += gate.proj.bias.detach().numpy()[None, :, None, None]
    expected = x.numpy() + np.where(z > 0, z, 0.2 * z)
    np.testing.assert_allclose(gate(x, guide).detach().numpy(), expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------------
# Gradients and initialisation


@pytest.mark.parametrize("scale", [2, 4])
def test_gradient_reaches_every_parameter(scale):
    model = narrow(scale)
    raw, ref = inputs(2, 8, 8)
    out = model(raw, ref)
    F.l1_loss(out["srgb"], torch.rand_like(out["srgb"])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.count_nonzero(p.grad) > 0, name


def test_xavier_uniform_weights_and_zero_biases():
    model = RawSRNet(scale=2, width=32, growth=8, dense_layers=2)
    gates = {id(m.proj) for m in model.modules() if isinstance(m, FusionGate)}
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    assert len(layers) > 20
    for layer in layers:
        if id(layer) in gates:
            continue
        w = layer.weight.detach().numpy()
        receptive = int(np.prod(w.shape[2:])) if w.ndim == 4 else 1
        bound = math.sqrt(6.0 / ((w.shape[0] + w.shape[1]) * receptive))
        assert np.abs(w).max() <= bound
        if w.size >= 2000:  # uniform on [-bound, bound]: std = bound / sqrt(3)
            assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
        assert torch.count_nonzero(layer.bias) == 0


def test_no_normalisation_layers():
    norms = (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)
    assert not any(isinstance(m, norms) for m in RawSRNet(scale=2, **NARROW).modules())


# --------------------------------------------------------------------------------------------------------
# DCA block


def randomise(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def manual_dense(block: DCABlock, x: torch.Tensor) -> torch.Tensor:
    """Dense layers and 1x1 fusion recomputed with functional ops on the block's weights."""
    features = [x]
    for layer in block.dense:
        conv = layer[0]
        features.append(F.leaky_relu(F.conv2d(torch.cat(features, 1), conv.weight, conv.bias, padding=1), 0.2))
    assert torch.cat(features, 1).shape[1] == 12 + 3 * 4
    return F.conv2d(torch.cat(features, 1), block.fuse.weight, block.fuse.bias)


def test_dca_without_attention_is_residual_plus_fused_dense_features():
    block = DCABlock(channels=12, growth=4, layers=3, attention=False)
    randomise(block)
    x = torch.randn(2, 12, 6, 7)
    with torch.no_grad():
        expected = x + manual_dense(block, x)
        np.testing.assert_allclose(block(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_dca_with_attention_scales_by_squeeze_excitation_without_reduction():
    block = DCABlock(channels=12, growth=4, layers=3, attention=True)
    randomise(block)
    fc1, fc2 = block.attention.fc[0], block.attention.fc[2]
    assert fc1.weight.shape == fc2.weight.shape == (12, 12)
    x = torch.randn(2, 12, 6, 7)
    with torch.no_grad():
        y = manual_dense(block, x).numpy()
        pooled = y.mean(axis=(2, 3))
        hidden = np.maximum(pooled @ fc1.weight.numpy().T + fc1.bias.numpy(), 0)
        a = 1 / (1 + np.exp(-(hidden @ fc2.weight.numpy().T + fc2.bias.numpy())))
        expected = x.numpy() + a[:, :, None, None] * y
        np.testing.assert_allclose(block(x).numpy(), expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------------
# Ablations


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("ablation", [{"attention": False}, {"fusion": False}, {"input": "srgb"}])
def test_ablations_build_and_run(scale, ablation):
    model = narrow(scale, **ablation)
    raw, ref = inputs(2, 8, 12)
    out = model(None if ablation.get("input") == "srgb" else raw, ref)
    assert out["srgb"].shape == out["linear"].shape == (2, 3, 8 * scale, 12 * scale)
    assert torch.isfinite(out["srgb"]).all()
    if "attention" in ablation:
        assert not any(block.attention is not None for block in model.modules() if isinstance(block, DCABlock))
    if "fusion" in ablation:
        assert not any(isinstance(m, FusionGate) for m in model.modules())


def test_srgb_input_feeds_the_reference_to_the_restoration_branch():
    model = narrow(2, input="srgb")
    raw, ref = inputs(1, 8, 8)
    assert model.restoration.conv_in[0].in_channels == 12
    assert torch.equal(model(raw, ref)["srgb"], model(torch.rand_like(raw), ref)["srgb"])
    assert not torch.allclose(model(None, ref)["linear"], model(None, torch.rand_like(ref))["linear"])


@pytest.mark.parametrize("scale", [2, 4])
def test_without_colour_branch_srgb_is_render_srgb_of_linear(scale, monkeypatch):
    calls = []

    def render_srgb(linear, wb, ccm, tone=False):
        calls.append((linear, wb, ccm, tone))
        return torch.einsum("bij,bjhw->bihw", ccm, linear * wb[:, :, None, None])

    monkeypatch.setattr("rawsr.model.network.render_srgb", render_srgb)
    model = narrow(scale, color_branch=False)
    assert model.color is None
    raw, _ = inputs(2, 8, 8)
    wb, ccm = torch.rand(2, 3) + 1, torch.randn(2, 3, 3)
    out = model(raw, None, wb=wb, ccm=ccm)
    assert len(calls) == 1 and calls[0][1] is wb and calls[0][2] is ccm and calls[0][3] is False
    assert calls[0][0] is out["linear"]
    assert out["srgb"].shape == (2, 3, 8 * scale, 8 * scale)


def test_without_colour_branch_uses_the_project_isp():
    from rawsr import imaging as isp

    model = narrow(2, color_branch=False)
    raw, ref = inputs(2, 8, 8)
    wb = torch.tensor([[2.0, 1.0, 1.5], [1.8, 1.0, 1.7]])
    ccm = torch.eye(3).expand(2, 3, 3).clone()
    out = model(raw, ref, wb=wb, ccm=ccm)
    torch.testing.assert_close(out["srgb"], isp.render_srgb(out["linear"], wb, ccm))


@pytest.mark.parametrize("missing", ["wb", "ccm"])
def test_without_colour_branch_needs_wb_and_ccm(missing):
    model = narrow(2, color_branch=False)
    raw, ref = inputs(1, 8, 8)
    kwargs = {"wb": torch.ones(1, 3), "ccm": torch.eye(3)[None]}
    kwargs[missing] = None
    with pytest.raises(ValueError, match=f"'{missing}'"):
        model(raw, ref, **kwargs)


# --------------------------------------------------------------------------------------------------------
# Bad arguments


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("scale", 1),
        ("scale", 2.0),
        ("scale", True),
        ("width", 0),
        ("growth", -4),
        ("dense_layers", 0),
        ("attention", "yes"),
        ("fusion", 1),
        ("color_branch", None),
        ("input", "rgb"),
    ],
)
def test_bad_constructor_arguments_name_the_argument(name, value):
    with pytest.raises(ValueError, match=f"argument '{name}'"):
        RawSRNet(**{name: value})


@pytest.mark.parametrize(
    ("raw_shape", "ref_shape", "message"),
    [
        ((1, 1, 18, 16), (1, 3, 18, 16), "'raw' height and width must be divisible by 4"),
        ((1, 3, 16, 16), (1, 3, 16, 16), r"'raw' must have shape \(B, 1, H, W\)"),
        ((1, 1, 16, 16), (1, 1, 16, 16), r"'ref' must have shape \(B, 3, H, W\)"),
        ((1, 1, 16, 16), (1, 3, 16, 20), "'raw' and 'ref' must share"),
        ((2, 1, 16, 16), (1, 3, 16, 16), "'raw' and 'ref' must share"),
        ((16, 16), (1, 3, 16, 16), r"'raw' must have shape \(B, 1, H, W\)"),
        (None, (1, 3, 16, 16), "'raw' is required"),
        ((1, 1, 16, 16), None, "'ref' is required"),
    ],
)
def test_bad_forward_inputs_raise_clear_errors(raw_shape, ref_shape, message):
    model = narrow(2)
    raw = None if raw_shape is None else torch.rand(raw_shape)
    ref = None if ref_shape is None else torch.rand(ref_shape)
    with pytest.raises(ValueError, match=message):
        model(raw, ref)


def test_integer_input_is_rejected():
    with pytest.raises(ValueError, match="'raw' must be a floating-point tensor"):
        narrow(2)(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), torch.rand(1, 3, 8, 8))


# --------------------------------------------------------------------------------------------------------
# Learning smoke test


def structured_batch(batch: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Smooth coloured patterns: RGGB mosaic and sRGB reference at ``size/2``, sRGB target at ``size``."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = []
    for b in range(batch):
        f = 3 + 2 * b
        images.append(
            torch.stack(
                [
                    0.5 + 0.4 * torch.sin(2 * math.pi * f * xx),
                    0.5 + 0.4 * torch.cos(2 * math.pi * (f - 1) * yy),
                    0.5 + 0.4 * torch.sin(4 * math.pi * (xx + yy)),
                ]
            )
        )
    linear = 0.8 * torch.stack(images)
    low = F.avg_pool2d(linear, 2)
    raw = torch.zeros(batch, 1, size // 2, size // 2)
    for c, (i, j) in zip((0, 1, 1, 2), ((0, 0), (0, 1), (1, 0), (1, 1)), strict=True):
        raw[:, 0, i::2, j::2] = low[:, c, i::2, j::2]
    return raw, low ** (1 / 2.2), linear ** (1 / 2.2)


def test_narrow_model_learns_a_fixed_batch():
    torch.manual_seed(0)
    model = RawSRNet(scale=2, width=32, growth=8, dense_layers=4)
    raw, ref, target = structured_batch()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-4)
    losses = []
    for _ in range(30):
        loss = F.l1_loss(model(raw, ref)["srgb"], target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.6 * losses[0]


def _bicubic_numpy(image: np.ndarray, scale: int) -> np.ndarray:
    """Keys' bicubic (a = -0.75, half-pixel centres, edge replication), the interpolation the reference skip adds:
    ``(C, H, W)`` -> ``(C, sH, sW)``, one separable pass per axis."""

    def weights(t: np.ndarray) -> np.ndarray:
        a, t = -0.75, np.abs(t)
        return np.where(
            t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1, np.where(t < 2, a * (t**3 - 5 * t**2 + 8 * t - 4), 0)
        )

    def along(x: np.ndarray, axis: int) -> np.ndarray:
        n = x.shape[axis]
        centres = (np.arange(n * scale) + 0.5) / scale - 0.5
        base = np.floor(centres).astype(int)
        out = 0
        for k in range(-1, 3):
            idx = np.clip(base + k, 0, n - 1)
            w = weights(centres - (base + k))
            shape = [1] * x.ndim
            shape[axis] = -1
            out = out + np.take(x, idx, axis=axis) * w.reshape(shape)
        return out

    return along(along(image.astype(np.float64), 1), 2)


@pytest.mark.parametrize("scale", [2, 4])
def test_reference_skip_starts_at_bicubic_and_learns_a_correction(scale):
    torch.manual_seed(0)
    net = RawSRNet(scale=scale, width=8, growth=4, dense_layers=1, reference_skip=True)
    raw, ref = torch.rand(2, 1, 16, 16), torch.rand(2, 3, 16, 16)
    out = net(raw, ref)["srgb"]
    expected = np.stack([_bicubic_numpy(r, scale) for r in ref.numpy()])
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=1e-5)
    assert net.color.head.weight.abs().sum() == 0 and net.color.head.weight.requires_grad
    loss = (out - torch.rand_like(out)).abs().mean()
    loss.backward()
    assert net.color.head.weight.grad.abs().sum() > 0  # it learns from the first step
    plain = RawSRNet(scale=scale, width=8, growth=4, dense_layers=1)
    assert plain.color.head.weight.abs().sum() > 0  # the paper's initialisation is untouched


def test_reference_skip_needs_the_colour_branch():
    with pytest.raises(ValueError, match="reference_skip"):
        RawSRNet(scale=2, width=8, growth=4, dense_layers=1, color_branch=False, reference_skip=True)
