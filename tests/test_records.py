"""asmnet.records: the one output record, built and read back (``--resume``), without a model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from asmnet.errors import DataError
from asmnet.records import (
    SCHEMA,
    RecordError,
    check_same_settings,
    image_record,
    read_record,
    read_records_file,
    record_key,
    record_text,
    summary_lines,
    with_crops,
)


class FakeFace:
    """What image_record needs of a face: to_dict(), as asmnet.api.Face gives it."""

    def __init__(self, x: float, flagged: bool | None = False):
        self.x, self.flagged = x, flagged

    def to_dict(self) -> dict:
        return {"box": [self.x, 10.0, self.x + 50.4, 70.6], "detector_box": None, "score": 0.99,
                "landmarks": [[self.x + 1.0, 20.0]] * 68, "pose": {"yaw": 3.14, "pitch": -7.9, "roll": 0.4},
                "quality": 3.516, "flagged": self.flagged}


def lines_of(*records: dict) -> str:
    return "".join(record_text(r) + "\n" for r in records)


def test_a_record_holds_the_absolute_path_and_reads_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = image_record("photos/a.jpg", None, (640, 480), [FakeFace(5.0)], "default", 0)
    assert list(record) == ["schema", "file", "frame", "image_size", "model", "pixel_origin", "faces"]
    assert record["schema"] == SCHEMA and record["file"] == str(tmp_path / "photos" / "a.jpg")
    assert record["image_size"] == [640, 480] and record["pixel_origin"] == 0.0 and len(record["faces"]) == 1
    assert read_record(record_text(record)) == record
    frame = image_record(Path("clip.mp4"), 7, (320, 240), [FakeFace(1.0), FakeFace(2.0)], "m", 1, track_ids=[4, 9])
    assert frame["frame"] == 7 and frame["track_ids"] == [4, 9] and frame["file"] == str(tmp_path / "clip.mp4")
    assert image_record(0, 3, (8, 8), [], "m", 0)["file"] == "0"  # a camera: its index
    # the key does not depend on the working folder the record is read from
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert record_key(record) == (os.path.realpath(tmp_path / "photos" / "a.jpg"), None)


@pytest.mark.parametrize("line, why", [
    ("my notes", "not JSON"),
    ("[1, 2]", "not an object"),
    ('{"file": "a.jpg", "frame": null, "image_size": [1, 1], "model": "m", "faces": []}', "no 'pixel_origin'"),
    ('{"file": 3, "frame": null, "image_size": [1, 1], "model": "m", "pixel_origin": 0, "faces": []}', "'file' is 3"),
    ('{"schema": 99, "file": "a", "frame": null, "image_size": [1, 1], "model": "m", "pixel_origin": 0, "faces": []}',
     "newer asmnet"),
    ('{"file": "a", "frame": true, "image_size": [1, 1], "model": "m", "pixel_origin": 0, "faces": []}',
     "'frame' is true"),
])
def test_lines_that_are_not_records_say_why(line, why):
    with pytest.raises(RecordError, match=why):
        read_record(line)


def test_records_of_asmnet_before_the_schema_field_are_read():
    old = {"file": "photos/a.jpg", "frame": None, "image_size": [640, 480], "model": "default", "pixel_origin": 0.0,
           "faces": []}
    assert read_record(json.dumps(old)) == old


def test_align_record_is_the_image_record_plus_crops():
    base = image_record("/p/a.jpg", None, (64, 64), [FakeFace(1.0), FakeFace(2.0)], "m", 0)
    crops = [{"crop": f"/o/a.jpg.face{k}.png", "matrix": [[1, 0, 0], [0, 1, 0]], "crop_landmarks": [[0, 0]] * 68}
             for k in range(2)]
    record = with_crops(base, "arcface", 112, crops)
    assert {k: v for k, v in record.items() if k not in ("template", "size", "faces")} == {
        k: v for k, v in base.items() if k != "faces"}
    assert record["template"] == "arcface" and record["size"] == 112
    assert [set(f) - set(b) for f, b in zip(record["faces"], base["faces"])] == [{"crop", "matrix", "crop_landmarks"}] * 2
    with pytest.raises(ValueError):
        with_crops(base, "arcface", 112, crops[:1])


def test_resume_reads_records_drops_only_a_torn_last_line_and_refuses_other_lines(tmp_path):
    a = image_record("/p/a.jpg", None, (8, 8), [], "default", 0)
    b = image_record("/p/b.jpg", None, (8, 8), [FakeFace(1.0)], "default", 0)
    path = tmp_path / "r.jsonl"
    assert read_records_file(path).keys == set()  # no file yet: nothing done
    text = lines_of(a) + "\n" + lines_of(b)  # a blank line is harmless
    path.write_text(text + record_text(b)[:40])  # a kill mid-write
    found = read_records_file(path)
    assert found.keys == {(os.path.realpath("/p/a.jpg"), None), (os.path.realpath("/p/b.jpg"), None)}
    assert found.torn_tail and found.complete_bytes == len(text.encode()) and found.settings == {("default", 0.0)}
    path.write_text(text.rstrip("\n"))  # whole, but its newline never written
    found = read_records_file(path)
    assert found.missing_newline and not found.torn_tail and len(found.keys) == 2
    for other in ("my notes\n", lines_of(a) + "my notes\n" + lines_of(b), lines_of(a) + "my notes"):
        path.write_text(other)
        with pytest.raises(DataError) as info:
            read_records_file(path)
        line = other.splitlines().index("my notes") + 1
        assert str(info.value).startswith(f"{path}:{line}: not an asmnet record (not JSON")
        assert path.read_text() == other  # reading never changes the file


def test_resume_refuses_records_of_another_model_or_pixel_origin(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(lines_of(image_record("/p/a.jpg", None, (8, 8), [], "default", 0)))
    found = read_records_file(path)
    check_same_settings(path, found, "default", 0.0)  # the same: fine
    for model, origin in (("paper224", 0.0), ("default", 1.0)):
        with pytest.raises(DataError, match=r"holds records of model 'default' with pixel origin 0, this run is "
                           rf"model '{model}' with pixel origin {origin:g}"):
            check_same_settings(path, found, model, origin)


def test_summary_lines_say_faces_box_pose_quality_and_flag():
    record = image_record("/p/a.jpg", None, (640, 480), [FakeFace(5.0), FakeFace(90.0, flagged=True)], "m", 0)
    assert summary_lines(record, "a.jpg") == [
        "a.jpg: 2 faces, 1 flagged",
        "  face 0: box [5, 10, 55, 71], yaw +3.1, pitch -7.9, roll +0.4 deg, quality 3.52",
        "  face 1: box [90, 10, 140, 71], yaw +3.1, pitch -7.9, roll +0.4 deg, quality 3.52 (flagged: likely wrong)",
    ]
    assert summary_lines(image_record("/p/b.jpg", None, (8, 8), [], "m", 0)) == ["/p/b.jpg: no face"]
    unflagged = image_record("/p/c.jpg", None, (8, 8), [FakeFace(1.0, flagged=None)], "m", 0)
    assert summary_lines(unflagged)[0] == "/p/c.jpg: 1 face"  # no threshold: not flagged
