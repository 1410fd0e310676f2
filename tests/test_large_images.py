"""Large photos are decoded reduced and their landmarks come back in full-size pixels (issue 14.6)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import make_synthetic_set

import asmnet.formats.image as image_module
from asmnet import FaceAligner
from asmnet.cli import main
from asmnet.detection import box_iou
from asmnet.formats import read_pts
from asmnet.formats.image import read_image, read_image_reduced
from asmnet.geometry import tight_box


@pytest.fixture(scope="module")
def big_face(tmp_path_factory) -> dict:
    """One synthetic face scaled up 5x (480 x 480), as PNG, JPEG and a JPEG stored sideways (EXIF 6)."""
    from PIL import Image

    folder = make_synthetic_set(tmp_path_factory.mktemp("big") / "src", 1, size=96)
    small = cv2.imread(str(folder / "face_000.png"))
    big = cv2.resize(small, (480, 480), interpolation=cv2.INTER_CUBIC)
    pts = (read_pts(folder / "face_000.pts") - 1 + 0.5) * 5 - 0.5 + 1  # 1-based .pts, scaled about pixel centres
    out = {"array": big, "points": pts}
    for name in ("big.png", "big.jpg"):
        cv2.imwrite(str(folder / name), big)
        out[name] = folder / name
    sideways = Image.fromarray(np.ascontiguousarray(np.rot90(big[:, :, ::-1], 1)))  # shown upright after EXIF 6
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(folder / "turned.jpg", exif=exif, quality=95)
    out["turned.jpg"] = folder / "turned.jpg"
    return out


@pytest.mark.parametrize("name", ["big.png", "big.jpg", "turned.jpg"])
def test_reduced_decoding_keeps_the_full_size_and_the_content(big_face, name) -> None:
    full = read_image(big_face[name])
    small, size, factor = read_image_reduced(big_face[name], reduce_above=100 * 100)
    assert size == (480, 480) and full.shape == (480, 480, 3)
    # 5 at least; a JPEG may decode smaller (1/4 in the decoder, then 1/2)
    assert 5 <= factor <= 8 and small.shape[:2] == (-(-480 // factor),) * 2 and small.size <= 3 * 100 * 100
    again = cv2.resize(full, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(again.astype(int) - small).mean() < 6  # the same picture, upright, not a crop


def test_landmarks_of_a_reduced_photo_are_in_full_size_pixels(big_face, tmp_path, monkeypatch, capsys) -> None:
    aligner = FaceAligner()
    pts = big_face["points"]
    box = [pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()]
    reference = aligner(big_face["array"], boxes=[box], channel_order="bgr")[0]
    monkeypatch.setattr(image_module, "REDUCE_ABOVE_PIXELS", 160 * 160)  # 480 x 480 -> 3x smaller
    reduced = aligner(str(big_face["big.png"]), boxes=[box])[0]
    # face.box is the landmarks' tight box (not the given box echoed), in full-size pixels
    np.testing.assert_allclose(reduced.box, tight_box(reduced.landmarks))
    assert box_iou(reduced.box, box) > 0.7
    err = np.linalg.norm(reduced.landmarks - reference.landmarks, axis=1).mean()
    assert err < 0.03 * (box[2] - box[0]), err  # the same face, within a few full-size pixels
    rc = main(["predict", str(big_face["big.jpg"]), "--json", str(tmp_path / "r.jsonl")])
    assert rc == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "r.jsonl").read_text())
    assert record["image_size"] == [480, 480]


def test_pillow_warnings_do_not_leak(tmp_path) -> None:
    """Issue 14.12: a JPEG whose EXIF block is damaged decodes; the command line shows none of
    Pillow's warnings about it. (The library leaves them to the host's warning filters: issue
    25.14, no process-wide state changed while decoding.)"""
    import io
    import struct
    import warnings

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    # an EXIF IFD whose second tag (Make, 400 bytes) points beyond the end of the block
    tiff = (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2) + struct.pack("<HHII", 0x0112, 3, 1, 1)
            + struct.pack("<HHII", 0x010F, 2, 400, 100) + b"\x00" * 4)
    app1 = b"Exif\x00\x00" + tiff
    (tmp_path / "exif.jpg").write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:])
    from asmnet.cli import _notes_as_lines

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _notes_as_lines():
            image = read_image(tmp_path / "exif.jpg")
            read_image_reduced(tmp_path / "exif.jpg", reduce_above=8 * 8)
    assert image.shape == (16, 16, 3)
    assert [str(w.message) for w in caught] == []
