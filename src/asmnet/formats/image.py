"""Safe image reading: always BGR uint8 (H, W, 3), with clear errors for bad files.

Pillow reads the header first, so oversized images are refused before any pixel is decoded.
EXIF orientation is applied (as ``cv2.imread`` does), alpha is dropped (as ``cv2.imread`` does),
16-bit samples are scaled to 8 bits, and truncated files are errors, never partial images.

Pillow's process-wide settings are left as the host application set them: the pixel limit is
ours (:func:`max_pixels_limit`) instead of ``Image.MAX_IMAGE_PIXELS`` (whose check is skipped by
opening through the format's plugin, :func:`_open_image`), a truncated file is caught at the read
that finds the end of the file (:class:`_EndOfFileGuard`) whatever ``ImageFile.LOAD_TRUNCATED_IMAGES``
says, and no warnings filter is touched (the EXIF orientation is read without Pillow's EXIF
parser, which warns about damaged blocks).
"""

from __future__ import annotations

import math
import os
import re
import struct
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import cv2
import numpy as np

from ..errors import DataError, SettingError, first_line

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
EXIF_ORIENTATION = 0x0112
CHANNEL_ORDERS = ("bgr", "rgb")
# what an image array means when nothing says otherwise: OpenCV's order, as cv2.imread and
# cv2.VideoCapture give it (paths and PIL images carry their own order); FaceAligner and
# FaceTracker take the same default
DEFAULT_CHANNEL_ORDER = "bgr"


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


class _TruncatedFile(Exception):
    """Raised by :class:`_EndOfFileGuard`: the decoder asked for bytes past the end of the file."""


class _EndOfFileGuard:
    """A binary file that, once :attr:`armed`, raises :class:`_TruncatedFile` when a read finds
    nothing left. Armed while Pillow decodes pixels: a complete file ends before its decoder asks
    for more, a truncated one does not, and Pillow itself would only refuse it while the
    process-wide ``ImageFile.LOAD_TRUNCATED_IMAGES`` is False."""

    def __init__(self, file: IO[bytes]):
        self._file = file
        self.armed = False

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if self.armed and size != 0 and not data:
            raise _TruncatedFile
        return data

    def __getattr__(self, name: str) -> Any:  # seek, tell, fileno, ...
        return getattr(self._file, name)


def _open_image(file: IO[bytes], formats: list[str]) -> PillowImage:
    """``PIL.Image.open(file, formats=formats)`` without its check of ``Image.MAX_IMAGE_PIXELS``
    (a process-wide setting of the host's; our own limit is checked by the caller instead):
    each format's plugin is asked in turn, as Image.open does. Raises UnidentifiedImageError
    when none recognises the file."""
    from PIL import Image, UnidentifiedImageError

    prefix = file.read(16)
    for name in formats:
        factory, accept = Image.OPEN[name]
        recognised = accept is None or accept(prefix)
        if not recognised or isinstance(recognised, str):  # a string: "recognised, but unsupported here"
            continue
        file.seek(0)
        try:
            return factory(file, "")
        except (SyntaxError, IndexError, TypeError, struct.error):  # what Image.open takes for "not this format"
            continue
    raise UnidentifiedImageError("cannot identify image file")


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
    check_pixel_count(path, width, height, limit)


def check_pixel_count(name: str | Path | None, width: int, height: int, limit: int, what: str = "image is") -> None:
    """DataError naming ``name`` when ``width`` x ``height`` is over ``limit`` pixels (images and
    video frames alike; see :func:`max_pixels_limit`)."""
    if width * height > limit:
        raise DataError(
            name,
            f"{what} {width}x{height} = {width * height} pixels, over the limit of {limit} "
            f"(raise it with max_pixels or {MAX_PIXELS_ENV})",
        )


def _decode(path: Path, limit: int, reduce_above: int | None = None) -> tuple[np.ndarray, tuple[int, int], int]:
    """Open, size-check, decode and convert with Pillow: BGR uint8, the full upright size
    (width, height) and the whole factor it was reduced by. With ``reduce_above``, a larger image
    is decoded reduced (JPEG: in the decoder itself, others right after decoding) to at most that
    many pixels. DataError for anything unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as raw:
            guard = _EndOfFileGuard(raw)
            image = _open_image(guard, _available_formats())  # type: ignore[arg-type]
            _check_size(path, image.size, limit)
            width, height = image.size
            orientation = _orientation(image)
            if orientation in (5, 6, 7, 8):  # turned by 90 degrees when shown
                width, height = height, width
            factor = reduce_factor(image.size, reduce_above)
            if factor > 1 and image.format == "JPEG":
                # the JPEG decoder scales by 1/2, 1/4 or 1/8 at no cost, to at least the size asked
                image.draft(image.mode, (-(-image.size[0] // factor), -(-image.size[1] // factor)))
            guard.armed = True
            image.load()
            guard.armed = False
            drafted = 2 ** round(math.log2(max(width, height) / max(image.size)))
            rest = reduce_factor(image.size, reduce_above)
            picture = _reduced(image, rest)
            if orientation in _TRANSPOSE:
                picture = picture.transpose(_TRANSPOSE[orientation])
            return _to_bgr(picture, path), (width, height), drafted * rest
    except _TruncatedFile:
        raise DataError(path, "cannot decode image (file is truncated)") from None
    except UnidentifiedImageError:
        kinds = ", ".join(PILLOW_FORMATS)
        raise DataError(path, f"not a recognised image file (supported: {kinds})") from None
    except Image.DecompressionBombError as exc:  # a GIF frame over the host's own Pillow limit
        raise DataError(path, f"image too large: {exc}") from None
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt files
        raise DataError(path, f"cannot decode image ({_describe(exc)})") from None


# EXIF orientation -> the Pillow transpose that shows the image upright (as ImageOps.exif_transpose)
_TRANSPOSE = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}  # Image.Transpose values


def _orientation(image: PillowImage) -> int:
    """The EXIF orientation (1: upright) where ``Image.getexif`` finds it: a TIFF's own tags, the
    file's EXIF block, else XMP's ``tiff:Orientation``. Read here without Pillow's EXIF parser,
    which warns about damaged blocks; anything unreadable counts as upright."""
    tags = getattr(image, "tag_v2", None)
    if tags is not None:
        value = tags.get(EXIF_ORIENTATION)
    else:
        exif = image.info.get("exif")
        if exif is None and "Raw profile type exif" in image.info:  # PNG text chunk
            try:
                exif = bytes.fromhex("".join(image.info["Raw profile type exif"].split("\n")[3:]))
            except ValueError:
                exif = None
        value = _exif_orientation(exif) if isinstance(exif, bytes) else None
    if value is None:
        xmp = image.info.get("XML:com.adobe.xmp") or image.info.get("xmp")
        if isinstance(xmp, bytes):
            xmp = xmp.decode("utf-8", "replace")
        match = re.search(r'tiff:Orientation(="|>)([0-9])', xmp) if isinstance(xmp, str) else None
        value = int(match[2]) if match else None
    return value if isinstance(value, int) and value in range(1, 9) else 1


def _exif_orientation(exif: bytes) -> int | None:
    """The orientation tag of an EXIF block's first directory (TIFF layout, after an optional
    ``Exif\\0\\0``), or None where there is none or the block is damaged."""
    data = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 8:
        return None
    (offset,) = struct.unpack(order + "I", data[4:8])
    if offset + 2 > len(data):
        return None
    (count,) = struct.unpack(order + "H", data[offset:offset + 2])
    for start in range(offset + 2, min(offset + 2 + 12 * count, len(data) - 11), 12):
        tag, kind = struct.unpack(order + "HH", data[start:start + 4])
        if tag == EXIF_ORIENTATION:
            if kind == 3:  # SHORT: the value sits in the first two bytes of the value field
                return struct.unpack(order + "H", data[start + 8:start + 10])[0]
            if kind == 4:  # LONG
                return struct.unpack(order + "I", data[start + 8:start + 12])[0]
            return None
    return None


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


# -- what the Python API takes as an image: a path, a PIL image or an array -------------------
def check_channel_order(channel_order: Any) -> str:
    """``channel_order`` if it is "bgr" or "rgb"; SettingError otherwise."""
    if not isinstance(channel_order, str) or channel_order not in CHANNEL_ORDERS:
        raise SettingError(None, f"channel_order must be 'bgr' (OpenCV) or 'rgb' (PIL, matplotlib, skimage), "
                           f"got {channel_order!r}")
    return channel_order


def as_bgr(image: Any, channel_order: str = DEFAULT_CHANNEL_ORDER) -> np.ndarray:
    """A path, a NumPy array (gray, BGR/RGB per ``channel_order``, BGRA) or a PIL image -> BGR
    uint8; DataError for anything that cannot be read (a truncated or closed PIL image too)."""
    check_channel_order(channel_order)
    if isinstance(image, (str, Path)):
        return read_image(image)
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL image, without importing PIL
        return pil_to_bgr(image)
    if isinstance(image, np.ndarray):
        return decode_image_array(image, channel_order=channel_order)
    raise DataError(None, f"cannot read an image from {type(image).__name__}")


def as_pixels(image: Any, channel_order: str = DEFAULT_CHANNEL_ORDER) -> tuple[np.ndarray, str]:
    """Like :func:`as_bgr`, but an array is only checked, not converted: (pixels, their channel
    order). The aligner converts just the face crops, which keeps large pictures cheap."""
    check_channel_order(channel_order)
    if isinstance(image, np.ndarray):
        return image_pixels(image, channel_order), channel_order
    return as_bgr(image), "bgr"


def to_channels(pixels: np.ndarray, order: str, wanted: str) -> np.ndarray:
    """Any :func:`as_pixels` array (a crop) as 3-channel uint8 in the ``wanted`` order."""
    return to_rgb(pixels, order) if wanted == "rgb" else to_bgr(pixels, order)


def pil_to_bgr(image: Any) -> np.ndarray:
    """A PIL image as BGR uint8. A lazily opened image decodes here, so its file's problems
    (truncated, corrupt, closed, over the pixel limit) surface here, as DataError."""
    name = getattr(image, "filename", None) or None
    size = getattr(image, "size", (0, 0))
    limit = max_pixels_limit()
    if isinstance(size, tuple) and len(size) == 2 and size[0] * size[1] > limit:
        raise DataError(name, f"image is {size[0]}x{size[1]} = {size[0] * size[1]} pixels, over the limit of {limit}")
    try:
        rgb = np.asarray(image.convert("RGB"))
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, ValueError, SyntaxError ... for bad files
        raise DataError(name, f"cannot read the PIL image ({first_line(exc)})") from None
    return decode_image_array(rgb, channel_order="rgb")
