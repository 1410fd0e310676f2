"""Opening videos and cameras within the pixel limit of images.

OpenCV decodes every frame whole: a 3 MB MJPG file of 12000 x 12000 frames took 1 GB per decoded
frame (2.25 GB while tracking). :func:`open_video` reads the frame size from the header, which
opening does not decode, and refuses frames over :func:`~asmnet.formats.image.max_pixels_limit`
before the first one is read; :func:`check_frame` checks each frame read (a stream whose header
gives no size, or whose size changes).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError
from .image import check_pixel_count, max_pixels_limit

FRAMES_ARE = "video frames are"


def open_video(source: str | Path | int, max_pixels: int | None = None) -> cv2.VideoCapture:
    """An opened ``cv2.VideoCapture`` of a video file (a path) or a camera (an int index).

    ``max_pixels``: the limit for one frame (default: $ASMNET_MAX_PIXELS or DEFAULT_MAX_PIXELS,
    as for images). Raises DataError naming the file (or camera) when it does not exist, cannot
    be opened, or has frames over the limit; the capture is released then.
    """
    limit = max_pixels_limit(max_pixels)
    camera = isinstance(source, int)
    name = f"camera {source}" if camera else str(source)
    if not camera and not Path(name).is_file():
        raise DataError(name, "no such video file")
    cap = cv2.VideoCapture(source if camera else name)
    try:
        if not cap.isOpened():
            why = "" if camera else " (not a video, or a format or codec this OpenCV lacks)"
            raise DataError(name, f"cannot open video{why}")
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        check_pixel_count(name, width, height, limit, FRAMES_ARE)
    except BaseException:
        cap.release()
        raise
    return cap


def check_frame(frame: np.ndarray, source: str | Path | int, max_pixels: int | None = None) -> None:
    """DataError naming the video (or camera) when a decoded ``frame`` is over the pixel limit."""
    name = f"camera {source}" if isinstance(source, int) else str(source)
    check_pixel_count(name, frame.shape[1], frame.shape[0], max_pixels_limit(max_pixels), FRAMES_ARE)
