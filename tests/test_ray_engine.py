"""``asmnet predict --engine ray`` and ``asmnet align --engine ray`` on a local 2-CPU Ray cluster
(one per session), against the local engine: the same records (and crops), a killed actor loses
and repeats nothing, bad files are failures, --resume skips what is done. Skipped only when Ray
(the ``ray`` extra) is not installed."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DATA_DIR

from asmnet.cli import main
from asmnet.jobs.predict import PredictOptions, predict
from asmnet.runtime import DEFAULT_MODEL_DIR

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (pip install 'asmnet[ray]')")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").exists(), reason="no shipped model")]
N_IMAGES = 100


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance with 2 CPUs for all the tests here; the engine joins it (and leaves it running)."""
    import ray

    # "local": a new instance even where $RAY_ADDRESS or a `ray start` cluster would be joined
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
             logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> list[Path]:
    """100 real face photos: LFPW images from the shared data when present, otherwise crops of
    scikit-image's astronaut at other places, scales and mirrorings (so CI without the data tests too)."""
    lfpw = DATA_DIR / "lfpw_train"
    if lfpw.is_dir():
        found = sorted(lfpw.glob("*.jpg"))[:N_IMAGES]
        if len(found) == N_IMAGES:
            return found
    skdata = pytest.importorskip("skimage.data", reason="no shared data and no scikit-image for the test photos")
    folder = tmp_path_factory.mktemp("astronauts")
    photo = skdata.astronaut()[:, :, ::-1]
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N_IMAGES):
        size = int(rng.integers(220, 300))  # the face stays wider than dlib HOG's 80 px
        scaled = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA)
        side = int(size * 0.8)
        x, y = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
        crop = scaled[y:y + side, x:x + side]
        paths.append(folder / f"astronaut_{i:03d}.png")
        cv2.imwrite(str(paths[-1]), crop[:, ::-1] if i % 2 else crop)
    return paths


@pytest.fixture(scope="session")
def local_records(photos, tmp_path_factory) -> list[str]:
    """The default engine's JSON Lines for the photos, sorted."""
    out = tmp_path_factory.mktemp("local") / "local.jsonl"
    report = predict([str(p) for p in photos], PredictOptions(json_path=str(out)))
    assert report.done == N_IMAGES and not report.failures
    return sorted(out.read_text().splitlines())


def ray_options(**ray):
    from asmnet.jobs.ray_engine import RayOptions

    return RayOptions(**{"actors": 2, **ray})


@pytest.mark.ray
@needs_ray
def test_ray_records_equal_local_engine(ray_cluster, photos, local_records, tmp_path):
    out = tmp_path / "ray.jsonl"
    report = predict([str(p) for p in photos], PredictOptions(json_path=str(out), engine="ray", ray=ray_options()))
    assert report.done == N_IMAGES and not report.failures
    lines = out.read_text().splitlines()
    assert sorted(lines) == local_records  # same bytes per record; only the order may differ
    assert sum(1 for r in map(json.loads, lines) if r["faces"]) >= 0.9 * N_IMAGES  # real faces were found


def _actor_pids() -> list[int]:
    """Ray Data's actor processes running AlignerActor, among this process's descendants."""
    me, pids = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "AlignerActor" not in title:
                continue
            pid = int(entry.name)
            while pid > 1:  # walk up to us: leave other people's Ray processes alone
                pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if pid == me:
                    pids.append(int(entry.name))
                    break
        except (OSError, ValueError, IndexError):
            continue
    return pids


@pytest.mark.ray
@needs_ray
def test_killed_actor_loses_and_repeats_nothing(ray_cluster, photos, local_records, tmp_path):
    from asmnet.jobs.ray_engine import run_tasks

    # one actor (fewer process starts), 10 batches of 4: it is busy with the next batch when killed
    tasks = [(str(p), None) for p in photos[:40]]
    opts = PredictOptions(engine="ray", ray=ray_options(actors=1, batch_size=4))
    results, killed = [], []
    for _, *result in run_tasks(tasks, opts, opts.ray):
        results.append(tuple(result))
        if not killed:  # SIGKILL the actor after the first answer; Ray restarts it and redoes its task
            pids = _actor_pids()
            assert pids, "no AlignerActor process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
    assert killed and all(error is None and fatal is None for _, error, fatal in results)
    lines = sorted(json.dumps(record) for record, _, _ in results)
    expected = [line for line in local_records if json.loads(line)["file"] in {path for path, _ in tasks}]
    assert len(expected) == 40 and lines == expected  # every image exactly once, and the same record


@pytest.mark.ray
@needs_ray
def test_bad_files_fail_and_resume_skips_done(ray_cluster, photos, local_records, tmp_path, capsys):
    good = [str(p) for p in photos[:12]]
    expected = [line for line in local_records if json.loads(line)["file"] in good]
    broken, empty = tmp_path / "broken.jpg", tmp_path / "empty.png"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    empty.write_bytes(b"")
    out, annotated = tmp_path / "out.jsonl", tmp_path / "annotated"
    out.write_text("\n".join(expected[:5]) + "\n" + '{"file": "half-writ')  # 5 done, then an interrupted write
    rc = main(["predict", *good[:6], str(broken), *good[6:], str(empty), "--json", str(out), "--out", str(annotated),
               "--resume", "--engine", "ray", "--ray-actors", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and "broken.jpg" in err and "empty.png" in err
    assert "7 done, 5 already in the output, 2 failed" in err
    assert sorted(out.read_text().splitlines()) == expected  # each image once, the local engine's records
    # written by the actor, for the images it did (under the inputs' names and extensions)
    assert sorted(p.name for p in annotated.rglob("*") if p.is_file()) == sorted(
        Path(g).name for g in good if g not in {json.loads(line)["file"] for line in expected[:5]})


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.ray
@needs_ray
def test_align_crops_records_and_failures_equal_local_engine(ray_cluster, photos, tmp_path, capsys):
    # 16 photos in two sub-folders with a truncated JPEG among them; settings that reach the
    # aligner (pixel origin, minimum score) and the crops (template, size, format)
    src = tmp_path / "in"
    for i, photo in enumerate(photos[:16]):
        (src / f"part{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, src / f"part{i % 2}" / photo.name)
    (src / "part1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    flags = ["--template", "ffhq", "--size", "96", "--format", "jpg", "--pixel-origin", "1", "--min-score", "0.3"]
    runs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        rc = main(["align", str(src), "--out", str(out), *flags, "--engine", engine, *(
            ["--ray-actors", "2"] if engine == "ray" else [])])
        runs[engine] = rc, capsys.readouterr().err, _files(out)
    (rc, err, files), (ray_rc, ray_err, ray_files) = runs["local"], runs["ray"]
    assert rc == ray_rc == 1 and "Traceback" not in ray_err  # one input failed, the job went on
    failed = [line for line in err.splitlines() if line.startswith("  ")]
    assert len(failed) == 1 and "broken.jpg" in failed[0]
    assert [line for line in ray_err.splitlines() if line.startswith("  ")] == failed
    assert "16 images aligned" in ray_err and ", 1 failed" in ray_err
    # the same index (byte for byte, the inputs' order) and the same crop files, written by the actors
    index = ray_files.pop("aligned.jsonl").decode().replace(str(tmp_path / "ray"), str(tmp_path / "local"))
    assert index == files.pop("aligned.jsonl").decode()
    assert ray_files == files
    records = [json.loads(line) for line in index.splitlines()]
    assert len(records) == 16 and all(r["pixel_origin"] == 1 and r["template"] == "ffhq" for r in records)
    assert sum(1 for r in records if r["faces"]) >= 14  # real faces were found
    assert sorted(files) == sorted(Path(f["crop"]).relative_to(tmp_path / "local").as_posix()
                                   for r in records for f in r["faces"])


@pytest.mark.parametrize("command", ["predict", "align"])
def test_missing_ray_extra_is_one_line(tmp_path, command):
    photo = tmp_path / "x.png"
    cv2.imwrite(str(photo), np.zeros((32, 32, 3), np.uint8))
    out = ["--out", str(tmp_path / "out")] if command == "align" else []
    code = ("import sys; sys.modules['ray'] = None; from asmnet.cli import main; "
            f"sys.exit(main([{command!r}, {str(photo)!r}, *{out!r}, '--engine', 'ray']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "asmnet[ray]" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()  # refused before any work


def test_videos_and_webcam_are_refused_in_one_line(tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0" * 64)
    assert main(["predict", str(video), "--engine", "ray"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "clip.mp4" in err and "--engine local" in err
    assert main(["predict", "--webcam", "0", "--engine", "ray"]) == 2
    assert "--engine local" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "--engine", "ray", "--ray-actors", "0"]) == 2


@pytest.mark.ray
@needs_ray
def test_gpu_actors_on_a_cluster_without_gpus_are_one_line(ray_cluster, photos, tmp_path, capsys):
    assert main(["predict", str(photos[0]), "--engine", "ray", "--ray-gpus", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GPU" in err
    assert main(["align", str(photos[0]), "--out", str(tmp_path / "crops"), "--engine", "ray", "--ray-gpus", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GPU" in err and not (tmp_path / "crops").exists()


def test_gpu_actor_without_cuda_onnxruntime_says_what_to_install(photos):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    from asmnet.jobs.ray_engine import AlignerActor

    actor = AlignerActor(gpu=True)  # Ray calls it the same way in an actor; no Ray needed to check it
    out = actor({"path": np.array([str(photos[0])], dtype=object)})
    assert out["record"][0] == "" and "onnxruntime-gpu" in out["fatal"][0]
