"""Readers for face annotations and images: iBUG .pts, pose.csv, WFLW lists, 300W-LP .mat."""

from .face_record import FaceRecord, key_folder
from .faces import load_faces, load_many
from .image import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    decode_image_array,
    image_pixels,
    read_image,
    to_bgr,
    to_rgb,
)
from .mat import read_pose_mat
from .pose_csv import read_pose_csv
from .pts import read_pts, write_pts
from .wflw import WFLW_ATTRIBUTES, read_wflw_list, subset

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "WFLW_ATTRIBUTES",
    "FaceRecord",
    "decode_image_array",
    "image_pixels",
    "key_folder",
    "load_faces",
    "load_many",
    "read_image",
    "read_pose_csv",
    "read_pose_mat",
    "read_pts",
    "read_wflw_list",
    "subset",
    "to_bgr",
    "to_rgb",
    "write_pts",
]
