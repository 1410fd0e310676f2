"""Issue 25.14 and 25.18: decoding keeps its own pixel limit, for images and video frames alike,
and never changes Pillow's process-wide settings (Image.MAX_IMAGE_PIXELS,
ImageFile.LOAD_TRUNCATED_IMAGES) nor the warnings filters, which other threads of the host rely on."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

from asmnet.cli import main
from asmnet.errors import DataError
from asmnet.formats import read_image
from asmnet.formats.image import MAX_PIXELS_ENV
from asmnet.formats.video import open_video
from asmnet.video import FaceTracker


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` (a decompression bomb's header) with no real data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def saved(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def test_decoding_leaves_pillow_settings_and_warning_filters_alone(tmp_path: Path, monkeypatch) -> None:
    """While asmnet decodes, another thread sees the host's settings: a 400 MP bomb header still
    raises DecompressionBombError there, and the host's LOAD_TRUNCATED_IMAGES=True stays True."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(20_000, 20_000))
    photo = saved(Image.fromarray(np.full((32, 48, 3), 90, np.uint8)), tmp_path / "photo.png")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    host = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters))
    seen = []
    load = ImageFile.ImageFile.load

    def spying_load(image):  # runs in the middle of asmnet's decoding
        seen.append((Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters)))
        with pytest.raises(Image.DecompressionBombError):
            Image.open(bomb)
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spying_load)
    assert read_image(photo).shape == (32, 48, 3)
    assert seen and all(state == host for state in seen)


def test_the_pixel_limit_is_asmnets_not_pillows(tmp_path: Path, monkeypatch) -> None:
    photo = saved(Image.fromarray(np.full((64, 64, 3), 90, np.uint8)), tmp_path / "photo.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow alone would refuse 4096 pixels
    assert read_image(photo).shape == (64, 64, 3)
    with pytest.raises(DataError, match="64x64 = 4096 pixels, over the limit of 4000"):
        read_image(photo, max_pixels=4000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # nor does lifting Pillow's lift ours
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(20_000, 20_000))
    with pytest.raises(DataError, match="over the limit of 100000000"):
        read_image(bomb)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "GIF", "BMP"])
def test_truncated_files_refused_whatever_the_host_set(tmp_path: Path, monkeypatch, fmt: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format=fmt)
    whole = tmp_path / f"whole.{fmt.lower()}"
    whole.write_bytes(buffer.getvalue())
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    for host_setting in (False, True):
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", host_setting)
        assert read_image(whole).shape == (64, 64, 3)  # a complete file is never called truncated
        with pytest.raises(DataError, match=f"^{cut}: cannot decode image") as info:
            read_image(cut)
        assert "truncated" in str(info.value) or fmt in ("WEBP", "TIFF")  # libwebp / libtiff say it their way
        assert ImageFile.LOAD_TRUNCATED_IMAGES is host_setting


def test_lossless_formats_decode_exactly(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for fmt, suffix in (("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tif"), ("PPM", "ppm"), ("WEBP", "webp")):
        options = {"lossless": True} if fmt == "WEBP" else {}
        path = saved(Image.fromarray(rgb), tmp_path / f"x.{suffix}", format=fmt, **options)
        np.testing.assert_array_equal(read_image(path), rgb[:, :, ::-1], err_msg=fmt)


def test_exif_orientation_from_xmp_and_damaged_exif(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    turned = read_image(saved(image, tmp_path / "xmp.jpg", xmp=xmp))
    assert turned.shape == (40, 20, 3)
    exif = Image.Exif()
    exif[0x0112] = 8
    assert read_image(saved(image, tmp_path / "exif.png", exif=exif.tobytes())).shape == (40, 20, 3)
    damaged = saved(image, tmp_path / "damaged.jpg", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f")
    with warnings.catch_warnings():  # Pillow's own "Corrupt EXIF data" goes to the host's filters
        warnings.simplefilter("ignore")
        assert read_image(damaged).shape == (20, 40, 3)  # unreadable EXIF: upright


def small_video(path: Path, size: tuple[int, int] = (64, 48), frames: int = 3) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    if not writer.isOpened():
        pytest.skip("this OpenCV cannot write MJPG AVI files")
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 40 * i, np.uint8))
    writer.release()
    return path


def test_video_frames_over_the_limit_are_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    video = small_video(tmp_path / "clip.avi")
    cap = open_video(video)
    assert cap.isOpened()
    cap.release()
    monkeypatch.setenv(MAX_PIXELS_ENV, "3000")
    with pytest.raises(DataError, match=r"clip.avi: video frames are 64x48 = 3072 pixels, over the limit of 3000"):
        open_video(video)
    tracker = FaceTracker.__new__(FaceTracker)  # the limit applies before the tracker is used
    with pytest.raises(DataError, match="over the limit of 3000"):
        next(tracker.track(video))
    with pytest.raises(DataError, match="over the limit of 3071"):
        open_video(video, max_pixels=3071)
    assert open_video(video, max_pixels=3072).isOpened()


def test_cli_names_the_pixel_limit_for_a_video_with_out(tmp_path: Path, monkeypatch, capsys) -> None:
    video = small_video(tmp_path / "clip.avi")
    monkeypatch.setenv(MAX_PIXELS_ENV, "3000")
    status = main(["predict", str(video), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2  # its only input failed
    assert "video frames are 64x48 = 3072 pixels, over the limit of 3000" in err
    assert "mp4v" not in err and "Traceback" not in err
