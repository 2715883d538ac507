from __future__ import annotations

import io
import os
import random
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from ml.images import (
    MAX_JPEG_SCANS,
    MAX_PIXELS_FULL_DECODE,
    MAX_PIXELS_HEIF,
    ImageError,
    load_tensor,
    normalise,
    open_rgb,
    to_tensor,
)
from tests.conftest import jpeg_bytes, many_scans_jpeg
from tests.helpers import ROOT
from tools.jpeg_samples import decode_peak


def encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("L", "JPEG"),
        ("CMYK", "JPEG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("LA", "PNG"),
        ("RGB", "WEBP"),
        ("I;16", "PNG"),
        ("RGB", "AVIF"),
        ("RGB", "BMP"),
        ("P", "GIF"),
    ],
)
def test_every_colour_mode_becomes_rgb(mode: str, fmt: str) -> None:
    im = Image.new("RGB", (30, 20), (120, 130, 140)).convert(mode)
    out = open_rgb(encode(im, fmt))
    assert out.mode == "RGB"
    assert out.size == (30, 20)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    arr = np.full((10, 10), 32768, dtype=np.uint16)
    out = np.asarray(open_rgb(encode(Image.fromarray(arr), "PNG")))
    assert 120 <= out.mean() <= 135  # half of full scale, not 255


def test_transparent_pixels_become_white() -> None:
    im = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert open_rgb(encode(im, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    im = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = open_rgb(encode(im, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)
    big = Image.new("RGBA", (1200, 600), (10, 200, 10, 255))  # reduced 2x before it is turned
    assert open_rgb(encode(big, "PNG", exif=exif.tobytes()), draft_size=256).size == (300, 600)


def exif_jpeg(tiff: bytes, size: tuple[int, int] = (40, 20)) -> bytes:
    """A JPEG whose APP1 segment holds ``tiff`` as its EXIF block, byte for byte."""
    payload = b"Exif\x00\x00" + tiff
    plain = encode(Image.new("RGB", size, (10, 200, 10)), "JPEG")
    return plain[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + plain[2:]


# Big-endian TIFF, one IFD of two entries: a tag whose value does not fit its declared type
# (ASCII "Cam" for SamplesPerPixel, a SHORT; or for YPosition, a RATIONAL), then Orientation 6.
MISTYPED_EXIF = [
    bytes.fromhex(f"4d4d002a00000008 0002 {tag} 0002 00000004 43616d00 0112 0003 00000001 00060000 00000000")
    for tag in ("0115", "011f")
]


@pytest.mark.parametrize("tiff", MISTYPED_EXIF, ids=["short_tag_holding_text", "rational_tag_holding_text"])
def test_a_mistyped_exif_tag_still_turns_the_photo(tiff: bytes) -> None:
    """Pillow turns the pixels, then fails to write the EXIF block back (TypeError,
    struct.error): found by fuzzing, it was a 500. The block is not kept, the turn is."""
    assert open_rgb(exif_jpeg(tiff)).size == (20, 40)
    assert open_rgb(exif_jpeg(tiff, (400, 200)), draft_size=64).size == (100, 200)  # drafted to 1/2


def test_a_corrupt_avif_is_unreadable_not_a_crash() -> None:
    """libavif's failures come up as RuntimeError (found by fuzzing: a 500)."""
    avif = bytearray(encode(Image.effect_mandelbrot((64, 48), (-2, -1.5, 1, 1.5), 30).convert("RGB"), "AVIF"))
    avif[-40] ^= 0xFF  # in the coded colour planes
    with pytest.raises(ImageError) as refused:
        open_rgb(bytes(avif), draft_size=32)
    assert refused.value.reason == "unreadable" and "decode" in refused.value.detail


def test_bad_uploads_leave_no_line_on_stderr() -> None:
    """Pillow warns of each EXIF block it reads past ("Corrupt EXIF data", "Skipping tag
    410") and of photos just past its pixel limit, which open_rgb refuses anyway: each warning
    was a line outside the JSON logs."""
    code = """
from ml.images import ImageError, open_rgb
from tests.ml.test_images import MISTYPED_EXIF, bomb_png, exif_jpeg
for tiff in MISTYPED_EXIF:
    open_rgb(exif_jpeg(tiff[:-9] + b"\\xff" * 9))
try:
    open_rgb(bomb_png(8000, 8000))  # 64 MP: over 50 MP, under Pillow's own refusal at 100
except ImageError as refused:
    assert refused.reason == "too_many_pixels", refused
else:
    raise AssertionError("a 64 MP PNG was decoded")
from tests.ml.test_images import heif_claiming
for size in ((8064, 6048), (5712, 4284)):  # refused unread; refused by libheif
    try:
        open_rgb(heif_claiming(*size))
    except ImageError:
        pass
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((250, 0, 0), (0, 0, 250))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    r, _g, b = open_rgb(data).getpixel((5, 5))  # type: ignore[misc]
    assert r > 200 and b < 50


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "not_an_image"),
        (jpeg_bytes((1, 2, 3), size=(64, 64))[:300], "truncated"),
    ],
)
def test_bad_bytes_raise_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageError) as err:
        open_rgb(data)
    assert err.value.reason == reason


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "TGA", "PCX", "PPM", "SGI", "JPEG2000"])
def test_formats_outside_the_accepted_few_are_refused_unopened(fmt: str) -> None:
    data = encode(Image.new("RGB", (32, 32), (200, 60, 50)), fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself would decode it
    with pytest.raises(ImageError) as err:
        open_rgb(data)
    assert err.value.reason == "not_an_image" and "JPEG, PNG" in err.value.detail


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge image."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [60000, 7500])  # Pillow itself refuses only beyond twice its limit
def test_decompression_bomb_is_refused(side: int) -> None:
    with pytest.raises(ImageError) as err:
        open_rgb(bomb_png(side, side))
    assert err.value.reason == "too_many_pixels"


def test_progressive_jpeg_with_too_many_scans_is_refused_before_decoding() -> None:
    at_limit = many_scans_jpeg(MAX_JPEG_SCANS)
    assert at_limit.count(b"\xff\xda") == MAX_JPEG_SCANS
    assert open_rgb(at_limit).size == (64, 48)  # the repeated scans are still a decodable file
    with pytest.raises(ImageError) as err:
        open_rgb(many_scans_jpeg(MAX_JPEG_SCANS + 1))
    assert err.value.reason == "too_many_scans"
    assert f"{MAX_JPEG_SCANS + 1} JPEG scans" in err.value.detail


def heif_claiming(width: int, height: int) -> bytes:
    """A small HEIF whose image-size box (ispe) claims another size, as a bomb's would."""
    data = bytearray(encode(Image.new("RGB", (64, 64), (90, 120, 150)), "HEIF", quality=50))  # no crop box
    at = data.index(b"ispe") + 8  # box type, then version and flags
    assert struct.unpack(">II", data[at : at + 8]) == (64, 64)
    data[at : at + 8] = struct.pack(">II", width, height)
    return bytes(data)


def test_iphone_photos_have_their_own_pixel_limit() -> None:
    """HEIF decodes at full size like PNG, at half PNG's worst memory: a 24.5 MP iPhone photo
    passes the limit, a 48 MP "HEIF Max" one is refused before anything is decoded."""
    assert open_rgb(encode(Image.new("RGB", (64, 48), (90, 120, 150)), "HEIF")).size == (64, 48)
    with pytest.raises(ImageError) as err:
        open_rgb(heif_claiming(8064, 6048))
    assert err.value.reason == "too_many_pixels" and f"{MAX_PIXELS_HEIF:,}" in err.value.detail
    with pytest.raises(ImageError) as err:
        open_rgb(heif_claiming(5712, 4284))  # within the limit: decoding starts, and fails on 64x64 data
    assert err.value.reason != "too_many_pixels"


def test_formats_decoded_at_full_size_have_a_lower_pixel_limit() -> None:
    with pytest.raises(ImageError) as err:
        open_rgb(bomb_png(5000, 4000))  # 20 MP: fine as a JPEG, too much memory as a PNG
    assert err.value.reason == "too_many_pixels" and f"{MAX_PIXELS_FULL_DECODE:,}" in err.value.detail
    jpeg = encode(Image.new("RGB", (5000, 4000), (90, 120, 150)), "JPEG")
    assert open_rgb(jpeg, draft_size=256).size == (625, 500)


@pytest.mark.parametrize("mode", ["RGBA", "I;16"])
def test_a_large_png_is_reduced_before_any_full_size_copy(mode: str) -> None:
    side = 3900  # 15.2 MP, under the limit: decoded once at full size (58 MiB as RGBA), then reduced
    png = encode(Image.new(mode, (side, side), 200), "PNG", compress_level=1)
    _seconds, grown_mib = decode_peak(png)  # in a fresh process
    assert grown_mib < 150, f"{mode}: decoding grew the process by {grown_mib} MiB"  # 349 MiB before


def test_zero_byte_file_on_disk(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        open_rgb(tmp_path / "x.jpg")


def test_tensor_shape_and_dtype() -> None:
    t = load_tensor(jpeg_bytes((10, 20, 30), size=(50, 30)), 32)
    assert t.shape == (3, 32, 32)
    assert t.dtype.is_floating_point is False


def test_draft_decoding_of_a_large_jpeg_matches_a_full_decode() -> None:
    big = Image.effect_mandelbrot((1600, 1200), (-2, -1.5, 1, 1.5), 60).convert("RGB")
    data = encode(big, "JPEG", quality=92)
    drafted = load_tensor(data, 96).float()
    full = to_tensor(Image.open(io.BytesIO(data)).convert("RGB"), 96).float()
    assert drafted.shape == full.shape == (3, 96, 96)
    assert (drafted - full).abs().mean() < 6  # same picture, decoded at reduced scale


def test_multi_picture_jpegs_from_phones_decode_in_draft_mode_too() -> None:
    big = Image.effect_mandelbrot((1600, 1200), (-2, -1.5, 1, 1.5), 60).convert("RGB")
    plain = encode(big, "JPEG", quality=92)
    mpo = encode(big, "MPO", quality=92, save_all=True, append_images=[big.resize((400, 300))])
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    for data in (plain, mpo):
        assert open_rgb(data, draft_size=96).size == (200, 150)  # decoded at 1/8 scale
        assert open_rgb(data).size == (1600, 1200)


def test_normalise() -> None:
    batch = to_tensor(Image.new("RGB", (4, 4), (255, 0, 127)), 4).unsqueeze(0)
    x = normalise(batch, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x[0, 0].max() == pytest.approx(1.0)
    assert x[0, 1].min() == pytest.approx(-1.0)


def fuzz_seeds() -> dict[str, bytes]:
    """One small file per accepted format, EXIF included where the format carries it."""
    im = Image.effect_mandelbrot((64, 48), (-2, -1.5, 1, 1.5), 30).convert("RGB")
    exif = Image.Exif()
    exif[0x0112], exif[0x010F], exif[0x9003] = 6, "Cam", "2026:01:01 00:00:00"
    return {
        "jpeg": encode(im, "JPEG", exif=exif.tobytes()),
        "progressive_jpeg": encode(im, "JPEG", progressive=True),
        "png": encode(im, "PNG", exif=exif.tobytes()),
        "gif": encode(im.convert("P"), "GIF"),
        "webp": encode(im, "WEBP", exif=exif.tobytes()),
        "bmp": encode(im, "BMP"),
        "avif": encode(im, "AVIF", quality=50),
        "heif": encode(im, "HEIF", quality=50, exif=exif.tobytes()),
    }


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A few bytes changed, the file cut short, or bytes inserted."""
    out, roll = bytearray(data), rng.random()
    if roll < 0.6:
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    elif roll < 0.8:
        del out[rng.randrange(1, len(out)) :]
    else:
        at = rng.randrange(len(out))
        out[at:at] = rng.randbytes(rng.randint(1, 16))
    return bytes(out)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # ml.images silences it too
def test_mutated_files_are_decoded_or_refused_never_a_crash() -> None:
    """Seeded fuzzing of every accepted format: anything but an ImageError is a 500 in the API.
    It found libavif's RuntimeError and Pillow's failure on mistyped EXIF tags (tests above).
    FUZZ_CASES=1000000 runs a longer search; the failing input is named by its case number."""
    rng, seeds = random.Random(20261125), fuzz_seeds()
    outcomes = {"decoded": 0, "refused": 0}
    for case in range(int(os.environ.get("FUZZ_CASES", "3000"))):
        kind = rng.choice(sorted(seeds))
        data = mutate(seeds[kind], rng)
        try:
            to_tensor(open_rgb(data, draft_size=32), 32)
            outcomes["decoded"] += 1
        except ImageError:
            outcomes["refused"] += 1
        except Exception as exc:  # any other exception is the finding
            raise AssertionError(f"case {case}, a mutated {kind}: {type(exc).__name__}: {exc}") from exc
    assert min(outcomes.values()) > 0, outcomes  # both paths were exercised
