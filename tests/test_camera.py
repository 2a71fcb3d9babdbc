"""rawsr.camera: DNG round trips in every Bayer layout and bit depth, real camera files, every refusal, and the
camera metadata against independent reads of the files."""

from __future__ import annotations

import contextlib
import os
import pickle
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import rawpy
import tifffile

from rawsr.camera import RawReadError, read_raw, write_dng
from rawsr.camera.metadata import FLIP_TO_ORIENTATION, CameraMetadata
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


# --- RawImage.metadata against independent reads of the files --------------------------------------------------

DNG_550D = "bayer-extra/canon_eos_550d_colorchart.dng"
# LibRaw sets flip = "50132467"[Orientation & 7] from a TIFF/EXIF Orientation (its documented meaning of flip:
# 0 upright, 3 rotated 180 degrees, 5 rotated 90 degrees counter-clockwise, 6 rotated 90 degrees clockwise).
LIBRAW_FLIP_OF_ORIENTATION = {o: int("50132467"[o & 7]) for o in range(1, 9)}
# TIFF/EXIF Orientation: how the stored image is turned into the displayed one.
EXIF_DISPLAY = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: np.transpose,
    6: lambda a: np.rot90(a, -1),  # 90 degrees clockwise
    7: lambda a: np.rot90(a, 2).T,  # transverse
    8: lambda a: np.rot90(a, 1),  # 90 degrees counter-clockwise
}


def raw_sample(root: Path, name: str) -> Path:
    path = root / name
    if not path.is_file():
        pytest.skip(f"real raw sample {path} not found")
    return path


def as_float(value) -> float | None:
    """A tag value read by tifffile as a float: a RATIONAL ``(num, den)`` divided (None for a zero denominator),
    the first entry of an integer array, or the number itself."""
    if isinstance(value, tuple) and len(value) == 2 and not isinstance(value[0], tuple):
        return value[0] / value[1] if value[1] else None
    if isinstance(value, tuple):
        value = value[0]
    return float(value)


def positive(value) -> float | None:
    number = as_float(value) if value is not None else None
    return number if number is not None and number > 0 else None


def rational_array(value, shape) -> np.ndarray | None:
    if value is None:
        return None
    pairs = np.asarray(value, dtype=np.float64).reshape(-1, 2)
    return (pairs[:, 0] / pairs[:, 1]).reshape(shape)


def expected_from_tiff(path: Path) -> dict:
    """The metadata fields as tifffile reads the file's IFD0 and EXIF IFD (EXIF IFD first, IFD0 TIFF/EP style)."""
    with tifffile.TiffFile(path) as tif:
        tags = {tag.code: tag.value for tag in tif.pages[0].tags.values()}
    exif = tags.get(34665, {})

    def capture(name, code):
        return exif.get(name, tags.get(code))

    stamp = capture("DateTimeOriginal", 36867)
    iso = capture("ISOSpeedRatings", 34855)  # SHORTs, possibly several: the first counts
    illuminants = [tags.get(code) for code in (50778, 50779)]
    baseline = tags.get(50730)
    return {
        "make": tags.get(271, ""),
        "model": tags.get(272, ""),
        "unique_model": tags.get(50708, ""),
        "exif_orientation": int(tags.get(274, 1)),
        "exposure_time": positive(capture("ExposureTime", 33434)),
        "f_number": positive(capture("FNumber", 33437)),
        "iso": positive(iso[0] if isinstance(iso, tuple) else iso),
        "focal_length": positive(capture("FocalLength", 37386)),
        "datetime": stamp.strip("\x00 ") or None if stamp is not None else None,
        "color_matrix1": rational_array(tags.get(50721), (3, 3)),
        "color_matrix2": rational_array(tags.get(50722), (3, 3)),
        "illuminant1": None if illuminants[0] is None else int(illuminants[0]),
        "illuminant2": None if illuminants[1] is None else int(illuminants[1]),
        "as_shot_neutral": rational_array(tags.get(50728), (3,)),
        "baseline_exposure": None if baseline is None else as_float(baseline),
    }


def assert_metadata(meta, expected: dict) -> None:
    for key, value in expected.items():
        got = getattr(meta, key)
        if isinstance(value, np.ndarray):
            assert got is not None, key
            np.testing.assert_allclose(got, value, rtol=0, atol=1e-9, err_msg=key)
        elif isinstance(value, float):
            assert got == pytest.approx(value, rel=1e-9), key
        else:
            assert got == value, key


def test_550d_dng_metadata_matches_its_tiff_tags(raw_samples):
    path = raw_sample(raw_samples, DNG_550D)
    expected = expected_from_tiff(path)
    meta = read_raw(path).metadata
    assert_metadata(meta, expected)
    with rawpy.imread(str(path)) as raw:
        assert meta.flip == raw.sizes.flip == 0
    # What this file holds (Magic Lantern writes zeros for the EXIF it does not know, and BaselineExposure 0/0).
    assert (meta.make, meta.model, meta.unique_model, meta.exif_orientation) == (
        "Canon",
        "Canon EOS Kiss X4",
        "Canon EOS Kiss X4",
        1,
    )
    assert meta.color_matrix1[0, 0] == pytest.approx(0.6461) and meta.color_matrix1[2, 2] == pytest.approx(0.6039)
    np.testing.assert_allclose(meta.as_shot_neutral, [1.0, 2.477, 1.462])
    assert [meta.exposure_time, meta.f_number, meta.iso, meta.focal_length, meta.datetime] == [None] * 5
    assert [meta.color_matrix2, meta.illuminant1, meta.illuminant2, meta.baseline_exposure] == [None] * 4


def patch_exif_ifd(path: Path, values: dict[int, object]) -> None:
    """Overwrite entries of a little-endian TIFF's EXIF IFD in place: RATIONALs as ``(num, den)``, an inline
    SHORT as an int, an ASCII as a string that fits the entry's count."""
    import struct

    with tifffile.TiffFile(path) as tif:
        entry = tif.pages[0].tags[34665].offset
    data = bytearray(path.read_bytes())
    assert data[:2] == b"II"
    ifd = struct.unpack_from("<HHII", data, entry)[3]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        at = ifd + 2 + 12 * i
        code, kind, count, value = struct.unpack_from("<HHII", data, at)
        if code not in values:
            continue
        new = values[code]
        if kind == 5:  # RATIONAL
            struct.pack_into("<II", data, value, *new)
        elif kind == 3:  # SHORT, inline
            struct.pack_into("<H", data, at + 8, new)
        elif kind == 2:  # ASCII
            text = new.encode("ascii") + b"\x00"
            assert len(text) <= count
            data[value : value + count] = text.ljust(count, b"\x00")
    path.write_bytes(bytes(data))


def test_exif_ifd_values_are_read(raw_samples, tmp_path):
    """The 550D file with real values put into its EXIF IFD: each read as tifffile reads it."""
    path = tmp_path / "550d.dng"
    path.write_bytes(raw_sample(raw_samples, DNG_550D).read_bytes())
    patch_exif_ifd(path, {33434: (1, 60), 33437: (56, 10), 34855: 800, 37386: (50, 1), 36867: "2010:05:06 07:08:09"})
    expected = expected_from_tiff(path)
    assert expected["exposure_time"] == pytest.approx(1 / 60) and expected["iso"] == 800
    meta = read_raw(path).metadata
    assert_metadata(meta, expected)
    assert (meta.exposure_time, meta.f_number, meta.iso, meta.focal_length) == pytest.approx((1 / 60, 5.6, 800, 50))
    assert meta.datetime == "2010:05:06 07:08:09"


def ciff_capture_time(path: Path) -> int:
    """Seconds of a CRW's CapturedTime record (0x180e), read by walking its CIFF heaps."""
    import struct

    data = path.read_bytes()
    assert data[:2] == b"II" and data[6:14] == b"HEAPCCDR"
    found = []

    def heap(start: int, end: int) -> None:
        table = start + struct.unpack_from("<I", data, end - 4)[0]
        for i in range(struct.unpack_from("<H", data, table)[0]):
            kind, size, offset = struct.unpack_from("<HII", data, table + 2 + 10 * i)
            if kind >> 14 == 0 and kind & 0x3800 in (0x2800, 0x3000):  # a sub-heap
                heap(start + offset, start + offset + size)
            elif kind & 0x3FFF == 0x180E and kind >> 14 == 0:
                found.append(struct.unpack_from("<I", data, start + offset)[0])

    heap(struct.unpack_from("<I", data, 2)[0], len(data))
    assert len(found) == 1
    return found[0]


@contextlib.contextmanager
def time_zone(name: str):
    """Run with the process's local time zone set to ``name``."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.mark.parametrize("name", CANON)
@pytest.mark.parametrize("zone", ["UTC0", "WEST+5", "EAST-9"])  # POSIX zones: no time zone database needed
def test_canon_crw_metadata_from_libraw(raw_samples, name, zone):
    """No TIFF tags in a CRW: names empty, the rest as rawpy reports it, the capture time as the camera wrote it."""
    path = raw_sample(raw_samples, f"bayer/{name}")
    with time_zone(zone):
        meta = read_raw(path).metadata
        with rawpy.imread(str(path)) as raw:
            flip, other = raw.sizes.flip, raw.other
            xyz2cam = np.asarray(raw.rgb_xyz_matrix, dtype=np.float64)[:3]
            camera_wb_set = raw.camera_whitebalance[0] > 0
    assert (meta.make, meta.model, meta.unique_model) == ("", "", "")
    assert meta.flip == flip and meta.exif_orientation == FLIP_TO_ORIENTATION[flip]
    for field, value in (
        ("exposure_time", other.shutter_speed),
        ("f_number", other.aperture),
        ("iso", other.iso_speed),
        ("focal_length", other.focal_length),
    ):
        if value > 0:
            assert getattr(meta, field) == pytest.approx(value, rel=1e-6), field
        else:
            assert getattr(meta, field) is None, field
    assert meta.iso == 100 and meta.focal_length > 0 and meta.exposure_time > 0
    # The CIFF capture time is the camera's wall clock counted in seconds from 1970 (no time zone).
    stamp = datetime.fromtimestamp(ciff_capture_time(path), timezone.utc)
    assert meta.datetime == stamp.strftime("%Y:%m:%d %H:%M:%S")
    np.testing.assert_allclose(meta.color_matrix1, xyz2cam, rtol=0, atol=0)
    assert not camera_wb_set and meta.as_shot_neutral is None  # LibRaw: no as-shot white balance in these files
    assert [meta.color_matrix2, meta.illuminant1, meta.illuminant2, meta.baseline_exposure] == [None] * 4


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_write_dng_metadata_reads_back(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    raw = rng.integers(0, 4096, (40, 48)).astype(np.uint16)
    wb, ccm = np.array([2.1, 1.0, 1.7]), random_ccm(rng)
    path = write_dng(
        tmp_path / "o.dng", raw, black_level=64, bits=12, wb=wb, ccm=ccm, camera="Test Cam 7", orientation=orientation
    )
    meta = read_raw(path).metadata
    assert_metadata(meta, expected_from_tiff(path))  # what tifffile finds in the file
    # ... which is what was written: ColorMatrix1 of the ccm under D65, AsShotNeutral 1 / wb, nothing else.
    assert (meta.make, meta.model, meta.unique_model, meta.exif_orientation) == (
        "",
        "Test Cam 7",
        "Test Cam 7",
        orientation,
    )
    np.testing.assert_allclose(meta.color_matrix1, np.linalg.inv(ccm) @ np.linalg.inv(M_SRGB), atol=1e-5)
    np.testing.assert_allclose(meta.as_shot_neutral, 1 / wb, atol=1e-6)
    assert meta.illuminant1 == 21
    assert [meta.exposure_time, meta.f_number, meta.iso, meta.focal_length, meta.datetime] == [None] * 5
    assert [meta.color_matrix2, meta.illuminant2, meta.baseline_exposure] == [None] * 3


def rational_tag(code: int, values, signed: bool = False) -> tuple:
    from fractions import Fraction

    flat = []
    for v in values:
        f = Fraction(v).limit_denominator(10**6)
        flat += [f.numerator, f.denominator]
    return (code, "2i" if signed else "2I", len(values), flat, True)


@pytest.mark.parametrize("iso", [(400,), (400, 400)])
def test_optional_dng_tags_read_back(tmp_path, iso):
    """Every optional tag (capture EXIF in IFD0, TIFF/EP style); ISOSpeedRatings may hold several values."""
    m1 = np.array([[0.7, -0.2, -0.05], [-0.4, 1.2, 0.2], [-0.05, 0.15, 0.6]])
    m2 = np.array([[0.9, -0.3, -0.1], [-0.5, 1.3, 0.25], [-0.1, 0.2, 0.7]])
    tags = [
        (50706, "B", 4, (1, 4, 0, 0), True),
        (50708, "s", 0, "Maker Cam 9 unique", True),
        (271, "s", 0, "Maker", True),
        (272, "s", 0, "Cam 9", True),
        (274, "H", 1, (6,), True),
        (33421, "H", 2, (2, 2), True),
        (33422, "B", 4, (0, 1, 1, 2), True),
        (50714, "I", 1, (128,), True),
        (50717, "I", 1, (4095,), True),
        rational_tag(50721, m1.ravel(), signed=True),
        rational_tag(50722, m2.ravel(), signed=True),
        (50778, "H", 1, (17,), True),
        (50779, "H", 1, (21,), True),
        rational_tag(50728, [0.5, 1.0, 0.625]),
        rational_tag(50730, [-0.75], signed=True),
        rational_tag(33434, [1 / 250]),
        rational_tag(33437, [2.8]),
        (34855, "H", len(iso), iso, True),
        rational_tag(37386, [35.0]),
        (36867, "s", 0, "2021:02:03 04:05:06", True),
    ]
    path = tmp_path / "full.dng"
    raw = np.random.default_rng(5).integers(128, 4096, (40, 48)).astype(np.uint16)
    tifffile.imwrite(path, raw, photometric=32803, extratags=sorted(tags))
    meta = read_raw(path).metadata
    assert_metadata(meta, expected_from_tiff(path))
    assert (meta.make, meta.model, meta.unique_model, meta.exif_orientation) == (
        "Maker",
        "Cam 9",
        "Maker Cam 9 unique",
        6,
    )
    assert (meta.exposure_time, meta.f_number, meta.iso, meta.focal_length) == pytest.approx((1 / 250, 2.8, 400, 35))
    assert meta.datetime == "2021:02:03 04:05:06"
    np.testing.assert_allclose(meta.color_matrix1, m1, atol=1e-6)
    np.testing.assert_allclose(meta.color_matrix2, m2, atol=1e-6)
    assert (meta.illuminant1, meta.illuminant2) == (17, 21)
    np.testing.assert_allclose(meta.as_shot_neutral, [0.5, 1.0, 0.625])
    assert meta.baseline_exposure == pytest.approx(-0.75)


def test_dng_without_optional_tags_invents_nothing(tmp_path):
    raw = np.random.default_rng(2).integers(0, 4095, (40, 48)).astype(np.uint16)
    path = write_bare_cfa_tiff(tmp_path / "bare.dng", raw)
    meta = read_raw(path).metadata
    assert_metadata(meta, expected_from_tiff(path))
    assert (meta.make, meta.model, meta.unique_model, meta.flip, meta.exif_orientation) == ("", "", "bare", 0, 1)
    fields = ("exposure_time", "f_number", "iso", "focal_length", "datetime", "color_matrix1", "color_matrix2")
    fields += ("illuminant1", "illuminant2", "as_shot_neutral", "baseline_exposure")
    assert {f: getattr(meta, f) for f in fields} == dict.fromkeys(fields)


def test_flip_to_orientation_table():
    """The table inverts LibRaw's Orientation -> flip conversion; its four common values as LibRaw documents them."""
    assert {flip: o for o, flip in LIBRAW_FLIP_OF_ORIENTATION.items()} == FLIP_TO_ORIENTATION
    assert {f: FLIP_TO_ORIENTATION[f] for f in (0, 3, 5, 6)} == {0: 1, 3: 3, 5: 8, 6: 6}
    assert CameraMetadata(flip=5).exif_orientation == 8 and CameraMetadata(flip=6).exif_orientation == 6


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_turns_the_image_as_libraw_does(tmp_path, orientation):
    """LibRaw's rendering with its flip applied equals the stored image turned as the EXIF value says."""
    yy, xx = np.mgrid[0:48, 0:64]
    raw = (200 + 30 * yy + 7 * xx).astype(np.uint16)  # no symmetry: every turn gives another image
    path = write_dng(tmp_path / "t.dng", raw, bits=12, orientation=orientation)
    kw = dict(gamma=(1, 1), no_auto_bright=True, user_wb=[1, 1, 1, 1], output_bps=16, half_size=True)
    kw["output_color"] = rawpy.ColorSpace.raw
    with rawpy.imread(str(path)) as raw_file:
        flip = raw_file.sizes.flip
        shown = raw_file.postprocess(**kw)[..., 1]
    with rawpy.imread(str(path)) as raw_file:
        stored = raw_file.postprocess(user_flip=0, **kw)[..., 1]
    meta = read_raw(path).metadata
    assert meta.flip == flip and meta.exif_orientation == orientation
    np.testing.assert_array_equal(EXIF_DISPLAY[meta.exif_orientation](stored), shown)
