"""``python -m rawsr.predict`` and its streaming image writers, end to end on synthetic and real raw files."""

from __future__ import annotations

import logging
import os
import re
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rawsr.inference import prefetch, render_reference, tiled_rows
from rawsr.inference.tiling import feathered_overlap
from rawsr.predict import find_inputs, run
from rawsr.writers import Preview, write_image, write_preview, write_rows

RAW_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "raw-samples"
NARROW = {"width": 16, "growth": 8, "dense_layers": 2}
SENSOR_RED_SITE = {"RGGB": (0, 0), "GRBG": (0, 1), "GBRG": (1, 0), "BGGR": (1, 1)}


# ------------------------------------------------------------------------------------------------ helpers


def read_png(path: Path) -> np.ndarray:
    """A PNG decoder independent of the writer: checks every CRC, undoes filters 0-2, returns ``(H, W, C)``."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, kinds = 8, b"", []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])[0] == zlib.crc32(kind + body)
        kinds.append(kind)
        if kind == b"IHDR":
            w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and interlace == 0
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[colour]
    bpp = channels * depth // 8
    lines = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + w * bpp)
    out = np.empty((h, w * bpp), dtype=np.uint8)
    previous = np.zeros(w * bpp, dtype=np.uint8)
    for y in range(h):
        kind, line = lines[y, 0], lines[y, 1:]
        if kind == 0:
            out[y] = line
        elif kind == 1:  # Sub: each byte adds the reconstructed byte one pixel to the left
            out[y] = (line.reshape(w, bpp).cumsum(axis=0, dtype=np.int64) % 256).astype(np.uint8).ravel()
        elif kind == 2:  # Up
            out[y] = line + previous
        else:
            raise AssertionError(f"filter {kind} not expected")
        previous = out[y]
    return out.view(">u2" if depth == 16 else np.uint8).reshape(h, w, channels).astype(f"u{depth // 8}")


def save_checkpoint(path: Path, scale: int = 2, tile: int = 32, seed: int = 0, **net_kwargs) -> Path:
    """A checkpoint in the training format: ``state_dict`` with ``net.`` keys, ``hyper_parameters`` net/tile."""
    from rawsr.model import RawSRNet

    kwargs = {"scale": scale, **NARROW, **net_kwargs}
    torch.manual_seed(seed)
    net = RawSRNet(**kwargs)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"net": kwargs, "tile": tile}}, path)
    return path


def linear_scene(h: int, w: int) -> np.ndarray:
    """A natural linear RGB scene ``(h, w, 3)`` in [0, 1] (skimage's astronaut, gamma 2.2 undone)."""
    from skimage.data import astronaut
    from skimage.transform import resize

    return resize(astronaut(), (h, w), anti_aliasing=True) ** 2.2


def write_bayer_dng(path: Path, linear: np.ndarray, cfa: str, black: int = 64, white: int = 4095, **kw) -> Path:
    """Sample ``linear (H, W, 3)`` through a ``cfa`` sensor and write it as a 12-bit DNG."""
    from rawsr.camera import write_dng

    h, w, _ = linear.shape
    colour = np.array(["RGB".index(c) for c in cfa]).reshape(2, 2)
    yy, xx = np.mgrid[:h, :w]
    site = colour[yy % 2, xx % 2]
    values = np.take_along_axis(linear, site[..., None], axis=2)[..., 0]
    mosaic = np.round(black + values * (white - black)).astype(np.uint16)
    return write_dng(path, mosaic, cfa=cfa, black_level=black, white_level=white, **kw)


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rawsr.config import config_dir

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return hydra_compose("predict", overrides=["progress=false", *overrides])
    finally:
        GlobalHydra.instance().clear()


def srgb_oetf(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


# ------------------------------------------------------------------------------------------------ writers


def test_png_rows_round_trip_16bit(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 65536, size=(300, 700, 3), dtype=np.uint16)  # incompressible: several IDAT chunks
    blocks = [img[:1], img[1:130], img[130:131], img[131:]]
    path = write_rows(tmp_path / "x.png", iter(blocks), 300, 700)
    assert path.stat().st_size > 1 << 20
    np.testing.assert_array_equal(read_png(path), img)
    import imageio.v3 as iio

    np.testing.assert_array_equal(iio.imread(path), img >> 8)  # Pillow reads 16-bit RGB as its high bytes


def test_png_grey_and_8bit_read_back_by_imageio(tmp_path):
    import imageio.v3 as iio

    rng = np.random.default_rng(1)
    grey = rng.integers(0, 65536, size=(33, 47), dtype=np.uint16)
    np.testing.assert_array_equal(iio.imread(write_image(tmp_path / "g.png", grey)), grey)
    rgb8 = rng.integers(0, 256, size=(20, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(iio.imread(write_image(tmp_path / "c.png", rgb8, compress_level=0)), rgb8)


def test_tiff_rows_round_trip(tmp_path):
    import tifffile

    rng = np.random.default_rng(2)
    img = rng.integers(0, 65536, size=(300, 270, 3), dtype=np.uint16)
    path = write_rows(tmp_path / "x.tif", iter([img[:100], img[100:257], img[257:]]), 300, 270)
    np.testing.assert_array_equal(tifffile.imread(path), img)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_failure_mid_stream_leaves_no_file(tmp_path, suffix):
    target = tmp_path / f"out{suffix}"
    block = np.zeros((300, 40, 3), dtype=np.uint16)

    def rows():
        yield block
        raise RuntimeError("network failed")

    with pytest.raises(RuntimeError, match="network failed"):
        write_rows(target, rows(), 600, 40)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file

    target.write_bytes(b"previous result")
    with pytest.raises(ValueError, match=rf"out\{suffix}: received 300 rows, expected 600"):
        write_rows(target, iter([block]), 600, 40)
    assert target.read_bytes() == b"previous result"  # an existing file is left as it was
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_bad_blocks_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"x.png: row blocks must be uint16 arrays of shape \(h, 5, 3\)"):
        write_rows(tmp_path / "x.png", iter([np.zeros((2, 5, 3), dtype=np.float32)]), 2, 5)
    with pytest.raises(ValueError, match="unknown image format '.bmp'"):
        write_rows(tmp_path / "x.bmp", iter([]), 2, 5)
    assert list(tmp_path.iterdir()) == []


def test_preview_is_the_box_mean_of_the_streamed_rows(tmp_path):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 65536, size=(103, 70, 3), dtype=np.uint16)
    preview = Preview(103, 70, 3, max_side=20)
    assert preview.factor == 6
    for y in range(0, 103, 17):
        preview.add(img[y : y + 17])
    expected = np.empty((18, 12, 3))
    for i in range(18):
        for j in range(12):
            expected[i, j] = img[6 * i : 6 * i + 6, 6 * j : 6 * j + 6].reshape(-1, 3).mean(axis=0)
    got = preview.image()
    assert got.shape == (18, 12, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.round(expected / 65535 * 255).astype(np.uint8))
    from PIL import Image

    with Image.open(write_preview(tmp_path / "p.jpg", got)) as jpeg:
        assert jpeg.size == (12, 18) and jpeg.mode == "RGB"


def test_prefetch_keeps_order_and_reraises():
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise KeyError("producer broke")

    stream = prefetch(failing())
    assert next(stream) == 1
    with pytest.raises(KeyError, match="producer broke"):
        next(stream)

    produced = []

    def endless():
        for i in range(10**6):
            produced.append(i)
            yield i

    stream = prefetch(endless(), depth=2)
    assert next(stream) == 0
    stream.close()  # the consumer stops: the producer thread must stop too
    assert not any(t.name == "rawsr-predict-producer" for t in threading.enumerate())
    count = len(produced)
    time.sleep(0.1)
    assert len(produced) == count <= 4


# ------------------------------------------------------------------------------------------------ inputs


def test_find_inputs_takes_raw_suffixes_in_any_case(tmp_path):
    for name in ("b.DNG", "a.nef", "c.Cr3", "notes.txt", "d.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.dng").mkdir()
    assert [p.name for p in find_inputs(tmp_path)] == ["a.nef", "b.DNG", "c.Cr3"]
    assert find_inputs(tmp_path / "notes.txt") == [tmp_path / "notes.txt"]  # a file named explicitly is tried
    from rawsr.config import ConfigError

    with pytest.raises(ConfigError, match="'input': .* neither a raw file nor a folder"):
        find_inputs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="'input': the folder .*empty holds no camera raw file"):
        find_inputs(tmp_path / "empty")


def test_reference_is_the_same_rendered_in_bands():
    rng = np.random.default_rng(4)
    mosaic = rng.random((70, 36), dtype=np.float32)
    wb, ccm = np.array([2.0, 1.0, 1.6]), np.array([[1.6, -0.4, -0.2], [-0.2, 1.5, -0.3], [0.0, -0.5, 1.5]])
    whole = render_reference(mosaic, wb, ccm, band_pixels=70 * 36)
    np.testing.assert_array_equal(render_reference(mosaic, wb, ccm, band_pixels=8 * 36), whole)
    np.testing.assert_array_equal(render_reference(mosaic, wb, ccm, band_pixels=1), whole)  # 2 rows a band
    assert whole.dtype == np.uint8 and whole.shape == (70, 36, 3)


# ------------------------------------------------------------------------------------------------ predict


class UpsampleReference(torch.nn.Module):
    """Stands in for the network: nearest upsampling of the reference; checks that raw tiles are RGGB."""

    def __init__(self, scale: int, site_values: tuple[float, float, float, float] | None = None) -> None:
        super().__init__()
        self.scale, self.site_values = scale, site_values

    def forward(self, raw, ref, wb=None, ccm=None):
        assert wb.shape == (raw.shape[0], 3) and ccm.shape == (raw.shape[0], 3, 3)
        if self.site_values is not None:
            for (dy, dx), value in zip(((0, 0), (0, 1), (1, 0), (1, 1)), self.site_values, strict=True):
                torch.testing.assert_close(raw[:, :, dy::2, dx::2], torch.full_like(raw[:, :, dy::2, dx::2], value))
        return {"srgb": F.interpolate(ref, scale_factor=self.scale, mode="nearest")}


class StubModule:
    def __init__(self, net: torch.nn.Module, scale: int, tile: int) -> None:
        self.net, self.scale, self.tile = net, scale, tile


def test_colour_pipeline_and_bayer_alignment_for_all_patterns(tmp_path, monkeypatch):
    """A flat colour through all four sensor layouts: the network sees R, G, G, B at the RGGB sites, the
    reference is the camera rendering computed here in NumPy, and the output is that reference upsampled."""
    from rawsr.camera import read_raw

    black, white = 64, 4095
    levels = np.array([0.2, 0.45, 0.3])  # linear camera R, G, B
    codes = np.round(black + levels * (white - black))
    quantised = (codes - black) / (white - black)
    stub = StubModule(UpsampleReference(2, tuple(quantised[[0, 1, 1, 2]])), scale=2, tile=16)
    monkeypatch.setattr("rawsr.training.load_checkpoint", lambda path, map_location="cpu": stub)
    (tmp_path / "model.ckpt").write_bytes(b"stub")
    flat = np.broadcast_to(levels, (42, 37, 3))
    for cfa in SENSOR_RED_SITE:
        write_bayer_dng(tmp_path / f"{cfa}.dng", flat, cfa, wb=(2.0, 1.0, 1.5))
    cfg = compose(
        f"ckpt_path={tmp_path / 'model.ckpt'}", f"input={tmp_path}", f"output_dir={tmp_path / 'out'}",
        "save_reference=true",
    )  # fmt: skip
    assert run(cfg) == 0
    outputs = []
    for cfa, (dy, dx) in SENSOR_RED_SITE.items():
        image = read_raw(tmp_path / f"{cfa}.dng")
        expected = np.round(255 * srgb_oetf(image.ccm.astype(np.float64) @ (image.wb * quantised)))
        h, w = (42 - dy) // 2 * 2, (37 - dx) // 2 * 2
        ref = read_png(tmp_path / "out" / f"{cfa}_x2_reference.png")
        assert ref.shape == (h, w, 3) and ref.dtype == np.uint8
        assert np.abs(ref.astype(float) - expected).max() <= 1
        out = read_png(tmp_path / "out" / f"{cfa}_x2.png")
        assert out.shape == (2 * h, 2 * w, 3) and out.dtype == np.uint16
        np.testing.assert_array_equal(out, np.repeat(np.repeat(ref.astype(np.uint16) * 257, 2, 0), 2, 1))
        outputs.append(out[0, 0])
    assert all(np.array_equal(o, outputs[0]) for o in outputs)  # the same colour whatever the layout


class EdgeDarkening(torch.nn.Module):
    """Stands in for the network at an image's border: the reference through the network's own layers, a
    zero-padded 3x3 convolution (a mean) and a 4x4 stride-2 transposed convolution (pixel repetition inside), both
    of which darken the outermost pixels as they do in the network; a flat reference comes out flat inside."""

    def __init__(self) -> None:
        from rawsr.model.blocks import conv, deconv

        super().__init__()
        self.mean, self.up = conv(3, 3), deconv(3, 3, stride=2)
        with torch.no_grad():
            for layer, value in ((self.mean[0], 1 / 9), (self.up[0], 1 / 4)):
                layer.weight.zero_()
                layer.bias.zero_()
                for c in range(3):
                    layer.weight[c, c] = value

    def forward(self, raw, ref, wb=None, ccm=None):
        return {"srgb": self.up(self.mean(ref))}


def border_contrast(image: np.ndarray) -> float:
    """Largest |mean of an outermost row or column - mean of the inside| of ``image (H, W, 3)`` in [0, 1]."""
    inside = image[8:-8, 8:-8].mean()
    return max(abs(edge.mean() - inside) for edge in (image[0], image[-1], image[:, 0], image[:, -1]))


@pytest.mark.parametrize("overrides", [(), ("tta=true",)])
def test_predictions_have_no_dark_border(tmp_path, monkeypatch, overrides):
    """A flat photograph through layers that darken their input's border: the default ``border_pad`` mirrors the
    border into the tile, and the outermost rows and columns are as bright as the inside; without it they are
    not."""
    stub = StubModule(EdgeDarkening(), scale=2, tile=64)
    monkeypatch.setattr("rawsr.training.load_checkpoint", lambda path, map_location="cpu": stub)
    (tmp_path / "model.ckpt").write_bytes(b"stub")
    write_bayer_dng(tmp_path / "flat.dng", np.broadcast_to([0.2, 0.45, 0.3], (28, 30, 3)), "RGGB", wb=(2.0, 1.0, 1.5))
    outputs = {}
    for name, pad in (("default", ()), ("none", ("border_pad=0",))):
        paths = (
            f"ckpt_path={tmp_path / 'model.ckpt'}",
            f"input={tmp_path / 'flat.dng'}",
            f"output_dir={tmp_path / name}",
        )
        assert run(compose(*paths, *overrides, *pad)) == 0
        outputs[name] = read_png(tmp_path / name / "flat_x2.png").astype(np.float64) / 65535
    assert outputs["default"].shape == (56, 60, 3)
    assert border_contrast(outputs["none"]) > 0.05  # the layers do darken a border left at the tile's border
    assert border_contrast(outputs["default"]) < 1e-4
    flat = np.broadcast_to(outputs["default"][8:-8, 8:-8].mean((0, 1)), outputs["default"].shape)
    np.testing.assert_allclose(outputs["default"], flat, atol=1e-4, rtol=0)  # every pixel, each colour


@pytest.mark.parametrize(
    ("overrides", "overlap"), [((), 2), (("overlap=auto",), 2), (("overlap=null",), 16), (("overlap=6",), 6)]
)
def test_predict_overlaps_tiles_by_a_sixteenth_of_the_tile_by_default(tmp_path, monkeypatch, overrides, overlap):
    """``overlap=auto`` (the default) is 2 * (tile // 32), ``null`` the paper's half tile; the tiles run with it."""
    import rawsr.inference

    seen = []

    def spy(*args, **kwargs):
        seen.append(args[5])  # fn, raw, ref, tile, scale, overlap
        return tiled_rows(*args, **kwargs)

    monkeypatch.setattr(rawsr.inference, "tiled_rows", spy)
    ckpt = save_checkpoint(tmp_path / "model.ckpt", tile=32)
    write_bayer_dng(tmp_path / "photo.dng", linear_scene(40, 52), "RGGB")
    paths = (f"ckpt_path={ckpt}", f"input={tmp_path / 'photo.dng'}", f"output_dir={tmp_path / 'out'}")
    assert run(compose(*paths, "preview=false", *overrides)) == 0
    assert seen == [overlap]


def test_feathered_overlap_is_an_even_sixteenth_of_the_tile():
    for tile in range(4, 520, 4):
        overlap = feathered_overlap(tile)
        assert overlap % 2 == 0 and (tile - overlap) % 2 == 0
        assert tile / 16 - 2 < overlap <= tile / 16
    assert (feathered_overlap(64), feathered_overlap(256)) == (4, 16)


@pytest.mark.parametrize("scale", [2, 4])
def test_predict_all_bayer_patterns(tmp_path, scale):
    ckpt = save_checkpoint(tmp_path / "model.ckpt", scale=scale, tile=16)
    scene = linear_scene(46, 61)
    for cfa in SENSOR_RED_SITE:
        write_bayer_dng(tmp_path / f"{cfa.lower()}.dng", scene, cfa, wb=(2.1, 1.0, 1.7))
    out_dir = tmp_path / "out"
    cfg = compose(f"ckpt_path={ckpt}", f"input={tmp_path}", f"output_dir={out_dir}", "preview_max_side=64")
    assert run(cfg) == 0
    from PIL import Image

    for cfa, (dy, dx) in SENSOR_RED_SITE.items():
        out = read_png(out_dir / f"{cfa.lower()}_x{scale}.png")
        h, w = (46 - dy) // 2 * 2, (61 - dx) // 2 * 2  # aligned to RGGB, then trimmed to even
        assert out.shape == (scale * h, scale * w, 3) and out.dtype == np.uint16
        assert out.std() > 100  # an image, not a constant
        with Image.open(out_dir / f"{cfa.lower()}_x{scale}_preview.jpg") as preview:
            assert max(preview.size) <= 64
    assert sorted(p.suffix for p in out_dir.iterdir()) == [".jpg"] * 4 + [".png"] * 4


def test_folder_with_a_bad_file_writes_the_good_one_and_fails(tmp_path, capsys, caplog):
    import tifffile

    ckpt = save_checkpoint(tmp_path / "model.ckpt", tile=16)
    photos = tmp_path / "photos"
    photos.mkdir()
    write_bayer_dng(photos / "good.dng", linear_scene(40, 40), "RGGB")
    (photos / "bad.dng").write_text("this is a text file, not a raw file\n")
    (photos / "readme.txt").write_text("ignored")
    cfg = compose(f"ckpt_path={ckpt}", f"input={photos}", f"output_dir={tmp_path / 'out'}", "format=tiff")
    with caplog.at_level(logging.INFO, logger="rawsr.predict"):
        assert run(cfg) == 1
    out = tifffile.imread(tmp_path / "out" / "good_x2.tif")
    assert out.shape == (80, 80, 3) and out.dtype == np.uint16
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_x2.tif", "good_x2_preview.jpg"]
    everything = capsys.readouterr().out + caplog.text
    assert everything.count(f"skipped {photos / 'bad.dng'}: ") == 1  # as it happens, not again in the summary
    assert "rawsr.predict: 1 done, 1 skipped" in caplog.text


def test_nan_output_is_reported_not_written(tmp_path, monkeypatch, capsys):
    class NaNNet(UpsampleReference):
        def forward(self, raw, ref, wb=None, ccm=None):
            return {"srgb": super().forward(raw, ref, wb, ccm)["srgb"] * float("nan")}

    monkeypatch.setattr("rawsr.training.load_checkpoint", lambda path, map_location="cpu": StubModule(NaNNet(2), 2, 16))
    (tmp_path / "model.ckpt").write_bytes(b"stub")
    write_bayer_dng(tmp_path / "a.dng", linear_scene(32, 32), "RGGB")
    cfg = compose(f"ckpt_path={tmp_path / 'model.ckpt'}", f"input={tmp_path / 'a.dng'}", f"output_dir={tmp_path / 'o'}")
    assert run(cfg) == 1
    assert "NaN" in capsys.readouterr().out
    assert list((tmp_path / "o").iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ((), "config key 'ckpt_path' is not set"),
        (("ckpt_path={ckpt}",), "config key 'input' is not set"),
        (("ckpt_path={ckpt}", "input={dng}", "format=jpeg"), "config key 'format'"),
        (("ckpt_path={ckpt}", "input={dng}", "tile_batch=0"), "config key 'tile_batch'"),
        (("ckpt_path={ckpt}", "input={dng}", "precision=16"), "config key 'precision'"),
        (("ckpt_path={ckpt}", "input={dng}", "adjust_maximum=1.2"), "config key 'adjust_maximum'"),
        (("ckpt_path={ckpt}", "input={dng}", "blend=max"), r"config key 'blend': expected one of \['linear', 'mean'\]"),
        (("ckpt_path={ckpt}", "input={dng}", "border_pad=3"), "config key 'border_pad': expected an even integer >= 0"),
        (("ckpt_path={ckpt}", "input={dng}", "tta=maybe"), "config key 'tta': expected true or false"),
        (("ckpt_path={ckpt}", "input={dng}", "device=gpu"), "config key 'device': expected auto, cpu, cuda or cuda:N"),
        (("ckpt_path={missing}", "input={dng}"), "config key 'ckpt_path': no checkpoint file"),
        (("ckpt_path={dng}", "input={dng}"), r"config key .ckpt_path.: .* is not a rawsr checkpoint \(not a file"),
        (("ckpt_path={ckpt}", "input={missing}"), "config key 'input'"),
        (("ckpt_path={good}", "input={dng}", "overlap=5"), "config key 'overlap': .* tile 16 .* got 5"),
        (("ckpt_path={good}", "input={dng}", "overlap=16"), "config key 'overlap'"),
        (("ckpt_path={good}", "input={dng}", "overlap=some"), "config key 'overlap': expected auto, null or an int"),
        (("ckpt_path={good}", "input={dng}", "retain_memory=1"), "config key 'retain_memory': expected true or false"),
    ],
)
def test_bad_config_exits_2_naming_the_key(tmp_path, caplog, overrides, message):
    paths = {"ckpt": tmp_path / "m.ckpt", "dng": tmp_path / "a.dng", "missing": tmp_path / "nothing"}
    paths["good"] = save_checkpoint(tmp_path / "good.ckpt", tile=16)
    paths["ckpt"].write_bytes(b"")
    paths["dng"].write_bytes(b"")
    cfg = compose(f"output_dir={tmp_path / 'out'}", *(o.format(**paths) for o in overrides))
    with caplog.at_level(logging.ERROR, logger="rawsr.predict"):
        assert run(cfg) == 2
    assert any(re.search(message, r.getMessage()) for r in caplog.records), caplog.text


# ------------------------------------------------------------------------------------------------ real files


def real_samples(folder: str) -> Path:
    path = RAW_SAMPLES / folder
    if not path.is_dir():
        pytest.skip(f"real raw samples not found at {path} (they live beside the project, not in it)")
    return path


@pytest.mark.slow
def test_canon_raw_files_are_super_resolved(tmp_path):
    folder = real_samples("bayer")
    # A very narrow net on LR tiles of 128 without overlap keeps the 2 x 3 MP run short.
    ckpt = save_checkpoint(tmp_path / "model.ckpt", tile=128, width=4, growth=4, dense_layers=1)
    out_dir = tmp_path / "out"
    overrides = ("overlap=0", "compress_level=1", "save_reference=true")
    cfg = compose(f"ckpt_path={ckpt}", f"input={folder}", f"output_dir={out_dir}", *overrides)
    assert run(cfg) == 0
    for raw in sorted(folder.iterdir()):
        out = read_png(out_dir / f"{raw.stem}_x2.png")  # a Bayer 1448x2176 visible area, RGGB
        assert out.shape == (2 * 1448, 2 * 2176, 3) and out.dtype == np.uint16
        reference = read_png(out_dir / f"{raw.stem}_x2_reference.png")
        assert reference.shape == (1448, 2176, 3) and reference.std() > 10  # the camera rendering of a photo
        assert (out_dir / f"{raw.stem}_x2_preview.jpg").is_file()


def test_non_bayer_and_unsupported_files_are_skipped(tmp_path, capsys):
    files = [next(real_samples(f).iterdir()) for f in ("not-bayer", "unsupported")]
    ckpt = save_checkpoint(tmp_path / "model.ckpt", tile=16)
    for path in files:
        cfg = compose(f"ckpt_path={ckpt}", f"input={path}", f"output_dir={tmp_path / 'out'}")
        assert run(cfg) == 1
        assert f"skipped {path}: " in capsys.readouterr().out
    assert list((tmp_path / "out").iterdir()) == []


# ------------------------------------------------------------------------------------------------ front door


def _python_env() -> dict[str, str]:
    import rawsr

    src = str(Path(rawsr.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_python_m_rawsr_predict(tmp_path):
    ckpt = save_checkpoint(tmp_path / "model.ckpt", tile=16)
    write_bayer_dng(tmp_path / "shot.dng", linear_scene(36, 52), "BGGR")
    before = set(tmp_path.iterdir())
    command = [sys.executable, "-m", "rawsr.predict", f"ckpt_path={ckpt}", "input=shot.dng", "output_dir=out"]
    done = subprocess.run(command, cwd=tmp_path, env=_python_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wrote out/shot_x2.png" in done.stdout
    assert set(tmp_path.iterdir()) == before | {tmp_path / "out"}  # no .hydra, logs or outputs/ littered around
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shot_x2.png", "shot_x2_preview.jpg"]
    assert read_png(tmp_path / "out" / "shot_x2.png").shape == (2 * 34, 2 * 50, 3)  # BGGR: one row, one column off

    bad = subprocess.run(command[:3], cwd=tmp_path, env=_python_env(), capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert "config key 'ckpt_path' is not set" in bad.stdout + bad.stderr
