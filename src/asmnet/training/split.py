"""Deterministic validation split by group, so near-duplicates never straddle train and val.

A face's group is its dataset folder plus the stem, or, when ``group_pattern`` matches the stem,
the regex's first group that took part in the match (e.g. a video clip id, or a photo's id when
one photo holds several faces). A group goes to validation when a hash of
``split_seed:group`` falls below the fraction: the split depends on nothing but the names.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

from ..formats.face_record import key_folder

# Udacity / YouTube Faces frames: "Person_Name_VF" (clip V, frame F), optionally "testcsv_"-prefixed.
UDACITY_CLIP_PATTERN = r"^(?:testcsv_)?([A-Za-z][A-Za-z_.'-]*_\d)\d$"
# 300W HELEN / AFW faces: "<photo>_<n>" (face n of a photo); all faces of a photo stay together.
PHOTO_FACE_PATTERN = r"^(\d+)_\d+$"
# both at once: LFPW stems ("image_0001") match neither, so their groups (and today's validation
# faces of lfpw_train / udacity_train) are the same as under UDACITY_CLIP_PATTERN alone
ALL_DATA_PATTERN = f"{UDACITY_CLIP_PATTERN}|{PHOTO_FACE_PATTERN}"


def group_key(key: str, pattern: re.Pattern | None) -> str:
    """Group id of a face key "dataset/relative/stem"."""
    folder, _, stem = key.rpartition("/")
    if pattern is not None:
        m = pattern.match(stem)
        if m:
            # with alternatives, the first group of the branch that matched
            stem = next((g for g in m.groups() if g is not None), m.group(0))
    return f"{folder}/{stem}"


def in_validation(group: str, fraction: float, split_seed: int = 0) -> bool:
    digest = hashlib.sha1(f"{split_seed}:{group}".encode()).hexdigest()
    return int(digest[:12], 16) / 16**12 < fraction


def split_keys(
    keys: list[str], fraction: float, group_pattern: str | None = None, split_seed: int = 0
) -> tuple[list[int], list[int], dict]:
    """Indices of training and validation faces, and a summary to record in the run folder."""
    pattern = re.compile(group_pattern) if group_pattern else None
    groups = [group_key(k, pattern) for k in keys]
    val = [i for i, g in enumerate(groups) if in_validation(g, fraction, split_seed)]
    val_set = set(val)
    train = [i for i in range(len(keys)) if i not in val_set]
    per_folder = Counter(key_folder(keys[i]) for i in val)
    info = {
        "fraction": fraction,
        "group_pattern": group_pattern,
        "split_seed": split_seed,
        "n_train": len(train),
        "n_val": len(val),
        "n_val_groups": len({groups[i] for i in val}),
        "n_val_per_folder": dict(sorted(per_folder.items())),
        "val_keys": sorted(keys[i] for i in val),
    }
    return train, val, info
