from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from app.bench_serve import decode_peak
from ml.images import (
    MAX_JPEG_SCANS,
    MAX_PIXELS_FULL_DECODE,
    ImageError,
    load_tensor,
    normalise,
    open_rgb,
    to_tensor,
)
from tests.conftest import jpeg_bytes, many_scans_jpeg


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
