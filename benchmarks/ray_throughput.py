"""Folder throughput of `asmnet predict`: the local engine with 1 and 2 worker processes against
the Ray engine with 1 and 2 actors (a local Ray instance started by the command), on the same
images. Each configuration is a fresh `python -m asmnet predict` process; the JSON Lines file is
polled every 50 ms, which gives the start-up time (until the first record) and the steady rate
(records after the first ones / time from the first to the last). The records of every run are
checked equal (sorted) to the first run's. CPU time is that of the command's whole process tree
(Ray's own processes included), read from /proc: steadier than wall time on a shared machine.

    python benchmarks/ray_throughput.py --data ../shared/data/lfpw_train --n 500 --rounds 2 \
        --json benchmarks/results/ray_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stamp import stamp  # benchmarks/stamp.py: command, commit, date, machine

CONFIGS = {
    "local, 1 worker": ["--workers", "1"],
    "local, 2 workers": ["--workers", "2"],
    "ray, 1 actor": ["--engine", "ray", "--ray-actors", "1"],
    "ray, 2 actors": ["--engine", "ray", "--ray-actors", "2"],
}


TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int, seen: dict[int, float]) -> float:
    """CPU seconds (user + system) of ``root`` and all its descendants, cumulative: ``seen`` keeps
    each process's last reading, so processes that have exited still count (up to their last sample)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK)
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, (ppid, _) in parents.items():
            if ppid == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    for pid in tree:
        if pid in parents:
            seen[pid] = max(seen.get(pid, 0.0), parents[pid][1])
    return sum(seen.values())


def run(folder: Path, out: Path, extra: list[str], n: int) -> dict:
    cmd = [sys.executable, "-m", "asmnet", "predict", str(folder), "--json", str(out), *extra]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = last = None
    count = at_first = 0
    seen: dict[int, float] = {}
    cpu_first = cpu_last = 0.0
    polls = 0
    while proc.poll() is None:
        time.sleep(0.05)
        polls += 1
        if polls % 10 == 0:
            tree_cpu(proc.pid, seen)
        if out.exists():
            now = out.read_bytes().count(b"\n")
            if now and first is None:
                first, at_first = time.perf_counter() - t0, now
                cpu_first = tree_cpu(proc.pid, seen)
            if now != count:
                count, last = now, time.perf_counter() - t0
                if count == n:
                    cpu_last = tree_cpu(proc.pid, seen)
    wall = time.perf_counter() - t0
    cpu_total = sum(seen.values())
    stderr = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {stderr.strip().splitlines()[-1:]}")
    lines = out.read_text().splitlines()
    assert len(lines) == n, (len(lines), n)
    # records after the first poll that saw any / the time since: Ray hands them over a batch at a time
    steady = (n - at_first) / (last - first) if last and first and last > first else None
    return {"command": " ".join(cmd[1:]), "wall_s": round(wall, 2), "first_record_s": round(first or wall, 2),
            "images_per_s_overall": round(n / wall, 2), "images_per_s_steady": round(steady, 2) if steady else None,
            "cpu_s_total": round(cpu_total, 2), "cpu_ms_per_image_steady":
                round(1000 * (cpu_last - cpu_first) / (n - at_first), 1) if cpu_last > cpu_first and n > at_first else None,
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2), "records": sorted(lines)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/lfpw_train")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    images = sorted(p for p in Path(args.data).rglob("*") if p.suffix.lower() in (".jpg", ".png"))[: args.n]
    if len(images) < args.n:
        raise SystemExit(f"{args.data}: only {len(images)} images")
    results: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for p in images:
            (folder / p.name).symlink_to(p.resolve())
        for r in range(args.rounds):
            for name, extra in CONFIGS.items():
                res = run(folder, Path(tmp) / f"{r}_{name.replace(' ', '_').replace(',', '')}.jsonl", extra, args.n)
                records = res.pop("records")
                reference = reference or records
                res["records_equal_to_first_run"] = records == reference
                results[name].append(res)
                print(f"round {r + 1} {name:18s} wall {res['wall_s']:6.1f} s, first record {res['first_record_s']:5.1f} s, "
                      f"{res['images_per_s_overall']:5.1f} img/s overall, {res['images_per_s_steady']} img/s steady, "
                      f"CPU {res['cpu_s_total']} s, {res['cpu_ms_per_image_steady']} ms/img steady, "
                      f"load {res['load_before']} -> {res['load_after']}, same records: {res['records_equal_to_first_run']}",
                      flush=True)
    report = {"images": args.n, "data": args.data, "cpus": os.cpu_count(), "configs": results,
              "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.json:
        Path(args.json).write_text(json.dumps(stamp(report), indent=1) + "\n")


if __name__ == "__main__":
    main()
