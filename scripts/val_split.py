"""Write the validation keys that ``asmnet train`` would hold out for these data folders.

The split depends on nothing but the face keys, the group pattern, the fraction and the seed
(``asmnet.training.split``), so this list is exactly the ``val_keys`` of a run's ``split.json``
with the same settings, known before any training: benchmarks score shipped models on it.

    python scripts/val_split.py --data ../shared/data/lfpw_train --data ../shared/data/helen_train \\
        --data ../shared/data/afw --data ../shared/data/udacity_train \\
        --contains src/asmnet/models/default/val_keys.txt --out benchmarks/splits/val_keys_all.txt
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from asmnet.evaluation import read_keys
from asmnet.fileio import write_text_atomic
from asmnet.formats import key_folder, load_many
from asmnet.training.split import ALL_DATA_PATTERN, split_keys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", action="append", required=True, metavar="DIR")
    p.add_argument("--group-pattern", default=ALL_DATA_PATTERN, metavar="REGEX")
    p.add_argument("--fraction", type=float, default=0.12)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--contains", default=None, metavar="KEYS",
                   help="fail unless every key of this list (an earlier split) is still held out")
    p.add_argument("--out", required=True, metavar="FILE")
    args = p.parse_args(argv)

    records, errors = load_many(args.data)
    for e in errors:
        print(e, file=sys.stderr)
    keys = [r.key for r in records]
    _, _, info = split_keys(keys, args.fraction, args.group_pattern, args.split_seed)
    val = info["val_keys"]
    if args.contains:
        missing = sorted(set(read_keys(args.contains)) - set(val))
        if missing:
            print(f"{args.contains}: {len(missing)} keys are no longer held out, e.g. {missing[0]}", file=sys.stderr)
            return 1
    write_text_atomic(Path(args.out), "".join(k + "\n" for k in val))
    counts = Counter(key_folder(k) for k in val)
    print(f"{len(val)} validation faces of {len(keys)} ({info['n_val_groups']} groups): "
          + ", ".join(f"{f} {n}" for f, n in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
