"""The validation split: deterministic, by group, never by frame."""

from __future__ import annotations

import re

from asmnet.training.split import UDACITY_CLIP_PATTERN, group_key, split_keys


def test_udacity_frames_group_by_clip():


    p = re.compile(UDACITY_CLIP_PATTERN)
    assert group_key("udacity_train/Chris_Rock_02", p) == "udacity_train/Chris_Rock_0"
    assert group_key("udacity_train/testcsv_Chris_Rock_05", p) == "udacity_train/Chris_Rock_0"
    assert group_key("lfpw_train/image_0001", p) == "lfpw_train/image_0001"


def test_split_is_deterministic_and_keeps_groups_together():
    keys = [f"vid/Person_{c}_{v}{f}" for c in "ABCDEFGHIJKLMNOP" for v in range(3) for f in range(4)]
    keys = [k.replace("Person_", "Person") for k in keys]
    a = split_keys(keys, 0.3, UDACITY_CLIP_PATTERN)
    b = split_keys(list(keys), 0.3, UDACITY_CLIP_PATTERN)
    assert a[1] == b[1] and a[0] == b[0]
    val_groups = {keys[i][:-1] for i in a[1]}
    train_groups = {keys[i][:-1] for i in a[0]}
    assert val_groups and not val_groups & train_groups
    assert a[2]["n_val"] == len(a[1]) and a[2]["n_val"] % 4 == 0  # whole clips of 4 frames


def test_split_depends_on_names_not_order():
    keys = [f"set/img_{i:04d}" for i in range(200)]
    _, val, _ = split_keys(keys, 0.2)
    _, val_rev, _ = split_keys(keys[::-1], 0.2)
    assert sorted(keys[i] for i in val) == sorted(keys[::-1][i] for i in val_rev)
    assert 20 <= len(val) <= 60


def test_all_data_pattern_keeps_photo_faces_together_and_old_groups():
    from asmnet.training.split import ALL_DATA_PATTERN, UDACITY_CLIP_PATTERN

    both, udacity = re.compile(ALL_DATA_PATTERN), re.compile(UDACITY_CLIP_PATTERN)
    assert group_key("afw/134212_1", both) == group_key("afw/134212_2", both) == "afw/134212"
    assert group_key("helen_train/100040721_2", both) == "helen_train/100040721"
    for key in ("lfpw_train/image_0001", "udacity_train/Chris_Rock_02", "udacity_train/testcsv_Chris_Rock_02",
                "udacity_train/Eliza_Dushku_21"):  # the groups (hence validation faces) of earlier runs
        assert group_key(key, both) == group_key(key, udacity)


def test_gpu_sweep_splits_like_the_trainer():
    from pathlib import Path

    from asmnet.training.split import ALL_DATA_PATTERN

    script = (Path(__file__).resolve().parents[1] / "scripts" / "gpu_sweep.sh").read_text()
    assert ALL_DATA_PATTERN.replace("'", "'\"'\"'") in script  # shell-quoted as the script writes it
