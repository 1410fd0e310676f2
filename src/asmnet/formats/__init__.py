"""Readers for face annotations and images: iBUG .pts, pose.csv, WFLW lists, 300W-LP .mat."""

from asmnet.formats.faces import FaceRecord, key_folder, load_faces, load_many
from asmnet.formats.image import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    decode_image_array,
    read_image,
)
from asmnet.formats.mat import read_pose_mat
from asmnet.formats.pose_csv import read_pose_csv
from asmnet.formats.pts import read_pts, write_pts
from asmnet.formats.wflw import WFLW_ATTRIBUTES, read_wflw_list, subset

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "WFLW_ATTRIBUTES",
    "FaceRecord",
    "decode_image_array",
    "key_folder",
    "load_faces",
    "load_many",
    "read_image",
    "read_pose_csv",
    "read_pose_mat",
    "read_pts",
    "read_wflw_list",
    "subset",
    "write_pts",
]
