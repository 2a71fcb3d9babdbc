"""``python -m rawsr.export``: a fixed-tile ONNX model that agrees with PyTorch, and ``rawsr.predict
backend=onnxruntime`` giving the PyTorch backend's PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_dng_output import tiny_checkpoint
from test_predict import compose, linear_scene, read_png, write_bayer_dng

pytest.importorskip("onnxruntime")


def export_cfg(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rawsr.config import config_dir

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return hydra_compose("export", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from rawsr.export import run

    folder = tmp_path_factory.mktemp("export")
    ckpt = tiny_checkpoint(folder / "tiny.ckpt", color_branch=True)
    assert run(export_cfg(f"ckpt_path={ckpt}", f"output_dir={folder / 'out'}")) == 0
    return ckpt, folder / "out" / "tiny.onnx"


def test_sidecar_describes_the_model(exported):
    ckpt, onnx_path = exported
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert (meta["scale"], meta["tile"], meta["size_multiple"], meta["opset"]) == (2, 32, 4, 17)
    assert meta["inputs"]["raw"]["shape"] == [1, 1, 32, 32] and meta["outputs"]["linear"]["shape"] == [1, 3, 64, 64]
    assert meta["checkpoint"] == "tiny.ckpt" and meta["blend"] == "linear"
    assert sorted(p.name for p in onnx_path.parent.iterdir()) == ["tiny.json", "tiny.onnx"]  # no temporary left


def pytorch_and_onnx(ckpt: Path, onnx_path: Path, raw: np.ndarray, ref: np.ndarray):
    import onnxruntime as ort

    from rawsr.training import load_checkpoint

    net = load_checkpoint(ckpt).net.eval()
    with torch.no_grad():
        out = net(torch.from_numpy(raw), torch.from_numpy(ref))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["srgb", "linear"], {"raw": raw, "ref": ref})
    return [out["srgb"].numpy(), out["linear"].numpy()], got


def test_onnx_agrees_with_pytorch_on_random_inputs(exported):
    rng = np.random.default_rng(1)
    raw = rng.random((1, 1, 32, 32), dtype=np.float32)
    ref = rng.random((1, 3, 32, 32), dtype=np.float32)
    expected, got = pytorch_and_onnx(*exported, raw, ref)
    for e, g in zip(expected, got, strict=True):
        assert g.shape == e.shape == (1, 3, 64, 64)
        assert np.abs(g - e).max() <= 1e-4


def test_onnx_agrees_with_pytorch_on_a_real_raw_tile(exported, raw_samples):
    from rawsr.camera import read_raw
    from rawsr.inference import render_reference

    image = read_raw(raw_samples / "bayer" / "canon_eos_d30_imagemeta.crw")
    mosaic = np.ascontiguousarray(image.mosaic[600:632, 1000:1032])
    ref = render_reference(mosaic, image.wb, image.ccm).astype(np.float32) / 255
    expected, got = pytorch_and_onnx(*exported, mosaic[None, None], np.ascontiguousarray(ref.transpose(2, 0, 1)[None]))
    diff = max(float(np.abs(g - e).max()) for e, g in zip(expected, got, strict=True))
    print(f"ONNX vs PyTorch on a real raw tile: max abs difference {diff:.2e}")
    assert diff <= 1e-4


@pytest.mark.parametrize("options", [(), ("tta=true",)])
def test_onnxruntime_backend_gives_the_pytorch_png(exported, tmp_path, options):
    """Also with the self-ensemble, whose flipped and transposed tiles keep the exported model's tile size."""
    ckpt, onnx_path = exported
    source = write_bayer_dng(tmp_path / "scene.dng", linear_scene(80, 112), "GRBG", wb=(1.9, 1.0, 1.5))
    from rawsr.predict import run

    common = [f"input={source}", "device=cpu", "preview=false", *options]
    assert run(compose(f"ckpt_path={ckpt}", f"output_dir={tmp_path / 'pt'}", *common)) == 0
    ort_cfg = compose(f"model_path={onnx_path}", "backend=onnxruntime", f"output_dir={tmp_path / 'ort'}", *common)
    assert run(ort_cfg) == 0
    pt = read_png(tmp_path / "pt" / "scene_x2.png").astype(np.int64)
    ort_png = read_png(tmp_path / "ort" / "scene_x2.png").astype(np.int64)
    assert pt.shape == ort_png.shape == (160, 220, 3)  # GRBG: one column dropped to align to RGGB
    assert np.abs(pt - ort_png).max() <= 1


def test_export_refuses_what_it_cannot_export(tmp_path):
    from rawsr.export import run

    ablation = tiny_checkpoint(tmp_path / "nocolour.ckpt", color_branch=False)
    assert run(export_cfg(f"ckpt_path={ablation}", f"output_dir={tmp_path / 'out'}")) == 2
    assert run(export_cfg(f"ckpt_path={tmp_path / 'missing.ckpt'}", f"output_dir={tmp_path / 'out'}")) == 2
    assert run(export_cfg(f"ckpt_path={ablation}", "format=tflite", f"output_dir={tmp_path / 'out'}")) == 2
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
