"""Safe image reading: always BGR uint8 (H, W, 3), with clear errors for bad files.

Pillow reads the header first, so oversized images are refused before any pixel is decoded.
EXIF orientation is applied (as ``cv2.imread`` does), alpha is dropped (as ``cv2.imread`` does),
16-bit samples are scaled to 8 bits, and truncated files are errors, never partial images.
"""

from __future__ import annotations

import math
import os
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..errors import DataError

if TYPE_CHECKING:
    from PIL.Image import Image as PillowImage

DEFAULT_MAX_PIXELS = 100_000_000
# Photos are decoded for alignment at most this large (see read_image_reduced): detection and
# 128 px face crops need no more, and a 100 MP photo would otherwise take GBs in the detector.
REDUCE_ABOVE_PIXELS = 25_000_000
MAX_PIXELS_ENV = "ASMNET_MAX_PIXELS"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff")
# Pillow decoders allowed (by content, not name); others (EPS, PSD, ...) are refused.
# (multi-picture JPEG, "MPO", opens through the JPEG decoder)
PILLOW_FORMATS = ("JPEG", "PNG", "BMP", "PPM", "WEBP", "TIFF", "GIF")

_PILLOW_LOCK = threading.Lock()


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel limit: the argument, else $ASMNET_MAX_PIXELS, else DEFAULT_MAX_PIXELS."""
    if max_pixels is not None:
        if max_pixels <= 0:
            raise DataError(None, f"max_pixels must be positive, got {max_pixels}")
        return int(max_pixels)
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    if not text.isascii() or not text.isdigit() or int(text) <= 0:
        raise DataError(None, f"{MAX_PIXELS_ENV} must be a positive whole number, got {text!r}")
    return int(text)


@contextmanager
def _pillow_settings() -> Iterator[None]:
    """Pillow's own bomb check off (ours runs instead) and truncated files refused."""
    from PIL import Image, ImageFile

    with _PILLOW_LOCK:
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
        try:
            with warnings.catch_warnings():
                # DecompressionBombWarning (our limit runs instead), "Corrupt EXIF data",
                # "Palette images with Transparency ...": the image decodes; nothing to tell
                warnings.simplefilter("ignore")
                yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(path, "no such file")
    if not path.is_file():
        raise DataError(path, "not a file")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes)")


def _check_size(path: Path, size: tuple[int, int], limit: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise DataError(path, f"image has no pixels ({width}x{height})")
    if width * height > limit:
        raise DataError(
            path,
            f"image is {width}x{height} = {width * height} pixels, over the limit of {limit} "
            f"(raise it with max_pixels or {MAX_PIXELS_ENV})",
        )


def _decode(path: Path, limit: int, reduce_above: int | None = None) -> tuple[np.ndarray, tuple[int, int], int]:
    """Open, size-check, decode and convert with Pillow: BGR uint8, the full upright size
    (width, height) and the whole factor it was reduced by. With ``reduce_above``, a larger image
    is decoded reduced (JPEG: in the decoder itself, others right after decoding) to at most that
    many pixels. DataError for anything unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    with _pillow_settings():
        try:
            with Image.open(path, formats=_available_formats()) as image:
                _check_size(path, image.size, limit)
                width, height = image.size
                orientation = _orientation(image)
                if orientation in (5, 6, 7, 8):  # turned by 90 degrees when shown
                    width, height = height, width
                factor = reduce_factor(image.size, reduce_above)
                if factor > 1 and image.format == "JPEG":
                    # the JPEG decoder scales by 1/2, 1/4 or 1/8 at no cost, to at least the size asked
                    image.draft(image.mode, (-(-image.size[0] // factor), -(-image.size[1] // factor)))
                image.load()
                drafted = 2 ** round(math.log2(max(width, height) / max(image.size)))
                rest = reduce_factor(image.size, reduce_above)
                if drafted == 1 and rest == 1:
                    picture = ImageOps.exif_transpose(image)
                else:  # a reduced copy has no EXIF left: turn it by the original's orientation
                    picture = _reduced(image, rest)
                    if orientation in _TRANSPOSE:
                        picture = picture.transpose(_TRANSPOSE[orientation])
                return _to_bgr(picture, path), (width, height), drafted * rest
        except UnidentifiedImageError:
            kinds = ", ".join(PILLOW_FORMATS)
            raise DataError(path, f"not a recognised image file (supported: {kinds})") from None
        except Image.DecompressionBombError as exc:
            raise DataError(path, f"image too large: {exc}") from None
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt files
            raise DataError(path, f"cannot decode image ({_describe(exc)})") from None


# EXIF orientation -> the Pillow transpose that shows the image upright (as ImageOps.exif_transpose)
_TRANSPOSE = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}  # Image.Transpose values


def _orientation(image: PillowImage) -> int:
    """The EXIF orientation tag (1: upright); unreadable EXIF counts as upright."""
    try:
        value = image.getexif().get(0x0112, 1)
        return int(value) if value in range(1, 9) else 1
    except Exception:  # noqa: BLE001 - a corrupt EXIF block must not stop the decoding
        return 1


def reduce_factor(size: tuple[int, int], reduce_above: int | None) -> int:
    """The smallest whole factor k that brings ``size`` to at most ``reduce_above`` pixels (1: none)."""
    pixels = size[0] * size[1]
    if reduce_above is None or pixels <= reduce_above:
        return 1
    k = max(2, math.ceil(math.sqrt(pixels / reduce_above)))
    while -(-size[0] // k) * -(-size[1] // k) > reduce_above:
        k += 1
    return k


def _reduced(image: PillowImage, factor: int) -> PillowImage:
    """``image`` shrunk by a whole factor (box averaging); modes Pillow cannot reduce go via RGB."""
    if factor <= 1:
        return image
    if image.mode in ("P", "PA", "1", "I;16", "I;16B", "I;16L", "I;16N"):
        image = image.convert("RGBA" if image.mode in ("P", "PA") else ("I" if image.mode.startswith("I;16") else "L"))
    return image.reduce(factor)


def _available_formats() -> list[str]:
    """The allowed Pillow formats that this Pillow build can open."""
    from PIL import Image

    Image.init()
    return [name for name in PILLOW_FORMATS if name in Image.OPEN]


def _describe(exc: Exception) -> str:
    text = str(exc)
    if "truncated" in text.lower():  # Pillow: "image file is truncated (N bytes not processed)", "Truncated File Read"
        detail = re.search(r"\(([^()]*)\)", text)
        return "file is truncated" + (f", {detail.group(1)}" if detail else "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _scale_to_uint8(array: np.ndarray, full_scale: float) -> np.ndarray:
    """``array`` scaled from [0, full_scale] to uint8 with rounding."""
    scaled = np.rint(array.astype(np.float64) * (255.0 / full_scale))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _wide_gray_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """Gray of Pillow modes I;16*, I and F as uint8.

    16-bit and I data within [0, 65535] are scaled from 16 bits; F data within [0, 1] from 1;
    anything else is stretched from its own min..max.
    """
    data = array.astype(np.float64)
    if not np.isfinite(data).all():
        raise DataError(None, f"{mode} image holds NaN or infinite values")
    low, high = float(data.min()), float(data.max())
    if mode == "F" and low >= 0.0 and high <= 1.0:
        return _scale_to_uint8(data, 1.0)
    if mode != "F" and low >= 0.0 and high <= 65535.0:
        return _scale_to_uint8(data, 65535.0)
    return _scale_to_uint8(data - low, max(high - low, 1e-12))


def _to_bgr(image: PillowImage, path: Path) -> np.ndarray:
    """A decoded Pillow image of any mode as BGR uint8."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        try:
            gray = _wide_gray_to_uint8(np.asarray(image), mode)
        except DataError as exc:
            raise DataError(path, exc.problem) from None
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode != "RGB":
        try:
            image = image.convert("RGBA" if mode in ("P", "PA") else "RGB").convert("RGB")
        except (ValueError, OSError) as exc:
            raise DataError(path, f"unsupported image mode {mode} ({exc})") from None
    rgb = np.asarray(image, dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as BGR uint8 (H, W, 3); DataError for anything unusable.

    Images with more than ``max_pixels`` pixels (default: $ASMNET_MAX_PIXELS or
    DEFAULT_MAX_PIXELS) are refused from their header, before decoding.
    """
    return read_image_reduced(path, max_pixels, reduce_above=None)[0]


def read_image_reduced(
    path: str | Path, max_pixels: int | None = None, reduce_above: int | None | str = "default"
) -> tuple[np.ndarray, tuple[int, int], int]:
    """:func:`read_image`, but an image of more than ``reduce_above`` pixels is decoded reduced
    by a whole factor k (2, 3, ...) to at most that many: a 100-megapixel file then takes ~75 MB,
    not ~1 GB (``reduce_above`` "default": REDUCE_ABOVE_PIXELS; None: never). Returns the BGR
    image, the full size (width, height) of the upright image and k: reduced pixel (x, y) is
    centred on full-size pixel ((x + 0.5) k - 0.5, (y + 0.5) k - 0.5)."""
    file = Path(path)
    limit = max_pixels_limit(max_pixels)
    _check_file(file)
    return _decode(file, limit, REDUCE_ABOVE_PIXELS if reduce_above == "default" else reduce_above)


def _array_to_uint8(array: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float in [0, 1] as uint8."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return _scale_to_uint8(array, 65535.0)
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (not np.isfinite(array).all() or array.min() < 0 or array.max() > 1):
            raise DataError(None, "float images must hold values in [0, 1]")
        return _scale_to_uint8(array, 1.0)
    raise DataError(None, f"unsupported image dtype {array.dtype} (uint8, uint16 or float in [0, 1])")


def image_pixels(array: np.ndarray, channel_order: str = "bgr") -> np.ndarray:
    """An in-memory image as uint8 (H, W), (H, W, 3) or (H, W, 4), channels left in their order.

    No copy is made of a C-contiguous uint8 array: large pictures are converted only where they
    are cropped (:func:`to_rgb` / :func:`to_bgr` on the crop). uint16 and float in [0, 1] are
    scaled to uint8. Raises DataError for other shapes, dtypes and ``channel_order`` values.
    """
    if channel_order not in ("rgb", "bgr"):
        raise DataError(None, f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if not isinstance(array, np.ndarray):
        raise DataError(None, f"expected a NumPy array, got {type(array).__name__}")
    shape = array.shape
    if array.ndim not in (2, 3) or (array.ndim == 3 and shape[2] not in (1, 3, 4)):
        raise DataError(None, f"unsupported image shape {shape} (H,W), (H,W,1), (H,W,3) or (H,W,4)")
    if shape[0] == 0 or shape[1] == 0:
        raise DataError(None, f"image has no pixels (shape {shape})")
    pixels = _array_to_uint8(array)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    return np.ascontiguousarray(pixels)


def to_bgr(pixels: np.ndarray, channel_order: str) -> np.ndarray:
    """BGR uint8 (H, W, 3) of an :func:`image_pixels` array (a crop, or the whole picture)."""
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    # cvtColor: one pass, ~10x faster than copying a reversed-stride view (a 640x480 picture: 0.1 vs 1 ms)
    if pixels.shape[2] == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGR if channel_order == "rgb" else cv2.COLOR_BGRA2BGR)
    if channel_order == "rgb":
        return cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    return np.array(pixels, dtype=np.uint8, order="C")


def to_rgb(pixels: np.ndarray, channel_order: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) of an :func:`image_pixels` array."""
    return to_bgr(pixels, "bgr" if channel_order == "rgb" else "rgb")


def decode_image_array(array: np.ndarray, channel_order: str = "bgr") -> np.ndarray:
    """An in-memory image as BGR uint8 (H, W, 3) (a copy).

    Accepts gray (H, W) or (H, W, 1), colour (H, W, 3) and colour with alpha (H, W, 4; alpha is
    dropped); ``channel_order`` ("rgb" or "bgr") says how colour channels are ordered.
    """
    return to_bgr(image_pixels(array, channel_order), channel_order)
