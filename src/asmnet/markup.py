"""Landmark schemes (markups): 68-point iBUG/300W and 98-point WFLW.

Flip permutations follow the design brief: point i of the mirrored face is point ``flip[i]`` of
the original. "Left" means the image's left for a frontal face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _perm_from_pairs(n: int, pairs: list[tuple[int, int]]) -> tuple[int, ...]:
    perm = list(range(n))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


@dataclass(frozen=True)
class Markup:
    """A landmark scheme: its size, flip permutation and the points the metrics need."""

    name: str
    n_points: int
    flip: tuple[int, ...]
    outer_eye_corners: tuple[int, int]  # inter-ocular normalisation (image-left eye first)
    left_eye: tuple[int, ...]  # points of the image-left eye (inter-pupil normalisation)
    right_eye: tuple[int, ...]
    # mirror pairs, image-left point first for a frontal face (flip tests rely on the order)
    lr_pairs: tuple[tuple[int, int], ...]
    # named parts of the face (per-region error tables); together they hold every point once
    regions: tuple[tuple[str, tuple[int, ...]], ...] = ()
    # the points aligned crops' templates use besides the eyes (asmnet.align); the nose tip is
    # also the origin of the drawn pose axes
    nose_tip: int = -1
    mouth_corners: tuple[int, int] = (-1, -1)  # image-left corner first
    pupils: tuple[int, int] | None = None  # pupil points, where the scheme has them (inter-pupil normalisation)

    def region(self, name: str) -> tuple[int, ...]:
        """The point indices of the part ``name`` (e.g. "jaw", "eyes"); raises KeyError if unknown."""
        return dict(self.regions)[name]

    def inner_points(self) -> tuple[int, ...]:
        """Every point but the jaw's (the face's inside: brows, eyes, nose, mouth), in order."""
        jaw = set(self.region("jaw"))
        return tuple(i for i in range(self.n_points) if i not in jaw)

    def flip_array(self) -> np.ndarray:
        return np.asarray(self.flip, dtype=np.int64)


_PAIRS_68 = (
    [(i, 16 - i) for i in range(8)]
    + [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22)]
    + [(31, 35), (32, 34)]
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    + [(48, 54), (49, 53), (50, 52), (59, 55), (58, 56)]  # lower lips run right to left
    + [(60, 64), (61, 63), (67, 65)]
)

_PAIRS_98 = (
    [(i, 32 - i) for i in range(16)]
    + [(33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50), (39, 49), (40, 48), (41, 47)]
    + [(55, 59), (56, 58)]
    + [(60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73)]
    + [(76, 82), (77, 81), (78, 80), (87, 83), (86, 84), (88, 92), (89, 91), (95, 93)]
    + [(96, 97)]
)

IBUG_68 = Markup(
    name="ibug68",
    n_points=68,
    flip=_perm_from_pairs(68, _PAIRS_68),
    outer_eye_corners=(36, 45),
    left_eye=tuple(range(36, 42)),
    right_eye=tuple(range(42, 48)),
    lr_pairs=tuple(_PAIRS_68),
    regions=(("jaw", tuple(range(0, 17))), ("brows", tuple(range(17, 27))), ("nose", tuple(range(27, 36))),
             ("eyes", tuple(range(36, 48))), ("mouth", tuple(range(48, 68)))),
    nose_tip=30,
    mouth_corners=(48, 54),
)

WFLW_98 = Markup(
    name="wflw98",
    n_points=98,
    flip=_perm_from_pairs(98, _PAIRS_98),
    outer_eye_corners=(60, 72),
    left_eye=tuple(range(60, 68)),
    right_eye=tuple(range(68, 76)),
    lr_pairs=tuple(_PAIRS_98),
    regions=(("jaw", tuple(range(0, 33))), ("brows", tuple(range(33, 51))), ("nose", tuple(range(51, 60))),
             ("eyes", tuple(range(60, 76)) + (96, 97)), ("mouth", tuple(range(76, 96)))),
    nose_tip=54,
    mouth_corners=(76, 82),
    pupils=(96, 97),
)

# WFLW 98 -> iBUG 68 (the usual mapping: every other jaw point, brows' upper contour, eyes
# without their mid points, all nose and mouth points); lets 98-point data evaluate as 68.
WFLW_TO_68: tuple[int, ...] = (
    tuple(range(0, 33, 2))
    + (33, 34, 35, 36, 37, 42, 43, 44, 45, 46)
    + tuple(range(51, 60))
    + (60, 61, 63, 64, 65, 67, 68, 69, 71, 72, 73, 75)
    + tuple(range(76, 96))
)


# the standard markup of each supported number of points
MARKUPS: dict[int, Markup] = {IBUG_68.n_points: IBUG_68, WFLW_98.n_points: WFLW_98}


def markup_for(n_points: int) -> Markup:
    """The markup with ``n_points`` points (68 or 98); ValueError for any other number."""
    if n_points not in MARKUPS:
        raise ValueError(f"no markup with {n_points} points (68 and 98 are supported)")
    return MARKUPS[n_points]
