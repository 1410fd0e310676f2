"""Head-pose convention: 300W-LP / AFLW2000-3D, angles in degrees.

yaw > 0 turns the face towards the image's left, pitch > 0 looks up, roll > 0 tilts the head
clockwise as displayed. ``R = Rx(pitch) @ Ry(yaw) @ Rz(roll)`` with 300W-LP's matrices (model
frame: x to the image's right, y up, z towards the camera).
"""

from __future__ import annotations

import numpy as np


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation of a head pose given in degrees (300W-LP order and signs)."""
    p, y, r = np.deg2rad([pitch, yaw, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), np.sin(r), 0], [-np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rx @ ry @ rz


def angles_from_matrix(rot: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees of a rotation built by :func:`rotation_matrix`."""
    yaw = -np.arcsin(np.clip(rot[0, 2], -1.0, 1.0))
    pitch = np.arctan2(rot[1, 2], rot[2, 2])
    roll = np.arctan2(rot[0, 1], rot[0, 0])
    return np.rad2deg([yaw, pitch, roll])


def rotate_pose_in_image(pose: np.ndarray, angle_deg: float) -> np.ndarray:
    """Pose after the image is rotated by ``angle_deg`` counter-clockwise as displayed.

    This is the rotation ``cv2.getRotationMatrix2D(c, angle_deg, 1)`` applies. The head turns
    about the camera axis, so ``R' = Rz(a) @ R`` with the standard counter-clockwise Rz; for a
    near-frontal face roll falls by about ``angle_deg``, and yaw/pitch move for turned faces.
    """
    a = np.deg2rad(angle_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return angles_from_matrix(rz @ rotation_matrix(*pose))


def flip_pose(pose: np.ndarray) -> np.ndarray:
    """Pose of the horizontally mirrored face: (-yaw, pitch, -roll)."""
    yaw, pitch, roll = pose
    return np.array([-yaw, pitch, -roll], dtype=np.float64)
