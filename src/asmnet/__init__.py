"""asmnet: lightweight face landmarks (68/98 points) and head pose, trained with ASM-LOSS.

>>> from asmnet import FaceAligner
>>> faces = FaceAligner()("photo.jpg")  # doctest: +SKIP
"""

from .api import Face, FaceAligner
from .errors import AsmnetError, DataError, ModelError
from .video import FaceSmoother, FaceTracker, TrackedFace, VideoFrame

__version__ = "0.1.0"

__all__ = ["AsmnetError", "DataError", "Face", "FaceAligner", "FaceSmoother", "FaceTracker", "ModelError",
           "TrackedFace", "VideoFrame", "__version__"]
