"""rawsr.camera: DNG round trips in every Bayer layout and bit depth, real camera files, and every refusal."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import rawpy
import tifffile

from rawsr.camera import RawReadError, read_raw, write_dng
from rawsr.camera.raw import quiet_stderr

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "raw-samples"
CANON = ("canon_eos_d30_imagemeta.crw", "canon_eos_d30_rawsamples_boostgil.crw")
PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
# sRGB -> XYZ (D65), written out here independently of the package.
M_SRGB = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)


def sample(name: str) -> Path:
    path = SAMPLES / name
    if not path.is_file():
        pytest.skip(f"real raw sample {path} not found (the samples live beside the project in ../shared)")
    return path


def random_ccm(rng: np.random.Generator) -> np.ndarray:
    """A plausible camera-to-sRGB matrix: identity plus off-diagonal mixing, rows summing to 1."""
    m = np.eye(3) + rng.uniform(-0.4, 0.2, (3, 3)) * (1 - np.eye(3))
    m[np.diag_indices(3)] += 1 - m.sum(axis=1)
    return m


def expected_mosaic(raw: np.ndarray, cfa: str, black_cell: np.ndarray, white: float) -> np.ndarray:
    """Normalise with a per-pixel black map, then shift so that the first row/column hold R and trim to even."""
    h, w = raw.shape
    black = np.tile(black_cell, (h // 2 + 1, w // 2 + 1))[:h, :w]
    norm = np.clip((raw.astype(np.float64) - black) / (white - black), 0, 1)
    letters = np.tile(np.array(list(cfa)).reshape(2, 2), (h // 2 + 1, w // 2 + 1))[:h, :w]
    dy, dx = next((y, x) for y in range(2) for x in range(2) if letters[y, x] == "R")
    out, letters = norm[dy:, dx:], letters[dy:, dx:]
    out, letters = out[: out.shape[0] // 2 * 2, : out.shape[1] // 2 * 2], letters[: out.shape[0] // 2 * 2]
    assert (letters[0::2, 0::2] == "R").all() and (letters[1::2, 1::2] == "B").all()
    return out


@pytest.mark.parametrize("bits", [10, 12, 14, 16])
@pytest.mark.parametrize("cfa", PATTERNS)
def test_dng_round_trip(tmp_path, cfa, bits):
    rng = np.random.default_rng(bits * 10 + PATTERNS.index(cfa))
    white = 2**bits - 1
    per_site = bits % 4 == 0  # 12 and 16 bits: four different levels; 10 and 14: one level
    black = rng.integers(16, white // 8, 4 if per_site else 1)
    h, w = 37 + bits % 3, 41 + bits % 2  # odd and even sizes
    raw = rng.integers(0, white + 1, (h, w)).astype(np.uint16)
    wb, ccm = rng.uniform([1.5, 1.0, 1.2], [2.6, 1.0, 2.2]), random_ccm(rng)
    path = write_dng(tmp_path / "x.dng", raw, cfa=cfa, black_level=black.tolist(), bits=bits, wb=wb, ccm=ccm)

    image = read_raw(path, adjust_maximum=0)  # normalised by the declared white level exactly

    black_cell = (black if per_site else np.repeat(black, 4)).reshape(2, 2)
    expected = expected_mosaic(raw, cfa, black_cell, white)
    assert image.mosaic.dtype == np.float32 and image.mosaic.shape == expected.shape
    assert image.mosaic.shape[0] % 2 == 0 and image.mosaic.shape[1] % 2 == 0
    np.testing.assert_allclose(image.mosaic, expected, atol=1e-6, rtol=0)
    assert image.cfa == cfa and image.white_level == white
    # LibRaw's channel order is (R, G, B, G2); the written cell is read row by row.
    letters = list(cfa)
    by_channel = {"R": black_cell.ravel()[letters.index("R")], "B": black_cell.ravel()[letters.index("B")]}
    assert image.black_level[0] == by_channel["R"] and image.black_level[2] == by_channel["B"]
    assert sorted(image.black_level) == sorted(black_cell.ravel().tolist())
    np.testing.assert_allclose(image.wb, wb / wb[1], rtol=1e-5)
    assert image.wb_source == "camera"
    np.testing.assert_allclose(image.ccm.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(image.ccm, ccm, atol=1e-4)
    assert image.ccm_source == "color_matrix" and image.camera == "rawsr synthetic"


@pytest.mark.parametrize("peak", [0.5, 0.9])
def test_white_level_adjusted_to_the_saturation_of_the_data(tmp_path, peak):
    """LibRaw's adjust_maximum: a brightest value above the threshold becomes white; below it, nothing changes."""
    rng = np.random.default_rng(4)
    black, white = 64, 4095
    raw = rng.integers(black, black + round(peak * (white - black)) + 1, (30, 40)).astype(np.uint16)
    raw[3, 4] = black + round(peak * (white - black))  # the brightest value, on a red site
    path = write_dng(tmp_path / "p.dng", raw, cfa="RGGB", black_level=black, bits=12)
    declared = expected_mosaic(raw, "RGGB", np.full((2, 2), black), white)
    image = read_raw(path)
    if peak > 0.75:
        assert image.saturation == pytest.approx(declared.max(), abs=1e-6)
        np.testing.assert_allclose(image.mosaic, declared / declared.max(), atol=1e-6, rtol=0)
        assert image.mosaic.max() == 1.0
    else:
        assert image.saturation == 1.0
        np.testing.assert_allclose(image.mosaic, declared, atol=1e-6, rtol=0)
    kept = read_raw(path, adjust_maximum=0.0)
    assert kept.saturation == 1.0 and kept.white_level == white
    np.testing.assert_allclose(kept.mosaic, declared, atol=1e-6, rtol=0)
    for bad in (-0.1, 1.0, "high", True):
        with pytest.raises(ValueError, match="adjust_maximum"):
            read_raw(path, adjust_maximum=bad)


def test_odd_active_area_shifts_the_pattern(tmp_path):
    """DNG's CFAPattern starts at the ActiveArea's origin; an odd origin moves the pattern seen in the file."""
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 4096, (40, 50)).astype(np.uint16)
    path = write_dng(tmp_path / "a.dng", raw, cfa="RGGB", black_level=100, bits=12, active_area=(1, 2, 39, 50))
    with rawpy.imread(str(path)) as r:  # LibRaw's visible area (it may move an odd margin)
        s = r.sizes
    letters = np.array([["R", "G"], ["G", "B"]])
    at_origin = "".join(
        letters[(s.top_margin + y - 1) % 2, (s.left_margin + x - 2) % 2] for y in (0, 1) for x in (0, 1)
    )
    image = read_raw(path, adjust_maximum=0)
    assert image.cfa == at_origin != "RGGB"
    visible = raw[s.top_margin : s.top_margin + s.height, s.left_margin : s.left_margin + s.width]
    expected = expected_mosaic(visible, at_origin, np.full((2, 2), 100), 4095)
    np.testing.assert_allclose(image.mosaic, expected, atol=1e-6, rtol=0)


def fitted_libraw_matrix(path: Path) -> np.ndarray:
    """LibRaw's own camera-to-sRGB matrix, fitted from its raw-colour and sRGB renderings of the same file."""
    kw = dict(gamma=(1, 1), no_auto_bright=True, user_wb=[1, 1, 1, 1], output_bps=16, half_size=True, user_flip=0)
    with rawpy.imread(str(path)) as raw:
        cam = raw.postprocess(output_color=rawpy.ColorSpace.raw, **kw).reshape(-1, 3).astype(np.float64)
    with rawpy.imread(str(path)) as raw:
        srgb = raw.postprocess(output_color=rawpy.ColorSpace.sRGB, **kw).reshape(-1, 3).astype(np.float64)
    ok = np.all((cam > 500) & (cam < 60000) & (srgb > 500) & (srgb < 60000), axis=1)
    assert ok.sum() > 1000
    return np.linalg.lstsq(cam[ok], srgb[ok], rcond=None)[0].T


@pytest.mark.parametrize("name", CANON)
def test_canon_crw(name):
    path = sample(f"bayer/{name}")
    image = read_raw(path)
    assert image.cfa == "RGGB" and image.mosaic.shape == (1448, 2176)
    assert image.white_level == 4095 and all(125 <= b <= 129 for b in image.black_level)
    assert image.wb_source == "daylight" and image.ccm_source == "rgb_xyz_matrix"
    with rawpy.imread(str(path)) as raw:  # the per-pixel route: black level through raw_colors_visible
        visible = raw.raw_image_visible.astype(np.float64)
        black = np.asarray(raw.black_level_per_channel, dtype=np.float64)[raw.raw_colors_visible]
        daylight = np.asarray(raw.daylight_whitebalance[:3])
        assert raw.camera_whitebalance[0] == -1
    expected = np.clip((visible - black) / (4095 - black), 0, 1)
    # This sensor saturates below the declared 4095: LibRaw's rule rescales by the brightest value.
    assert 0.9 < expected.max() < 1.0 and image.saturation == pytest.approx(expected.max(), abs=1e-6)
    np.testing.assert_allclose(image.mosaic, expected / expected.max(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(read_raw(path, adjust_maximum=0).mosaic, expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(image.wb, daylight / daylight[1], rtol=1e-6)
    np.testing.assert_allclose(image.ccm.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(image.ccm, fitted_libraw_matrix(path), atol=2e-3)


def test_dng_matrix_agrees_with_libraw_rendering(tmp_path):
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:96, 0:128]
    raw = (1000 + 800 * np.sin(xx / 9.0) * np.cos(yy / 7.0) + rng.integers(0, 200, (96, 128))).astype(np.uint16)
    ccm = random_ccm(rng)
    path = write_dng(tmp_path / "m.dng", raw, cfa="GRBG", black_level=64, bits=12, wb=(2.0, 1.0, 1.6), ccm=ccm)
    np.testing.assert_allclose(read_raw(path).ccm, fitted_libraw_matrix(path), atol=2e-3)


def write_bare_cfa_tiff(path: Path, raw: np.ndarray, cfa_tags: bool = True) -> Path:
    """A DNG with a CFA but no colour metadata at all (no AsShotNeutral, no ColorMatrix1)."""
    tags = [(50706, "B", 4, (1, 4, 0, 0), True), (50708, "s", 0, "bare", True), (50717, "I", 1, (4095,), True)]
    if cfa_tags:
        tags += [(33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True)]
    tifffile.imwrite(path, raw, photometric=32803, extratags=sorted(tags))
    return path


def test_no_colour_metadata_falls_back_to_grey_world_and_identity(tmp_path):
    rng = np.random.default_rng(11)
    raw = np.zeros((64, 64), np.uint16)
    for (y, x), level in zip([(0, 0), (0, 1), (1, 0), (1, 1)], [1000, 2000, 2200, 500], strict=True):
        raw[y::2, x::2] = level + rng.integers(0, 100, (32, 32))
    raw[:2, :2] = 4095  # saturated samples are left out of the estimate
    image = read_raw(write_bare_cfa_tiff(tmp_path / "bare.dng", raw))
    m = raw.astype(np.float64) / 4095
    unsat = m < 1
    mean = {c: m[y::2, x::2][unsat[y::2, x::2]].mean() for c, (y, x) in {"R": (0, 0), "B": (1, 1)}.items()}
    g = np.concatenate([m[0::2, 1::2][unsat[0::2, 1::2]], m[1::2, 0::2][unsat[1::2, 0::2]]]).mean()
    assert image.wb_source == "grey_world" and image.ccm_source == "identity"
    np.testing.assert_allclose(image.wb, [g / mean["R"], 1.0, g / mean["B"]], rtol=1e-5)
    np.testing.assert_array_equal(image.ccm, np.eye(3))


def refused(path: Path, match: str) -> None:
    with pytest.raises(RawReadError, match=match) as info:
        read_raw(path)
    assert str(info.value).startswith(f"{path}: ") and info.value.path == Path(path)


def test_kodak_yrgb_is_refused():
    refused(sample("not-bayer/kodak_c330_yrgb_kimageformats.raw"), "no colour filter array")


def test_gopro_gpr_is_refused():
    refused(sample("unsupported/gopro_hero6_GOPR0024.gpr"), "LibRaw cannot decode")


def test_non_raw_inputs_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    grey = tmp_path / "grey16.tif"
    tifffile.imwrite(grey, rng.integers(0, 65535, (64, 64)).astype(np.uint16))
    with rawpy.imread(str(grey)) as raw:  # the trap: LibRaw takes it for a Bayer raw
        assert raw.raw_pattern is not None
    refused(grey, "plain TIFF image")
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "a.png", rng.integers(0, 255, (32, 32, 3)).astype(np.uint8))
    refused(tmp_path / "a.png", "LibRaw cannot decode")
    (tmp_path / "empty.dng").write_bytes(b"")
    refused(tmp_path / "empty.dng", "LibRaw cannot decode")
    (tmp_path / "notes.txt").write_text("not a raw file\n" * 50)
    refused(tmp_path / "notes.txt", "LibRaw cannot decode")
    refused(tmp_path, "is a directory")
    refused(tmp_path / "missing.nef", "no such file")


def test_linear_and_monochrome_dngs_are_refused(tmp_path):
    rng = np.random.default_rng(1)
    tags = [(50706, "B", 4, (1, 4, 0, 0), True), (50708, "s", 0, "lin", True), (50717, "I", 1, (65535,), True)]
    linear = tmp_path / "linear.dng"
    tifffile.imwrite(linear, rng.integers(0, 65535, (64, 64, 3)).astype(np.uint16), photometric=34892, extratags=tags)
    refused(linear, "no colour filter array")
    mono = write_bare_cfa_tiff(tmp_path / "mono.dng", rng.integers(0, 4095, (64, 64)).astype(np.uint16), False)
    refused(mono, "monochrome")


def test_xtrans_dng_is_refused(tmp_path):
    rows = ("GGRGGB", "GGBGGR", "BRGRBG", "GGBGGR", "GGRGGB", "RBGBRG")  # Fujifilm's 6x6 layout
    codes = tuple("RGB".index(c) for row in rows for c in row)
    tags = [(50706, "B", 4, (1, 4, 0, 0), True), (50708, "s", 0, "xt", True), (50717, "I", 1, (4095,), True)]
    tags += [(33421, "H", 2, (6, 6), True), (33422, "B", 36, codes, True)]
    path = tmp_path / "xtrans.dng"
    raw = np.random.default_rng(0).integers(0, 4095, (60, 60)).astype(np.uint16)
    tifffile.imwrite(path, raw, photometric=32803, extratags=sorted(tags))
    refused(path, "X-Trans colour filter array")


def test_error_survives_pickling():
    error = pickle.loads(pickle.dumps(RawReadError("/x/y.nef", "truncated")))
    assert isinstance(error, RawReadError) and str(error) == "/x/y.nef: truncated" and error.reason == "truncated"


def test_quiet_stderr_silences_fd2_and_restores_it(capfd):
    with quiet_stderr():
        os.write(2, b"libraw chatter\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_write_dng_refuses_bad_input(tmp_path):
    good = np.zeros((32, 32), np.uint16)
    with pytest.raises(ValueError, match="uint16"):
        write_dng(tmp_path / "a.dng", good.astype(np.float32))
    with pytest.raises(ValueError, match="cfa"):
        write_dng(tmp_path / "a.dng", good, cfa="RGBG")
    with pytest.raises(ValueError, match="exceeds 10 bits"):
        write_dng(tmp_path / "a.dng", good + 1024, bits=10)
    with pytest.raises(ValueError, match="black_level"):
        write_dng(tmp_path / "a.dng", good, black_level=70000)
    with pytest.raises(ValueError, match="ccm"):
        write_dng(tmp_path / "a.dng", good, ccm=np.zeros((3, 3)))
