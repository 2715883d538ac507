"""A labelled set of photos that show neither a cat nor a dog, from what ships on this machine.

What staff upload by mistake: people, paperwork, logos, landscapes, objects, blank placeholders
and noise. Sources: scikit-image's and matplotlib's sample images (inside their wheels), the
photos of Debian's lomiri-wallpapers package (`make system-deps`), documents rendered here with
the DejaVu fonts, and generated blank, noise and gradient pictures. Two photos in those sources
show pets, and are left out: scikit-image's "chelsea" (a cat) and the wallpaper "friends" (two
dogs at a window).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WALLPAPERS = Path("/usr/share/backgrounds")  # lomiri-wallpapers
PETS_AMONG_THEM = {"chelsea.png", "friends_by_Aitzol_Berasategi.jpg"}
_NOT_PICTURES = {"multipage.tif", "multipage_rgb.tif"}  # TIFF: the service refuses the format
_FONTS = Path("/usr/share/fonts/truetype/dejavu")
_LINES = [
    "ADOPTION FORM",
    "Name: ____________________",
    "Date of intake: 2026-12-07",
    "Vaccinated: yes / no",
    "Microchip number",
    "Signature",
    "Shelter inventory",
    "Invoice #4411",
    "Total: $120.00",
]


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def _packaged() -> Iterator[tuple[str, bytes]]:
    import matplotlib
    import skimage

    data = Path(skimage.__file__).parent / "data"
    for path in sorted(data.glob("*")):
        if path.suffix in (".png", ".jpg", ".gif", ".tif") and path.name not in PETS_AMONG_THEM | _NOT_PICTURES:
            im = Image.open(path)
            im.thumbnail((3000, 3000))  # the 4096² Hubble field is over the 16 MP limit for PNG
            yield f"skimage/{path.name}", _png(im)
    faces = np.load(data / "lfw_subset.npy")  # Labeled Faces in the Wild: 100 faces, then 100 non-faces
    for i in range(0, 100, 10):
        yield f"lfw/face-{i}", _png(Image.fromarray((faces[i] * 255).astype(np.uint8)))
    samples = Path(matplotlib.get_data_path()) / "sample_data"
    for name in ("grace_hopper.jpg", "logo2.png", "Minduka_Present_Blue_Pack.png"):
        yield f"matplotlib/{name}", (samples / name).read_bytes()
    for path in sorted(WALLPAPERS.glob("*")):
        if path.suffix in (".jpg", ".png") and path.name not in PETS_AMONG_THEM:
            yield f"wallpaper/{path.name}", path.read_bytes()


def _documents() -> Iterator[tuple[str, bytes]]:
    fonts = sorted(_FONTS.glob("*.ttf"))
    for i in range(12):
        page = Image.new("RGB", (850, 1100), "white")
        draw = ImageDraw.Draw(page)
        font = ImageFont.truetype(str(fonts[i % len(fonts)]), 28 + 4 * (i % 4))
        for j in range(22):
            draw.text((50, 40 + 46 * j), _LINES[(i + j) % len(_LINES)], fill="black", font=font)
        if i % 3 == 0:
            draw.rectangle((40, 30, 800, 1060), outline="black", width=3)
        yield f"document/{i}", _png(page)


def _generated() -> Iterator[tuple[str, bytes]]:
    for i, colour in enumerate(["white", "black", "gray", (200, 180, 150), (30, 60, 160), (240, 240, 235)]):
        yield f"blank/{i}", _png(Image.new("RGB", (640, 480), colour))
    rng = np.random.default_rng(0)
    for i in range(6):
        noise = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        yield f"noise/{i}", _png(Image.fromarray(noise if i % 2 == 0 else np.repeat(noise[:, :, :1], 3, 2)))
    for i in range(4):
        ramp = np.linspace(0, 255, 640)[None, :, None] * np.ones((480, 1, 3))
        ramp[..., i % 3] = 255 - ramp[..., i % 3]
        yield f"gradient/{i}", _png(Image.fromarray(ramp.astype(np.uint8)))


def non_pets() -> list[tuple[str, bytes]]:
    """(name, encoded image) for every photo of the set, in a fixed order."""
    return [*_packaged(), *_documents(), *_generated()]
