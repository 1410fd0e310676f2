"""A compact copy of 300W-layout training folders for a lent GPU machine (working tree <= 64 MiB).

Every face image is downscaled (``cv2.INTER_AREA``, never upscaled) so that the tight box of its
points is at most ``--max-side`` pixels, and written as JPEG; its ``.pts`` points follow the
pixel-centre-exact map for the annotations' origin (``--label-origin``; iBUG .pts: 1), and the
folder's ``pose.csv`` is copied unchanged. The 128-px network sees a face box of 128 / 1.3 = 98 px,
so ``--max-side 128`` keeps every training crop at or above its input resolution while scale
jitter stays below +30 %. Face keys (folder/stem) are those of the source, so validation splits
and ``--oversample`` names carry over. The pack is data: build it where it is used, never commit it.

    python scripts/make_training_pack.py --data ../shared/data/lfpw_train --data ../shared/data/helen_train \\
        --data ../shared/data/afw --data ../shared/data/udacity_train --out .data/pack
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

from asmnet.fileio import write_atomic
from asmnet.formats import load_faces, read_image
from asmnet.formats.pts import write_pts


def scaled_points(points: np.ndarray, factor: float, origin: float) -> np.ndarray:
    """Points of an image resized by ``factor``: pixel centres map exactly (edges at -0.5 from them)."""
    return (points - origin + 0.5) * factor - 0.5 + origin


def pack_folder(src: Path, dst: Path, max_side: float, quality: int, origin: float) -> tuple[int, int]:
    """Write the compact copy of one 300W folder; returns (faces written, faces downscaled)."""
    records, errors = load_faces(src)
    for e in errors:
        print(f"skipped: {e}", file=sys.stderr)
    dst.mkdir(parents=True, exist_ok=True)
    shrunk = 0
    for r in records:
        relative = Path(r.key.split("/", 1)[1])
        side = float(np.max(r.points.max(0) - r.points.min(0)))
        if side <= max_side:  # small enough: the source file as it is (re-encoding only adds loss)
            shutil.copyfile(r.image, dst / relative.with_suffix(Path(r.image).suffix))
            write_pts(dst / relative.with_suffix(".pts"), r.points)
            continue
        image = read_image(r.image)
        h, w = image.shape[:2]
        size = (max(1, round(w * max_side / side)), max(1, round(h * max_side / side)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        # the exact factors of the rounded size, per axis
        points = np.stack([scaled_points(r.points[:, 0], size[0] / w, origin),
                           scaled_points(r.points[:, 1], size[1] / h, origin)], 1)
        shrunk += 1
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise SystemExit(f"{r.image}: JPEG encoding failed")
        write_atomic(dst / relative.with_suffix(".jpg"), lambda p, data=data: p.write_bytes(data.tobytes()))
        write_pts(dst / relative.with_suffix(".pts"), points)
    if (src / "pose.csv").is_file():
        shutil.copyfile(src / "pose.csv", dst / "pose.csv")
    return len(records), shrunk


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", action="append", required=True, metavar="DIR", help="a 300W-layout folder; repeatable")
    p.add_argument("--out", required=True, metavar="DIR", help="the pack (one sub-folder per --data, same name)")
    p.add_argument("--max-side", type=float, default=128.0, metavar="PX", help="largest face box side")
    p.add_argument("--quality", type=int, default=85, help="JPEG quality of the downscaled images")
    p.add_argument("--label-origin", type=float, default=1.0, help="first pixel's centre in the .pts files")
    args = p.parse_args(argv)
    out = Path(args.out)
    for folder in map(Path, args.data):
        n, shrunk = pack_folder(folder, out / folder.name, args.max_side, args.quality, args.label_origin)
        print(f"{folder.name}: {n} faces ({shrunk} downscaled), {folder_bytes(out / folder.name) / 2**20:.1f} MiB")
    print(f"pack: {folder_bytes(out) / 2**20:.1f} MiB in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
