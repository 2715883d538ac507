"""Decoding photos into RGB arrays, the one way every step of the product does it.

Training, evaluation and the service all call :func:`open_rgb` and :func:`to_array` (or
:func:`to_tensor`, its PyTorch form), so a photo is seen the same way wherever it is
classified. PyTorch is imported only where a tensor is made: the serving image has none.
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

if TYPE_CHECKING:
    import torch

# What staff upload. Pillow reads 40-odd formats (TIFF, PSD, EPS, ICO, FITS, ...), and each
# decoder is attack surface, so the rest are refused unopened (MPO comes in as JPEG). HEIF is
# what iPhones take photos in, read by pillow-heif (libheif): one decoding thread, as torch has
# one per worker, and no thumbnails, depth maps or auxiliary images, which are never looked at.
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP", "HEIF")
pillow_heif.register_heif_opener(decode_threads=1, thumbnails=False, depth_images=False, aux_images=False)
# A decompression bomb is refused rather than decoded: 50 MP covers any phone camera.
MAX_PIXELS = 50_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# Formats without draft mode decode at full size first: a 49 MP WebP of 0.13 MB took 752 MiB.
# At 16 MP the worst (WebP, about 245 MiB) fits twice in the pod's headroom (deployment.yaml).
MAX_PIXELS_FULL_DECODE = 16_000_000
# HEIF has no draft mode either, but costs less: a 24.5 MP iPhone photo (5712x4284) took 182 MiB
# to decode, a 12 MP one 94 MiB. 25 MP takes every iPhone's default photo; "HEIF Max" (48 MP)
# would take about 360 MiB and is refused.
MAX_PIXELS_HEIF = 25_000_000
# A progressive JPEG's cost is scans x pixels, and the standard lets a few bytes of EOB runs
# make a scan over the whole image: 1,000 scans of 49 MP fit in 0.36 MB and hold a worker for
# 28 s (libjpeg-turbo calls it LJT-01-003; only a scan limit helps). Encoders write 1 to 13.
MAX_JPEG_SCANS = 64
_SOS = b"\xff\xda"
# Pillow warns of each malformed EXIF block it reads past ("Corrupt EXIF data", "Skipping tag
# 410"): uploads hold plenty, and each warning was a line on stderr outside the JSON logs.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")
# Pillow warns between MAX_IMAGE_PIXELS and twice that (and refuses past it); open_rgb refuses
# those photos itself with too_many_pixels, so the warning is only another stray line.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageError(ValueError):
    """A file that is not a usable photo; ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def open_rgb(source: str | Path | bytes, draft_size: int | None = None) -> Image.Image:
    """Open and fully decode a photo as 8-bit RGB with EXIF orientation applied.

    ``draft_size`` lets JPEG decode at a reduced scale (Pillow draft mode) when the
    photo is far larger than the size it will be resized to: a large speed-up for
    camera photos and no change for small ones.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if not data:
        raise ImageError("empty", "the file has zero bytes")
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as im:
            # Phones' multi-picture JPEGs open as MPO, a JpegImageFile too.
            jpeg = isinstance(im, JpegImageFile)
            # Pillow only warns up to 2x its own limit.
            limit = MAX_PIXELS if jpeg else MAX_PIXELS_HEIF if im.format == "HEIF" else MAX_PIXELS_FULL_DECODE
            if im.width * im.height > limit:
                raise ImageError("too_many_pixels", f"{im.width}x{im.height} {im.format} is over {limit:,} pixels")
            # Entropy-coded data escapes every 0xFF, so each scan libjpeg reads starts with these
            # two bytes: the count can only overstate the scans (a thumbnail, an appended image).
            # Baseline files skip it (2 ms for a 2.8 MB photo): libjpeg stops them at a repeated scan.
            if jpeg and im.info.get("progressive") and (scans := data.count(_SOS)) > MAX_JPEG_SCANS:
                raise ImageError("too_many_scans", f"{scans} JPEG scans; at most {MAX_JPEG_SCANS} are decoded")
            if draft_size and jpeg:
                # draft keeps the image at least this size, so resizing loses nothing.
                im.draft("RGB", (draft_size, draft_size))
            im.load()
            small = im if jpeg or not draft_size else _shrink(im, draft_size)
            _turn_upright(small)
            return _to_rgb(small)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError("too_many_pixels", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageError("not_an_image", f"the bytes are not a {', '.join(ACCEPTED_FORMATS)} image") from exc
    except OSError as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "unreadable"
        raise ImageError(reason, str(exc)) from exc
    except (ValueError, SyntaxError, EOFError) as exc:  # Pillow plugins raise these on junk.
        raise ImageError("unreadable", str(exc)) from exc
    except RuntimeError as exc:  # libavif's "Failed to decode frame 0", found by fuzzing: was a 500
        raise ImageError("unreadable", str(exc)) from exc


def _turn_upright(im: Image.Image) -> None:
    """Apply the EXIF orientation in place (a copy of 49 MP would cost 196 MB)."""
    # Pillow turns the pixels, then writes the EXIF block back without the orientation, and a
    # tag whose value does not fit its type fails there. The block is not kept anyway.
    with contextlib.suppress(TypeError, ValueError, struct.error):
        ImageOps.exif_transpose(im, in_place=True)


def _shrink(im: Image.Image, size: int) -> Image.Image:
    """Box-reduce a decoded image far larger than ``size`` before any full-size conversion:
    draft mode's analogue for formats without it. A 49 MP RGBA PNG of 0.9 MB cost a worker
    1.1 GiB without this."""
    factor = min(im.width, im.height) // size
    if factor < 2:
        return im
    if im.mode in ("P", "PA"):  # palette indices cannot be averaged
        im = _unpalette(im)
    elif im.mode == "1" or im.mode.startswith("I;16"):  # modes reduce() does not take
        im = im.convert("L" if im.mode == "1" else "I")
    return im.reduce(factor)


def _unpalette(im: Image.Image) -> Image.Image:
    """A palette image as its colours, keeping transparency where it has any."""
    return im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any mode (L, LA, P, RGBA, CMYK, I;16, ...) to RGB."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: scale to 8 bits instead of clipping everything to white.
        arr = np.asarray(im, dtype=np.uint32)
        peak = max(int(arr.max()), 1)
        scale = 255.0 / (65535 if peak > 255 else 255)
        im = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("P", "PA"):
        im = _unpalette(im)
    if im.mode in ("RGBA", "LA"):
        # Transparent pixels become white, as a browser shows them on a white page.
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def to_array(im: Image.Image, image_size: int) -> np.ndarray:
    """Resize (the whole photo, no crop) to a square uint8 array of shape 3×S×S."""
    if im.size != (image_size, image_size):
        im = im.resize((image_size, image_size), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))


def to_tensor(im: Image.Image, image_size: int) -> torch.Tensor:
    """:func:`to_array` as a tensor."""
    import torch

    return torch.from_numpy(to_array(im, image_size))


def load_tensor(source: str | Path | bytes, image_size: int) -> torch.Tensor:
    """Decode a photo file or bytes straight to the model's uint8 input tensor."""
    return to_tensor(open_rgb(source, draft_size=image_size), image_size)


def normalise(batch: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 N×3×S×S → float32 normalised the way the model was trained."""
    import torch

    m = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    return (batch.float().div_(255.0) - m) / s
