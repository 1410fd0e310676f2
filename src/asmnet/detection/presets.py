"""Named sets of detector options (``FaceAligner(preset=...)``, ``asmnet predict --recall``).

A preset gives each detector the options it names; options passed explicitly win over the
preset's. Chosen by ``benchmarks/turned_faces.py`` (recall on turned faces and turned copies of
them, false faces on pictures without a face, CPU time; see benchmarks/README.md "Turned faces"):

* ``recall``: more of the faces tilted in the picture, at about 2-4x the detector's time (so it
  is not the default). MTCNN: the image also searched turned by -30 and +30 degrees (lower R-Net
  / O-Net thresholds found fewer of the tilted faces than this, found none more beside it, and
  cost time); dlib's HOG: score threshold -0.4 (its old default).
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "recall": {
        "mtcnn": {"angles": (-30.0, 30.0)},
        "dlib-hog": {"threshold": -0.4},
    },
}


def preset_options(preset: str | None, detector: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options for the detector named ``detector`` under ``preset``, the ``options`` given
    explicitly taking precedence (``preset=None``: ``options`` unchanged). Raises ValueError for
    an unknown preset."""
    if preset is None:
        return dict(options)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (choose from: {', '.join(PRESETS)})")
    return {**PRESETS[preset].get(detector, {}), **options}
