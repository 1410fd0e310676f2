"""Reliability: every bad input gives one clear line, a batch goes on, nothing is lost.

A corpus of broken and unusual files is written to a temporary folder and sent through
``asmnet predict``, ``asmnet evaluate`` and ``asmnet train`` (in-process, through
:func:`asmnet.cli.main`) and through the Python API. The parsers and the crop geometry get
property-based tests: arbitrary input raises nothing but the documented errors.

The network is a tiny one trained here for one epoch (or the shipped default model where a test
says so); the numbers it predicts do not matter, only what happens to the bad files.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import make_synthetic_set, template_face
from conftest import write_pts as write_pts_file
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from asmnet.cli import main
from asmnet.errors import DataError, ModelError
from asmnet.formats import load_faces, read_image, read_pose_csv, read_pts
from asmnet.formats.face_record import MAX_COORDINATE
from asmnet.formats.wflw import WFLW_ATTRIBUTES, parse_wflw_list
from asmnet.geometry import crop_matrix, invert_affine, transform_points, warp
from asmnet.markup import markup_for
from asmnet.nn.checkpoint import load_checkpoint
from asmnet.runtime import DEFAULT_MODEL_DIR, ModelInfo
from asmnet.training.augment import AugmentConfig, make_sample

SHIPPED = (DEFAULT_MODEL_DIR / "model.json").exists()
needs_shipped_model = pytest.mark.skipif(not SHIPPED, reason=f"no shipped model at {DEFAULT_MODEL_DIR}")
TRAIN_ARGS = ["--input-size", "64", "--width", "0.5", "--epochs", "1", "--batch-size", "4", "--workers", "0",
              "--warmup-epochs", "0", "--device", "cpu", "--val-fraction", "0.2"]
HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a loaded 2-core machine more threads make tiny convolutions 50x slower."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """``asmnet ARGS`` in-process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def lines_naming(text: str, path: Path | str, prefix: str = "") -> list[str]:
    """The lines of ``text`` that start with ``prefix`` followed by ``path`` and a colon."""
    pattern = re.compile(re.escape(prefix + str(path)) + r"(:\d+)?: ")
    return [line for line in text.splitlines() if pattern.match(line)]


def assert_one_line_each(err: str, expected: dict[Path, str], prefix: str) -> None:
    """Each path is named by exactly one ``prefix`` line that holds its problem words; no traceback."""
    assert "Traceback" not in err, err
    for path, words in expected.items():
        found = lines_naming(err, path, prefix)
        assert len(found) == 1, (path, found, err)
        assert words.lower() in found[0].lower(), (words, found[0])


# ------------------------------------------------------------------ the corpus


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but which holds almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def write_video(path: Path, fourcc: str, frames: list[np.ndarray]) -> bool:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (w, h))
    if not writer.isOpened():
        return False
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path.is_file() and path.stat().st_size > 0


N_FRAMES = 20


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Images and videos, good and bad, in one folder (and a sub-folder)."""
    root = tmp_path_factory.mktemp("corpus") / "inputs"
    make_synthetic_set(root / "faces", 2, seed=3, size=64)
    face = cv2.imread(str(root / "faces" / "face_000.png"))
    shutil.rmtree(root / "faces")
    (root / "sub").mkdir(parents=True)
    rgb = Image.fromarray(face[:, :, ::-1].copy())
    files: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        files[name] = root / name
        files[name].write_bytes(data)

    put("good.jpg", encoded(rgb, "JPEG", quality=95))
    put("zero.jpg", b"")
    put("notes.jpg", b"these are notes, not a picture\n")
    jpeg, png = encoded(rgb, "JPEG"), encoded(rgb, "PNG")
    put("cut.jpg", jpeg[: len(jpeg) // 2])
    put("sub/cut.png", png[: len(png) // 2])
    put("tiny.png", encoded(Image.new("RGB", (1, 1), (9, 8, 7)), "PNG"))
    put("deep.png", encoded(Image.fromarray(face[:, :, 1].astype(np.uint16) * 257), "PNG"))
    put("gray.png", encoded(rgb.convert("L"), "PNG"))
    put("alpha.png", encoded(rgb.convert("RGBA"), "PNG"))
    put("cmyk.jpg", encoded(rgb.convert("CMYK"), "JPEG"))
    put("palette.png", encoded(rgb.convert("P"), "PNG"))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown after a 90 degree clockwise turn
    put("sub/turned.jpg", encoded(rgb.crop((0, 0, 64, 40)), "JPEG", exif=exif.tobytes()))
    put("bomb.png", png_claiming(50_000, 50_000))
    frames = [np.roll(face, 2 * i, axis=1) for i in range(N_FRAMES)]
    assert write_video(root / "clip.avi", "MJPG", frames)  # OpenCV's own MJPEG writer: always there
    data = (root / "clip.avi").read_bytes()
    files["clip.avi"] = root / "clip.avi"
    middle = len(data) // 3
    put("smashed.avi", data[:middle] + bytes(range(256)) * 8 + data[middle + 2048 :])
    put("cut.avi", data[: len(data) // 2])
    if write_video(root / "clip.mp4", "mp4v", frames):  # needs FFmpeg
        mp4 = (root / "clip.mp4").read_bytes()
        put("cut.mp4", mp4[: len(mp4) // 2])
        (root / "clip.mp4").unlink()
    files["missing"] = root / "no_such_photo.jpg"
    return files


BAD_IMAGES = {
    "zero.jpg": "empty file (0 bytes)",
    "notes.jpg": "not a recognised image file",
    "cut.jpg": "truncated",
    "sub/cut.png": "truncated",
    "bomb.png": "50000x50000",
}
GOOD_IMAGES = ("good.jpg", "tiny.png", "deep.png", "gray.png", "alpha.png", "cmyk.jpg", "palette.png",
               "sub/turned.jpg")


def test_corpus_images_decode_or_fail_in_one_line(corpus: dict[str, Path]) -> None:
    for name in GOOD_IMAGES:
        image = read_image(corpus[name])
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
    assert read_image(corpus["tiny.png"]).shape == (1, 1, 3)
    assert read_image(corpus["sub/turned.jpg"]).shape == (64, 40, 3)  # EXIF orientation applied
    for name, words in BAD_IMAGES.items():
        with pytest.raises(DataError) as info:
            read_image(corpus[name])
        message = str(info.value)
        assert message.startswith(f"{corpus[name]}: ") and "\n" not in message and words in message
    with pytest.raises(DataError, match="not a recognised image"):
        read_image(corpus["clip.avi"])


# ------------------------------------------------------------------ a tiny model, trained by `asmnet train`


def write_bad_300w(root: Path) -> dict[Path, str]:
    """A 300W-layout folder of 12 good faces and many broken ones; returns {bad file: problem}."""
    make_synthetic_set(root, 12, seed=1, size=64)
    good_image = (root / "face_000.png").read_bytes()
    good = read_pts(root / "face_000.pts")
    lines = (root / "face_000.pts").read_text().splitlines()
    body = lines[3:71]

    def pts(stem: str, text: str, image: bytes = good_image) -> Path:
        (root / f"{stem}.png").write_bytes(image)
        path = root / f"{stem}.pts"
        path.write_text(text)
        return path

    same_eyes = good.copy()
    same_eyes[45] = same_eyes[36]
    write_pts_file(root / "eyes.pts", same_eyes)
    (root / "eyes.png").write_bytes(good_image)
    bad = {
        pts("brace", "\n".join(lines[:-1]) + "\n"): "missing '}'",
        pts("count", "\n".join(lines[:3] + body[:67] + ["}"]) + "\n"): "n_points is 68 but 67 points follow",
        pts("few", "\n".join(["{"] + body[:60] + ["}"]) + "\n"): "has 60 points, expected 68",
        pts("nan", "\n".join(lines[:3] + ["nan 4"] + body[1:] + ["}"]) + "\n"): "not finite",
        pts("text", "\n".join(lines[:3] + ["x1 y1"] + body[1:] + ["}"]) + "\n"): "not a number",
        pts("dot", "{\n" + "7 7\n" * 68 + "}\n"): "within one pixel",
        pts("far", "\n".join(lines[:3] + ["1e300 2"] + body[1:] + ["}"]) + "\n"): "beyond",
        root / "eyes.pts": "outer eye corners",
        pts("lonely", (root / "face_001.pts").read_text(), image=b"")
        .with_suffix(".png"): "empty file",
        pts("halfimg", (root / "face_002.pts").read_text(), image=good_image[: len(good_image) // 2])
        .with_suffix(".png"): "truncated",
    }
    rows = (root / "pose.csv").read_text().splitlines()
    bad_stems = ("brace", "count", "few", "nan", "text", "dot", "far", "eyes", "lonely", "halfimg")
    (root / "pose.csv").write_text("\n".join(rows[:-1] + [f"{s},1,2,3" for s in bad_stems]) + "\n")
    # face_011 lost its pose row: kept, without pose, and said so
    bad[root / "pose.csv"] = "no pose row for 'face_011' (face kept without pose)"
    # a sub-folder whose pose.csv repeats a stem, and one .mat file without landmarks
    twin = root / "twin"
    twin.mkdir()
    for stem in ("face_003", "face_004"):
        shutil.copy(root / f"{stem}.png", twin)
        shutil.copy(root / f"{stem}.pts", twin)
    (twin / "pose.csv").write_text("stem,yaw,pitch,roll\nface_003,1,2,3\nface_004,1,2,3\nface_003,4,5,6\n")
    bad[twin / "pose.csv"] = "'face_003' repeats line 2"
    scipy_io = pytest.importorskip("scipy.io")
    (twin / "empty.png").write_bytes(good_image)
    scipy_io.savemat(twin / "empty.mat", {"Pose_Para": np.zeros((1, 7))})
    bad[twin / "empty.mat"] = "no landmarks"
    return bad


@pytest.fixture(scope="module")
def bad_300w(tmp_path_factory) -> tuple[Path, dict[Path, str]]:
    root = tmp_path_factory.mktemp("data") / "mixed"
    return root, write_bad_300w(root)


@pytest.fixture(scope="module")
def trained(bad_300w, tmp_path_factory) -> tuple[Path, int, str]:
    """`asmnet train` on the mixed folder: run folder, exit status, stderr."""
    out = tmp_path_factory.mktemp("runs") / "mixed"
    rc, _, err = run_cli(["train", "--data", bad_300w[0], "--out", out, *TRAIN_ARGS])
    return out, rc, err


@pytest.fixture(scope="module")
def package(trained, tmp_path_factory) -> Path:
    """The trained network as a model folder (torch backend) with identity box calibrations."""
    from asmnet.detection import DETECTORS, BoxCalibration, make_detector

    try:
        make_detector("auto")
    except ModelError as exc:
        pytest.skip(f"no face detector here: {exc}")
    folder = tmp_path_factory.mktemp("package") / "tiny"
    folder.mkdir()
    ckpt_path = trained[0] / "best.pt"
    info = ModelInfo.from_checkpoint(load_checkpoint(ckpt_path), ckpt_path)
    info.calibrations = {name: BoxCalibration.identity().to_dict() for name in DETECTORS}
    (folder / "model.json").write_text(json.dumps(info.to_json()))
    shutil.copy(ckpt_path, folder / "weights.pt")
    return folder


def split_notes(bad: dict[Path, str]) -> tuple[dict[Path, str], dict[Path, str]]:
    """The unusable files, and the notes (a face kept without its pose: not a failure)."""
    notes = {p: w for p, w in bad.items() if "kept without pose" in w}
    return {p: w for p, w in bad.items() if p not in notes}, notes


def test_train_uses_the_good_faces_and_lists_each_bad_file(trained, bad_300w) -> None:
    out, rc, err = trained
    root, bad = bad_300w
    bad, notes = split_notes(bad)
    assert_one_line_each(err, bad, "skipped: ")
    assert_one_line_each(err, notes, "note: ")
    data_line = next(line for line in err.splitlines() if line.startswith("data: "))
    n_train, n_val = (int(n) for n in re.findall(r"(\d+) (?:training|validation) faces", data_line))
    assert n_train + n_val == 14  # 12 good faces + the two in twin/ (they lost their pose, not their points)
    assert f"{len(bad)} files skipped, 1 faces kept without pose" in data_line  # issue 14.12: notes apart
    assert load_checkpoint(out / "last.pt")["epoch"] == 0
    assert rc == 1
    tail = err.rsplit("epoch 1/1", 1)[1]
    assert all(str(path) in tail for path in bad), tail


def test_load_faces_lists_each_bad_file_and_keeps_the_rest(bad_300w) -> None:
    root, bad = bad_300w
    faces, errors = load_faces(root, n_points=68)
    assert len(faces) == 16  # 12 + 2 in twin/ + the two whose images are broken (not decoded here)
    by_file: dict[str, list[str]] = {}
    for error in errors:
        assert "\n" not in str(error)
        by_file.setdefault(error.path, []).append(str(error))
    # the two unreadable images are found later, when pixels are decoded
    annotation_problems = {p: w for p, w in bad.items() if p.suffix != ".png"}
    assert set(by_file) == {str(p) for p in annotation_problems}
    for path, words in annotation_problems.items():
        assert len(by_file[str(path)]) == 1 and words in by_file[str(path)][0]
    twin = [f for f in faces if f.key.startswith("mixed/twin/")]
    assert len(twin) == 2 and all(f.pose is None for f in twin)
    assert next(f for f in faces if f.key == "mixed/face_011").pose is None


def test_evaluate_lists_each_bad_file_once_and_goes_on(trained, bad_300w, tmp_path) -> None:
    root, bad = bad_300w
    bad, notes = split_notes(bad)
    out_json = tmp_path / "eval.json"
    rc, out, err = run_cli(["evaluate", "--data", root, "--model", trained[0] / "best.pt", "--json", out_json])
    assert rc == 1
    assert_one_line_each(err, bad, "asmnet: skipped: ")
    assert_one_line_each(err, notes, "asmnet: note: ")
    assert re.search(r"model best: 14 faces", out), out
    result = json.loads(out_json.read_text())
    assert result["n"] == 14 and len(result["annotation_errors"]) == len(bad) - 2
    assert len(result["unreadable"]) == 2


def test_evaluate_zero_normalising_distance_is_one_line(trained, tmp_path) -> None:
    root = make_synthetic_set(tmp_path / "flat", 3, size=64)
    points = read_pts(root / "face_000.pts")
    points[:, 1] = points[0, 1]  # all on one row: the tight box has no area
    write_pts_file(root / "face_000.pts", points)
    rc, out, err = run_cli(["evaluate", "--data", root, "--model", trained[0] / "best.pt", "--norm", "box"])
    assert rc == 1 and "Traceback" not in err
    assert_one_line_each(err, {root / "face_000.png": "box normalising distance"}, "asmnet: skipped: ")
    assert "2 faces" in out


def test_evaluate_and_train_on_a_wflw_list_with_bad_lines(tmp_path) -> None:
    root = tmp_path / "wflw"
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(5)
    base = np.vstack([template_face(), rng.uniform(0.2, 0.8, (30, 2))])  # 98 points
    lines = []
    for i in range(10):
        image = np.full((64, 64, 3), 60, np.uint8)
        pts = base * rng.uniform(28, 36) + rng.uniform(4, 20, 2)
        cv2.fillConvexPoly(image, cv2.convexHull(pts.astype(np.int32)), (150, 160, 170))
        cv2.imwrite(str(images / f"{i}.png"), image)
        box = [*pts.min(0), *pts.max(0)]
        lines.append(" ".join(f"{v:.3f}" for v in [*pts.ravel(), *box]) + " 0 1 0 0 0 0 " + f"images/{i}.png")
    tokens = lines[0].split()
    bad_lines = {
        " ".join(tokens[:-2] + tokens[-1:]): "expected 207 fields",
        " ".join(tokens[:5] + ["five"] + tokens[6:]): "not a number",
        " ".join(tokens[:201] + ["2"] + tokens[202:]): "must be 0 or 1",
        " ".join(tokens[:-1] + ["nowhere.png"]): "image not found",
        " ".join(tokens[:-1] + ["."]): "names no file",
    }
    listing = root / "list.txt"
    listing.write_text("\n".join(lines + list(bad_lines)) + "\n")
    faces, errors = load_faces(listing)
    assert len(faces) == 10 and [e.line for e in errors] == [11, 12, 13, 14, 15]
    for error, words in zip(errors, bad_lines.values()):
        assert words in str(error) and str(error).startswith(f"{listing}:{error.line}: ")
    run = tmp_path / "run98"
    rc, _, err = run_cli(["train", "--data", listing, "--out", run, "--points", "98", "--label-origin", "0",
                          *TRAIN_ARGS])
    assert rc in (0, 1) and "Traceback" not in err
    for error in errors:
        assert sum(line == f"skipped: {error}" for line in err.splitlines()) == 1, err
    rc, out, err = run_cli(["evaluate", "--data", listing, "--model", run / "best.pt"])
    assert rc == 1 and "10 faces" in out
    for error in errors:
        assert sum(line == f"asmnet: skipped: {error}" for line in err.splitlines()) == 1, err


# ------------------------------------------------------------------ predict


def expected_failures(corpus: dict[str, Path]) -> dict[Path, str]:
    expected = {corpus[name]: words for name, words in BAD_IMAGES.items()}
    expected[corpus["missing"]] = "no such file or folder"
    expected[corpus["cut.avi"]] = "stopped at frame"
    if "cut.mp4" in corpus:
        expected[corpus["cut.mp4"]] = "video"
    return expected


def failure_list(err: str) -> list[str]:
    """The failures listed at the end of a predict run."""
    tail = err.split("asmnet: failed inputs:\n", 1)
    assert len(tail) == 2, err
    return [line[2:] for line in tail[1].splitlines() if line.startswith("  ")]


def test_predict_corpus_goes_on_past_every_bad_input(corpus, package, tmp_path) -> None:
    folder = corpus["good.jpg"].parent
    videos = [corpus[name] for name in ("clip.avi", "smashed.avi", "cut.avi", "cut.mp4") if name in corpus]
    out_json, out_dir = tmp_path / "out.jsonl", tmp_path / "annotated"
    rc, _, err = run_cli(["predict", folder, *videos, corpus["missing"], "--model", package, "--backend", "torch",
                          "--json", out_json, "--out", out_dir])
    assert rc == 1
    expected = expected_failures(corpus)
    assert_one_line_each(err, expected, "asmnet: failed: ")
    listed = failure_list(err)
    failed_lines = [line.removeprefix("asmnet: failed: ") for line in err.splitlines()
                    if line.startswith("asmnet: failed: ")]
    assert listed == failed_lines  # the same lines again, at the end
    records = [json.loads(line) for line in out_json.read_text().splitlines()]
    images = {r["file"]: r for r in records if r["frame"] is None}
    assert set(images) == {str(corpus[name]) for name in GOOD_IMAGES}
    assert images[str(corpus["sub/turned.jpg"])]["image_size"] == [40, 64]  # shown upright
    assert images[str(corpus["tiny.png"])]["image_size"] == [1, 1]
    frames = {}
    for r in records:
        if r["frame"] is not None:
            frames.setdefault(r["file"], []).append(r["frame"])
    assert frames[str(corpus["clip.avi"])] == list(range(N_FRAMES))
    cut = frames[str(corpus["cut.avi"])]
    assert 0 < len(cut) < N_FRAMES and cut == list(range(len(cut)))  # the frames before the cut are kept
    smashed = frames.get(str(corpus["smashed.avi"]), [])
    smashed_lines = lines_naming(err, corpus["smashed.avi"], "asmnet: failed: ")
    assert len(smashed) == N_FRAMES or len(smashed_lines) == 1  # all read, or said where it stopped
    n_failed = len(expected) + len(smashed_lines)
    assert re.search(rf"asmnet: \d+ done, 0 already in the output, {n_failed} failed", err)
    for name in GOOD_IMAGES:
        assert (out_dir / name).stat().st_size > 0  # the input's relative path and extension


def test_python_api_raises_the_same_one_line_errors(corpus, package, tmp_path) -> None:
    from asmnet import FaceAligner

    rc, _, err = run_cli(["predict", *(corpus[n] for n in BAD_IMAGES), "--model", package, "--backend", "torch"])
    assert rc == 2  # nothing could be done
    aligner = FaceAligner(package, backend="torch")
    for name in BAD_IMAGES:
        with pytest.raises(DataError) as info:
            aligner(str(corpus[name]))
        assert f"asmnet: failed: {info.value}" in err.splitlines()
    assert isinstance(aligner(str(corpus["sub/turned.jpg"])), list)


def test_predict_workers_give_the_same_records_and_failures(corpus, package, tmp_path) -> None:
    folder = corpus["good.jpg"].parent
    results = []
    for workers in ("1", "2"):
        out_json = tmp_path / f"w{workers}.jsonl"
        rc, _, err = run_cli(["predict", folder, "--model", package, "--backend", "torch", "--workers", workers,
                              "--json", out_json])
        assert rc == 1 and "Traceback" not in err
        records = sorted((json.loads(line) for line in out_json.read_text().splitlines()), key=lambda r: r["file"])
        results.append((records, sorted(failure_list(err))))
    assert results[0] == results[1]
    assert len(results[0][1]) == len(BAD_IMAGES)


def test_predict_bad_model_fails_at_once_even_with_workers(corpus, trained, tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes((trained[0] / "best.pt").read_bytes()[:4000])
    folder = corpus["good.jpg"].parent
    rc, _, err = run_cli(["predict", folder, "--model", bad, "--workers", "2"])  # used to respawn workers forever
    assert rc == 2
    assert err.strip().splitlines() == [line for line in err.strip().splitlines() if line.startswith("asmnet: ")]
    assert lines_naming(err, bad, "asmnet: error: ") and "corrupt or truncated" in err


def test_predict_unwritable_outputs_are_one_line_errors(corpus, package, tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for option in ("--json", "--out"):
        rc, _, err = run_cli(["predict", corpus["good.jpg"], "--model", package, "--backend", "torch",
                              option, blocker / "inside"])
        assert rc == 2 and "Traceback" not in err, err
        assert err.strip().startswith("asmnet: error: ") and len(err.strip().splitlines()) == 1, err


def test_predict_stderr_in_a_real_process_has_no_stray_lines(corpus, package, tmp_path) -> None:
    """Native libraries (FFmpeg, libjpeg) must not add their own lines to the one-line errors."""
    inputs = [corpus[name] for name in (*BAD_IMAGES, "good.jpg", "cut.avi", "cut.mp4") if name in corpus]
    code = "import sys; from asmnet.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "predict", *map(str, inputs), "--model", str(package),
                           "--backend", "torch", "--json", str(tmp_path / "o.jsonl")],
                          capture_output=True, text=True, timeout=120, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr
    known = ("asmnet: ", "  ", str(corpus["cut.avi"]) + ": ")  # failures, the final list, video statistics
    stray = [line for line in proc.stderr.splitlines() if not line.startswith(known)]
    assert stray == [], proc.stderr


def test_pixel_limit_is_configurable_and_checked_once(corpus, package, monkeypatch) -> None:
    good = corpus["good.jpg"]  # 64 x 64 = 4096 pixels
    args = ["predict", good, corpus["tiny.png"], "--model", package, "--backend", "torch"]
    monkeypatch.setenv("ASMNET_MAX_PIXELS", "4095")
    rc, _, err = run_cli(args)
    assert rc == 1
    assert_one_line_each(err, {good: "over the limit of 4095 (raise it with max_pixels or ASMNET_MAX_PIXELS)"},
                         "asmnet: failed: ")
    monkeypatch.setenv("ASMNET_MAX_PIXELS", "4096")
    assert run_cli(args)[0] == 0
    monkeypatch.setenv("ASMNET_MAX_PIXELS", "a lot")
    rc, _, err = run_cli(args)
    assert rc == 2 and err.strip().splitlines() == [
        "asmnet: error: ASMNET_MAX_PIXELS must be a positive whole number, got 'a lot'"]


@needs_shipped_model
def test_shipped_model_predicts_real_faces_past_the_bad_files(corpus, tmp_path) -> None:
    skdata = pytest.importorskip("skimage.data", reason="the photo comes from scikit-image")
    from asmnet import FaceAligner

    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(skdata.astronaut()).save(photo, quality=92)
    out_json = tmp_path / "out.jsonl"
    bad = [corpus[name] for name in BAD_IMAGES]
    rc, _, err = run_cli(["predict", photo, *bad, corpus["missing"], "--json", out_json])
    assert rc == 1
    expected = {corpus[name]: words for name, words in BAD_IMAGES.items()} | {corpus["missing"]: "no such file"}
    assert_one_line_each(err, expected, "asmnet: failed: ")
    records = [json.loads(line) for line in out_json.read_text().splitlines()]
    assert [r["file"] for r in records] == [str(photo)] and records[0]["faces"]
    aligner = FaceAligner()
    for path in bad:
        with pytest.raises(DataError) as info:
            aligner(str(path))
        assert f"asmnet: failed: {info.value}" in err.splitlines()


@needs_shipped_model
def test_shipped_model_reads_every_image_kind_alike(tmp_path) -> None:
    """Real faces: the astronaut as gray, 16-bit, RGBA, CMYK, palette and EXIF-rotated files give the
    landmarks of the plain photo (so orientation and bit depth are handled before the network)."""
    skdata = pytest.importorskip("skimage.data", reason="the photo comes from scikit-image")
    from asmnet import FaceAligner

    rgb = Image.fromarray(skdata.astronaut())
    aligner = FaceAligner()
    plain = tmp_path / "plain.png"
    rgb.save(plain)
    found = aligner(str(plain))
    assert found, "no face found on the astronaut"
    box = max((face.box for face in found), key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    reference = aligner(str(plain), boxes=[box])[0].landmarks
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned; shown after a 90 degree counter-clockwise turn
    turned = rgb.transpose(Image.Transpose.ROTATE_270)
    variants = {  # file, what to save, options, largest landmark difference in pixels (measured: <= 0.9)
        "gray.png": (rgb.convert("L"), {}, 3.0),
        "deep.png": (Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257), {}, 3.0),
        "alpha.png": (rgb.convert("RGBA"), {}, 0.01),
        "cmyk.jpg": (rgb.convert("CMYK"), {"quality": 95}, 2.0),
        "palette.png": (rgb.convert("P", palette=Image.Palette.ADAPTIVE), {}, 3.0),
        "turned.jpg": (turned, {"exif": exif.tobytes(), "quality": 95}, 2.0),
    }
    for name, (image, options, tolerance) in variants.items():
        image.save(tmp_path / name, **options)
        landmarks = aligner(str(tmp_path / name), boxes=[box])[0].landmarks
        assert np.abs(landmarks - reference).max() < tolerance, name
    turned.save(tmp_path / "sideways.jpg", quality=95)  # the same pixels without the tag: not the same face
    assert np.abs(aligner(str(tmp_path / "sideways.jpg"), boxes=[box])[0].landmarks - reference).max() > 10


# ------------------------------------------------------------------ property-based: parsers

FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
GARBAGE = st.sampled_from(["", "x", "1,5", "1_0", "0x10", "--1", "1e", "nan", "-inf", "½"])


@HYPOTHESIS
@given(values=st.lists(st.tuples(FLOATS | GARBAGE, FLOATS | GARBAGE), min_size=0, max_size=70),
       declared=st.none() | st.integers(0, 80), close=st.booleans(), crlf=st.booleans())
def test_read_pts_reads_exactly_what_was_written_or_says_why(tmp_path_factory, values, declared, close, crlf) -> None:
    path = tmp_path_factory.getbasetemp() / "prop.pts"
    body, rows, numeric = [], [], True
    for pair in values:
        line = " ".join(v if isinstance(v, str) else repr(v) for v in pair)
        body.append(line)
        if not line.strip():
            continue  # a blank line: skipped
        numeric = numeric and all(not isinstance(v, str) and np.isfinite(v) for v in pair)
        rows.append(pair)
    head = ["version: 1"] + ([f"n_points: {declared}"] if declared is not None else [])
    text = head + ["{"] + body + (["}"] if close else [])
    path.write_text(("\r\n" if crlf else "\n").join(text) + "\n", encoding="utf-8")
    well_formed = close and numeric and rows and (declared is None or declared == len(rows))
    try:
        points = read_pts(path)
    except DataError as exc:
        assert not well_formed, exc
        assert str(exc).startswith(f"{path}") and "\n" not in str(exc)
    else:
        assert well_formed
        np.testing.assert_array_equal(points, np.array(rows, dtype=np.float64))


STEMS = st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=6)


@HYPOTHESIS
@given(rows=st.lists(st.tuples(STEMS, FLOATS | GARBAGE, FLOATS | GARBAGE, FLOATS | GARBAGE), max_size=8),
       order=st.permutations(["stem", "yaw", "pitch", "roll"]))
def test_read_pose_csv_gives_every_row_or_says_why(tmp_path_factory, rows, order) -> None:
    path = tmp_path_factory.getbasetemp() / "pose.csv"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(order)
    expected: dict[str, list[float]] = {}
    well_formed = True
    for stem, *angles in rows:
        fields = dict(zip(("stem", "yaw", "pitch", "roll"), [stem, *(a if isinstance(a, str) else repr(a)
                                                                      for a in angles)]))
        writer.writerow([fields[name] for name in order])
        if not any(value.strip() for value in fields.values()):
            continue  # a blank row is skipped
        key = stem.strip()
        numbers = [None if isinstance(a, str) else a for a in angles]
        if not key or key in expected or not all(n is not None and np.isfinite(n) for n in numbers):
            well_formed = False
        expected[key] = numbers
    path.write_text(buffer.getvalue(), encoding="utf-8")
    try:
        poses = read_pose_csv(path)
    except DataError as exc:
        assert not well_formed, exc
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
    else:
        assert well_formed
        assert {k: v.tolist() for k, v in poses.items()} == expected


def wflw_tokens(points: np.ndarray) -> list[str]:
    box = [*points.min(0), *points.max(0)]
    return [repr(float(v)) for v in [*points.ravel(), *box]] + ["0"] * 6 + ["img.png"]


@HYPOTHESIS
@given(seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([0.0, 1e-3, 1.0, 300.0, 1e8]),
       edits=st.lists(st.tuples(st.integers(0, 206), st.sampled_from(["drop", "dup", "text", "nan", "flag",
                                                                       "blank-path", "huge"])), max_size=2))
def test_wflw_line_parses_or_is_one_error(tmp_path_factory, seed, scale, edits) -> None:
    folder = tmp_path_factory.getbasetemp() / "wflw_prop"
    folder.mkdir(exist_ok=True)
    (folder / "img.png").write_bytes(b"")
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1, 1, (98, 2)) * scale + rng.uniform(-1, 1, 2) * scale
    tokens = wflw_tokens(points)
    for index, kind in edits:
        if kind == "drop" and tokens:
            tokens.pop(index % len(tokens))
        elif kind == "dup" and tokens:
            tokens.insert(index % len(tokens), tokens[index % len(tokens)])
        elif kind == "text":
            tokens[index % 200 if len(tokens) > 200 else 0] = "x"
        elif kind == "nan":
            tokens[index % 196 if len(tokens) > 196 else 0] = "nan"
        elif kind == "flag" and len(tokens) == 207:
            tokens[200 + index % 6] = "2"
        elif kind == "blank-path":
            tokens[-1] = "./"
        elif kind == "huge":
            tokens[index % 196 if len(tokens) > 196 else 0] = "1e300"
    listing = folder / "list.txt"
    listing.write_text(" ".join(tokens) + "\n" + " ".join(wflw_tokens(points + 5)) + "\n")
    records, errors = parse_wflw_list(listing, check_images=True)
    assert len(records) + len(errors) == 2
    for error in errors:
        assert isinstance(error, DataError) and str(error).startswith(f"{listing}:{error.line}: ")
    if not edits and errors == []:
        np.testing.assert_array_equal(records[0].points, np.array([float(t) for t in tokens[:196]]).reshape(98, 2))
        assert records[0].attributes == dict.fromkeys(WFLW_ATTRIBUTES, 0)
    for record in records:
        assert record.points.shape == (98, 2) and np.all(np.abs(record.points) <= MAX_COORDINATE)
        assert np.ptp(record.points, axis=0).max() >= 1.0


# ------------------------------------------------------------------ property-based: geometry

CENTRES = st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6))


@HYPOTHESIS
@given(centre=CENTRES, side=st.floats(1e-3, 1e6), size=st.integers(1, 512), angle=st.floats(-720, 720),
       flip=st.booleans())
def test_crop_matrix_maps_the_square_onto_the_crop(centre, side, size, angle, flip) -> None:
    matrix = crop_matrix(np.array(centre), side, size, angle, flip)
    assert matrix.shape == (2, 3) and np.isfinite(matrix).all()
    middle = transform_points(np.array(centre), matrix)
    # cv2.getRotationMatrix2D works on a float32 centre: a few float32 ulps of it are lost
    slack = 2.0**-21 * max(abs(c) for c in centre) * (1.0 + size / side) + 1e-6
    np.testing.assert_allclose(middle, [(size - 1) / 2] * 2, rtol=0, atol=slack)
    scale = np.linalg.norm(matrix[:, :2], axis=1)
    np.testing.assert_allclose(scale, size / side, rtol=1e-9)
    back = transform_points(transform_points(np.array([centre]), matrix), invert_affine(matrix))
    np.testing.assert_allclose(back, [centre], rtol=1e-6, atol=1e-6 * side)


@HYPOTHESIS
@given(side=st.sampled_from([0.0, -1.0, -1e-300, float("nan"), float("inf"), float("-inf")]),
       centre=CENTRES, size=st.integers(1, 64))
def test_crop_matrix_refuses_a_bad_side_with_value_error(side, centre, size) -> None:
    with pytest.raises(ValueError, match="crop side"):
        crop_matrix(np.array(centre), side, size)


@pytest.mark.parametrize(("centre", "side", "angle"), [((np.inf, 0.0), 10.0, 0.0), ((np.nan, 0.0), 10.0, 0.0),
                                                      ((1e308, 1e308), 10.0, 0.0), ((0.0, 0.0), 10.0, np.nan),
                                                      ((0.0, 0.0), 5e-324, 0.0)])
def test_crop_matrix_refuses_non_finite_geometry(centre, side, angle) -> None:
    with pytest.raises(ValueError):
        crop_matrix(np.array(centre), side, 8, angle)


def test_crop_matrix_centre_is_exact_in_float64() -> None:
    matrix = crop_matrix(np.array([0.0, 32768.435546875]), 0.03125, 1)
    np.testing.assert_allclose(transform_points(np.array([0.0, 32768.435546875]), matrix), [0.0, 0.0], atol=1e-6)


@HYPOTHESIS
@given(height=st.integers(1, 9), width=st.integers(1, 9), size=st.integers(1, 40), centre=CENTRES,
       side=st.floats(1e-3, 1e6), angle=st.floats(-180, 180), seed=st.integers(0, 2**16))
def test_warp_gives_a_full_crop_for_any_box_and_tiny_images(height, width, size, centre, side, angle, seed) -> None:
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    crop = warp(image, crop_matrix(np.array(centre), side, size, angle), size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8


MARKUP = markup_for(68)


@HYPOTHESIS
@given(height=st.integers(1, 48), width=st.integers(1, 48), size=st.integers(1, 64), seed=st.integers(0, 2**16),
       spread=st.sampled_from([0.0, 1e-3, 1.0, 30.0, 500.0, 1e5]), offset=st.floats(-1e4, 1e4),
       augment=st.booleans(), pose=st.none() | st.tuples(*[st.floats(-180, 180)] * 3))
def test_make_sample_on_any_points_and_image(height, width, size, seed, spread, offset, augment, pose) -> None:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    points = rng.uniform(-1, 1, (68, 2)) * spread + offset  # often outside the image
    config = AugmentConfig() if augment else AugmentConfig.none()
    if spread == 0.0:
        with pytest.raises(ValueError, match="crop side"):
            make_sample(image, points, pose, size, MARKUP, rng, config)
        return
    crop, targets, label = make_sample(image, points, pose, size, MARKUP, rng, config)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    assert targets.shape == (68, 2) and np.isfinite(targets).all()
    assert np.abs(targets).max() < 3.0  # the crop holds the face: within a few crop sides of it
    assert label.shape == (3,) and (np.isnan(label).all() if pose is None else np.isfinite(label).all())


@HYPOTHESIS
@given(spread=st.floats(1.0, 1e6), offset=st.floats(-MAX_COORDINATE / 2, MAX_COORDINATE / 2),
       seed=st.integers(0, 2**16))
def test_any_annotation_load_faces_accepts_makes_a_sample(tmp_path_factory, spread, offset, seed) -> None:
    """What the loader lets through, the training crop can use (no crash deep in a DataLoader)."""
    folder = tmp_path_factory.getbasetemp() / "accepts"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    points = np.round(rng.uniform(-1, 1, (68, 2)) * spread + offset, 3)
    assume(np.ptp(points, axis=0).max() >= 1.0 and not np.array_equal(points[36], points[45]))
    write_pts_file(folder / "a.pts", points)
    (folder / "a.png").write_bytes(b"")
    faces, errors = load_faces(folder / "a.pts")
    assert errors == []
    crop, targets, _ = make_sample(np.zeros((8, 8, 3), np.uint8), faces[0].points, None, 16, MARKUP,
                                   np.random.default_rng(seed), AugmentConfig())
    assert np.isfinite(targets).all()
