"""Property tests of decoding: valid photos of every shape the accepted formats allow.

The mutation fuzzer (tests/ml/test_images.py) breaks files; this one builds well-formed ones
from a grammar of format, colour mode, size, colour, alpha, EXIF orientation and encoder
options, and says what must come out: a 3xSxS tensor of the right colour, never an error.
Hypothesis (https://hypothesis.works) draws the cases and shrinks a failure to the smallest
file that still fails. HYPOTHESIS_PROFILE=long runs 20,000 cases instead of CI's fixed 300 (tests/conftest.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from hypothesis import event, given
from hypothesis import strategies as st
from PIL import Image

from ml.images import ImageError, load_tensor, open_rgb

# The colour modes each accepted format writes (Pillow), so each is a mode uploads arrive in.
WRITES = {
    "JPEG": ("L", "RGB", "CMYK"),
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"),
    "GIF": ("L", "P"),
    "WEBP": ("RGB", "RGBA"),
    "AVIF": ("RGB", "RGBA"),
    "BMP": ("1", "L", "P", "RGB", "RGBA"),
    "HEIF": ("L", "RGB", "RGBA"),  # pillow-heif
}
CARRIES_EXIF = ("JPEG", "PNG", "WEBP", "AVIF", "HEIF")


@dataclass
class Photo:
    """A flat-coloured photo as uploaded, and what a browser would show of it."""

    data: bytes
    size: tuple[int, int]  # as stored, before any EXIF turn
    shown: tuple[float, float, float]  # RGB on a white page
    orientation: int | None
    options: dict[str, object]


def over_white(rgb: tuple[int, int, int], alpha: int) -> tuple[float, float, float]:
    a = alpha / 255
    r, g, b = (c * a + 255 * (1 - a) for c in rgb)
    return (r, g, b)


def flat_image(
    mode: str, size: tuple[int, int], rgba: tuple[int, int, int, int], deep: int
) -> tuple[Image.Image, tuple[float, float, float]]:
    """An image of one colour in ``mode``, and that colour as RGB over white."""
    rgb, alpha = rgba[:3], rgba[3]
    if mode == "I;16":
        grey = deep * 255 / 65535 if deep > 255 else deep  # 8-bit values stored in 16 bits stay as they are
        return Image.new("I;16", size, deep), (grey, grey, grey)
    if mode == "1":
        bit = 255 if rgb[0] > 127 else 0
        return Image.new("1", size, bit), (bit, bit, bit)
    if mode in ("L", "LA"):
        luma = Image.new("RGB", (1, 1), rgb).convert("L").getpixel((0, 0))
        assert isinstance(luma, int)
        a = alpha if mode == "LA" else 255
        return Image.new(mode, size, (luma, a) if mode == "LA" else luma), over_white((luma, luma, luma), a)
    if mode == "P":
        im = Image.new("RGB", size, rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
        return im, (float(rgb[0]), float(rgb[1]), float(rgb[2]))
    if mode == "RGBA":
        return Image.new("RGBA", size, rgba), over_white(rgb, alpha)
    im = Image.new("RGB", size, rgb)
    return (im.convert(mode) if mode != "RGB" else im), (float(rgb[0]), float(rgb[1]), float(rgb[2]))


@st.composite
def photos(draw: st.DrawFn) -> Photo:
    fmt = draw(st.sampled_from(sorted(WRITES)))
    mode = draw(st.sampled_from(WRITES[fmt]))
    side = st.integers(1, 64) | st.integers(1, 1200)
    size = (draw(side), draw(side))
    rgba = draw(st.tuples(*[st.integers(0, 255)] * 4))
    deep = draw(st.integers(0, 255) | st.integers(256, 65535))  # a 16-bit grey: 8-bit values or more
    im, shown = flat_image(mode, size, rgba, deep)
    options: dict[str, object] = {}
    orientation = None
    if fmt in CARRIES_EXIF and draw(st.booleans()):
        exif = Image.Exif()
        orientation = draw(st.sampled_from(range(1, 9)) | st.integers(0, 65535))
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    if fmt == "JPEG":
        options["quality"] = draw(st.integers(30, 100))
        options["progressive"] = draw(st.booleans())
        options["subsampling"] = draw(st.sampled_from([0, 1, 2]))
    elif fmt == "WEBP":
        options["lossless"] = draw(st.booleans())
    elif fmt == "AVIF":
        options["quality"], options["speed"] = draw(st.integers(40, 100)), 10
    elif fmt == "HEIF":
        options["quality"] = draw(st.integers(40, 100))
    elif fmt == "BMP" and mode == "RGBA":
        shown = (float(rgba[0]), float(rgba[1]), float(rgba[2]))  # 32-bit BMPs keep no alpha that readers agree on
    if fmt in ("PNG", "GIF") and mode == "P" and draw(st.booleans()):
        options["transparency"] = im.getpixel((0, 0))  # the one colour: a transparent photo is white
        shown = (255.0, 255.0, 255.0)
    if fmt == "GIF" and draw(st.booleans()):  # animated: the first frame is the photo
        options["save_all"], options["append_images"] = True, [Image.new(im.mode, size, 0)]
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    if fmt in ("JPEG", "AVIF", "HEIF") or (fmt == "WEBP" and not options["lossless"]):
        # Lossy coding moves a flat colour (saturated ones most, by 5 and more at quality 30),
        # so the colour to see is the file's own, decoded plainly at full size over white.
        shown = plain_decode(buf.getvalue())
    return Photo(buf.getvalue(), size, shown, orientation, {"format": fmt, "mode": mode, **options})


def plain_decode(data: bytes) -> tuple[float, float, float]:
    """The mean colour of a file over white, by the plainest decode Pillow has."""
    with Image.open(io.BytesIO(data)) as im:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float64)
    r, g, b = (rgba[..., :3] * rgba[..., 3:] / 255 + 255 * (1 - rgba[..., 3:] / 255)).mean(axis=(0, 1))
    return (r, g, b)


# Input sizes a model has. Not 1: Pillow's reduce() rounds its 1/factor² to an integer
# fraction of 2**24, which at a factor of 1,058 turns a flat 24 into 22; at 224 the largest
# factor a photo within the pixel limits needs is 17, where the error is 0.002%.
@given(photo=photos(), image_size=st.sampled_from([16, 32, 224]))
def test_every_well_formed_photo_decodes_upright_in_its_own_colour(photo: Photo, image_size: int) -> None:
    try:
        x = load_tensor(photo.data, image_size)
        upright = open_rgb(photo.data)
    except ImageError as exc:
        raise AssertionError(f"a well-formed {photo.options} was refused: {exc}") from exc
    assert x.shape == (3, image_size, image_size) and str(x.dtype) == "torch.uint8"
    mean = x.float().mean(dim=(1, 2)).numpy()
    assert np.abs(mean - np.array(photo.shown)).max() <= 1.5, (mean, photo.shown)
    event(f"{photo.options['format']} {photo.options['mode']}")  # --hypothesis-show-statistics
    w, h = photo.size
    assert upright.size == ((h, w) if photo.orientation in (5, 6, 7, 8) else (w, h))
