"""Region refinement: a second look at each part of the face at the image's own resolution.

The landmark network sees the whole face at 128 px, so a face larger than that is seen coarser
than its pixels allow. The refiner cuts one small patch per face part (eyes, brows, nose, mouth,
jaw halves) from the full-resolution image, framed by a similarity transform that maps the first
prediction of that part onto the part's mean shape, and a small network per part kind predicts
the part's points in the patch. Right-side parts are mirrored so that they look like left-side
ones (one network per kind). This module is torch-free: the patch geometry shared by training
and inference, and :class:`RegionRefiner`, which runs the exported per-kind ONNX graphs.

A refiner folder holds ``refiner.json`` (format ``asmnet-region-refiner``) and ``<kind>.onnx``
for each kind. Patches are RGB float32 (B, 3, S, S) with values 0..255; a graph's output
``points`` (B, 2n) holds each point's offset from its template position, in units of S. A
cascade's later stage (trained on the earlier one's output) is the folder ``next/`` inside it, named
by ``"next": "next"`` in ``refiner.json``. A stage may end with a shape regression
(:mod:`asmnet.shape_regression`, ``"shape_regression": "shape_regression.npz"``): a linear
correction of every point from the whole refined shape.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ModelError
from .fileio import read_small_json
from .formats.image import to_channels
from .geometry import invert_affines, similarity_transform, similarity_transforms, transform_each, transform_points
from .markup import Markup, markup_for
from .metrics import normalising_distance
from .shape_regression import FILE_NAME as SHAPE_FILE
from .shape_regression import ShapeRegression

REFINER_FORMAT = "asmnet-region-refiner"
REFINER_VERSION = 1
MAX_STAGES = 4


@dataclass(frozen=True)
class RegionKind:
    """One kind of face part: its points (the image-left instance), the patch's side in units of
    the inter-ocular distance, its size in pixels, and whether a mirrored right instance exists."""

    name: str
    points: tuple[int, ...]
    side: float
    size: int
    mirrored: bool
    # the smallest face (inter-ocular pixels) it is used on: below that the image holds no more
    # detail than the landmark network's crop (chosen on validation faces by asmnet refiner)
    min_iod: float = 0.0

    def instances(self, markup: Markup) -> list[tuple[np.ndarray, bool]]:
        """(point indices, mirrored) of each instance: the left one, then the mirrored right one."""
        left = np.array(self.points)
        out = [(left, False)]
        if self.mirrored:
            out.append((np.asarray(markup.flip)[left], True))
        return out

    def to_json(self) -> dict:
        return {"name": self.name, "points": list(self.points), "side": self.side, "size": self.size,
                "mirrored": self.mirrored, "min_iod": self.min_iod}


#: The parts of the 68-point markup (patch sides chosen so that a part and its surroundings fit
#: when the first prediction is a few percent off).
KINDS_68: tuple[RegionKind, ...] = (
    RegionKind("eye", tuple(range(36, 42)), 0.55, 40, True),
    RegionKind("brow", tuple(range(17, 22)), 0.75, 40, True),
    RegionKind("nose", tuple(range(27, 36)), 0.8, 48, False),
    RegionKind("mouth", tuple(range(48, 68)), 0.95, 56, False),
    RegionKind("jaw", tuple(range(0, 9)), 1.3, 56, True),
)


def mean_face(shapes: np.ndarray, markup: Markup, iterations: int = 3) -> np.ndarray:
    """Procrustes mean shape (N, 2) of ``shapes`` (K, N, 2): centred, inter-ocular distance 1."""
    a, b = markup.outer_eye_corners
    ref = shapes[0] - shapes[0].mean(0)
    for _ in range(iterations):
        ref = ref / np.linalg.norm(ref[b] - ref[a])
        aligned = np.stack([transform_points(s, similarity_transform(s, ref)) for s in shapes])
        ref = aligned.mean(0)
        ref = ref - ref.mean(0)
    return ref / np.linalg.norm(ref[b] - ref[a])


def template_pixels(kind: RegionKind, face: np.ndarray) -> np.ndarray:
    """The kind's template (n, 2) in patch pixels: its part of the mean ``face``, centred in the patch."""
    part = face[list(kind.points)]
    return (part - part.mean(0)) * (kind.size / kind.side) + (kind.size - 1) / 2.0


def patch_matrix(points: np.ndarray, template: np.ndarray, mirrored: bool) -> np.ndarray:
    """The 2x3 map from image pixels (0-based) to the patch that frames ``points`` (n, 2) like
    ``template`` (a similarity; a mirrored instance is flipped first, so it looks like the left one)."""
    return patch_matrices(np.asarray(points)[None], template, mirrored)[0]


def patch_matrices(points: np.ndarray, template: np.ndarray, mirrored: bool | np.ndarray,
                   weights: np.ndarray | None = None) -> np.ndarray:
    """:func:`patch_matrix` of each face's part ``points`` (B, n, 2): (B, 2, 3). ``mirrored``: one
    flag for all, or one per row (B,); ``template`` (n, 2) or one per row (B, n, 2); ``weights``
    (B, n) of 0 / 1 leave padding points out (see :func:`similarity_transforms`)."""
    source = np.array(points, dtype=np.float64)
    sign = np.where(mirrored, -1.0, 1.0)[..., None]
    source[..., 0] *= sign
    matrices = similarity_transforms(source, template, weights)
    matrices[:, :, 0] *= sign  # framing the mirrored points = mirroring the image, then framing
    return matrices


def cut_patch(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The (size, size, C) patch of ``image`` under ``matrix`` (edges repeated outside the image)."""
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def points_from_patches(offsets: np.ndarray, template: np.ndarray, size: int, matrices: Sequence[np.ndarray]
                        ) -> np.ndarray:
    """Image points (B, n, 2), 0-based, of a part network's outputs ``offsets`` (B, 2n: offsets from
    ``template`` in units of the patch ``size``) for patches cut with ``matrices``."""
    in_patch = np.asarray(offsets).reshape(len(matrices), -1, 2) * size + template
    return transform_each(in_patch, invert_affines(np.asarray(matrices, dtype=np.float64)))


class RegionRefiner:
    """The exported refiner of one landmark model: ``refine`` moves each part's points to where
    its network puts them, for faces whose inter-ocular distance is at least that kind's
    ``min_iod`` pixels (below that the image holds no more detail than the landmark network's crop)."""

    def __init__(self, folder: str | Path, _depth: int = 0):
        import onnxruntime as ort

        self.folder = Path(folder)
        meta_path = self.folder / "refiner.json"
        meta = read_small_json(meta_path)
        if not isinstance(meta, dict) or meta.get("format") != REFINER_FORMAT:
            raise ModelError(meta_path, "not an asmnet region refiner")
        if meta.get("version") != REFINER_VERSION:
            raise ModelError(meta_path, f"refiner version {meta.get('version')!r}, this asmnet reads {REFINER_VERSION}")
        try:
            self.markup = markup_for(int(meta["num_points"]))
            self.kinds = [RegionKind(k["name"], tuple(int(i) for i in k["points"]), float(k["side"]), int(k["size"]),
                                     bool(k["mirrored"]), float(k["min_iod"])) for k in meta["kinds"]]
            self.face = np.asarray(meta["mean_face"], dtype=np.float64).reshape(self.markup.n_points, 2)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(meta_path, f"malformed refiner description ({exc})") from None
        if not np.isfinite(self.face).all():
            raise ModelError(meta_path, "mean_face must be finite")
        for kind in self.kinds:
            if not (0 < kind.side < 10 and 8 <= kind.size <= 256 and all(0 <= i < self.markup.n_points for i in kind.points)
                    and math.isfinite(kind.min_iod) and kind.min_iod >= 0):
                raise ModelError(meta_path, f"kind {kind.name!r} out of range (side, size, points, min_iod)")
        # one thread per part network: the networks are tiny (2-4 M multiply-adds), and with more
        # each session's thread pool spun against the landmark network's and the detector's (with 2
        # threads on 2 cores a face took 27 ms instead of 11)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.sessions = {}
        for kind in self.kinds:
            path = self.folder / f"{kind.name}.onnx"
            if not path.is_file():
                raise ModelError(path, f"missing (the refiner lists kind {kind.name!r})")
            try:
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # ONNX Runtime's own errors: a corrupt or foreign file
                raise ModelError(path, f"not a loadable ONNX graph ({type(exc).__name__})") from None
            if [i.name for i in session.get_inputs()] != ["patches"]:
                raise ModelError(path, "not a refiner graph (its input must be 'patches')")
            self.sessions[kind.name] = session
        self._plan: tuple[tuple[RegionKind, ...], PatchPlan | None] | None = None  # built on first use
        # after the part networks, a linear correction of every point from the whole shape
        self.shape: ShapeRegression | None = None
        if meta.get("shape_regression") is not None:
            if meta["shape_regression"] != SHAPE_FILE:
                raise ModelError(meta_path, f"'shape_regression' must be {SHAPE_FILE!r}")
            self.shape = ShapeRegression.load(self.folder / SHAPE_FILE)
            if self.shape.num_points != self.markup.n_points:
                raise ModelError(self.folder / SHAPE_FILE, "a shape regression for another point count")
        # a cascade: the next stage (trained on this one's output) sits in the sub-folder next/
        self.next: RegionRefiner | None = None
        if meta.get("next") is not None:
            if meta["next"] != "next" or _depth >= MAX_STAGES - 1:
                raise ModelError(meta_path, f"'next' must be \"next\" and a cascade at most {MAX_STAGES} stages")
            self.next = RegionRefiner(self.folder / "next", _depth + 1)
            if self.next.markup.n_points != self.markup.n_points:
                raise ModelError(self.folder / "next", "a stage for another point count")

    @property
    def stages(self) -> int:
        """How many refiners run one after the other (this one and its ``next`` stages)."""
        return 1 + (self.next.stages if self.next is not None else 0)

    def refine(self, images: Sequence[np.ndarray], owner: np.ndarray, points: np.ndarray, origin: float,
               channel_order: str = "bgr") -> np.ndarray:
        """Refined copy of ``points`` (K, N, 2; face k in ``images[owner[k]]``, pixel centres at
        ``origin``), through every stage. A face below a kind's ``min_iod`` keeps that part's points."""
        return self.refine_stages(images, owner, points, origin, channel_order)[-1]

    def refine_stages(self, images: Sequence[np.ndarray], owner: np.ndarray, points: np.ndarray, origin: float,
                      channel_order: str = "bgr") -> list[np.ndarray]:
        """The points after each stage in turn (this one, then its ``next`` stages): :meth:`refine`
        with the stages' intermediate results."""
        out, stage = [], self
        while stage is not None:
            points = stage._refine_alone(images, owner, points, origin, channel_order)
            out.append(points)
            stage = stage.next
        return out

    def _refine_alone(self, images: Sequence[np.ndarray], owner: np.ndarray, points: np.ndarray, origin: float,
                      channel_order: str) -> np.ndarray:
        """This stage's part networks, then its shape regression; not the next stages."""
        out = np.array(points, dtype=np.float64)
        zero_based = out - origin
        plan = self._patch_plan()
        if plan is None:  # a stage that is only a shape regression
            return self._shape_corrected(out, origin)
        # one row per (part instance, face) that is refined, instance-major, so each kind's rows
        # are one run; frames and their inverses for all kinds at once (a face's refiner is a few
        # hundred NumPy calls, and per-kind calls were half of its time)
        instance, face = np.nonzero(normalising_distance(zero_based, self.markup)[None, :] >= plan.min_iod[:, None])
        if len(face) == 0:
            return self._shape_corrected(out, origin)
        index, used, template = plan.index[instance], plan.used[instance], plan.template[instance]
        matrices = patch_matrices(zero_based[face[:, None], index], template, plan.mirrored[instance], used)
        offsets = np.zeros(index.shape + (2,))
        bounds = np.searchsorted(plan.kind[instance], np.arange(len(self.kinds) + 1))
        for k, kind in enumerate(self.kinds):
            rows = range(bounds[k], bounds[k + 1])
            if len(rows) == 0:
                continue
            patches = np.stack([cut_patch(images[owner[face[r]]], matrices[r], kind.size) for r in rows])
            found = self.sessions[kind.name].run(None, {"patches": patch_batch(patches, channel_order)})[0]
            offsets[rows.start:rows.stop, :len(kind.points)] = found.reshape(len(rows), -1, 2) * kind.size
        moved = transform_each(offsets + template, invert_affines(matrices))
        keep = used > 0
        out[np.broadcast_to(face[:, None], keep.shape)[keep], index[keep]] = moved[keep] + origin
        return self._shape_corrected(out, origin)

    def _patch_plan(self) -> PatchPlan | None:
        """The :class:`PatchPlan` of the current ``kinds`` (rebuilt if they were replaced); None without kinds."""
        kinds = tuple(self.kinds)
        if self._plan is None or self._plan[0] != kinds:
            self._plan = (kinds, PatchPlan.build(kinds, self.markup, self.face) if kinds else None)
        return self._plan[1]

    def _shape_corrected(self, points: np.ndarray, origin: float) -> np.ndarray:
        """This stage's shape regression (if any) on its part networks' output."""
        return points if self.shape is None else self.shape.apply(points, origin)


@dataclass(frozen=True)
class PatchPlan:
    """Every part instance of a refiner's kinds (the left one, then the mirrored right one, kind by
    kind), padded to the longest part so that all frames are computed together."""

    kind: np.ndarray  # (R,) index of the instance's kind
    index: np.ndarray  # (R, m) point indices, padded by repeating the last one
    used: np.ndarray  # (R, m) 1 for the part's points, 0 for padding
    template: np.ndarray  # (R, m, 2) the kind's template in patch pixels, padded likewise
    mirrored: np.ndarray  # (R,) bool
    min_iod: np.ndarray  # (R,) the kind's min_iod

    @classmethod
    def build(cls, kinds: Sequence[RegionKind], markup: Markup, face: np.ndarray) -> PatchPlan:
        width = max(len(kind.points) for kind in kinds)
        rows = [(k, indices, mirrored) for k, kind in enumerate(kinds) for indices, mirrored in kind.instances(markup)]

        def pad(values: np.ndarray) -> np.ndarray:
            return np.concatenate([values, np.repeat(values[-1:], width - len(values), axis=0)])

        return cls(kind=np.array([k for k, _, _ in rows]),
                   index=np.stack([pad(np.asarray(indices)) for _, indices, _ in rows]),
                   used=np.array([[1.0] * len(indices) + [0.0] * (width - len(indices)) for _, indices, _ in rows]),
                   template=np.stack([pad(template_pixels(kinds[k], face)) for k, _, _ in rows]),
                   mirrored=np.array([mirrored for _, _, mirrored in rows]),
                   min_iod=np.array([kinds[k].min_iod for k, _, _ in rows]))


def patch_batch(patches: np.ndarray, channel_order: str) -> np.ndarray:
    """A part network's input (B, 3, S, S) float32 RGB of patches (B, S, S[, C]) cut from images
    in ``channel_order``."""
    if patches.ndim == 4 and patches.shape[3] == 3:  # colour: reorder the whole batch at once
        rgb = patches[..., ::-1] if channel_order == "bgr" else patches
    else:  # gray or with alpha: convert each patch
        rgb = np.stack([to_channels(p, channel_order, "rgb") for p in patches])
    return np.ascontiguousarray(rgb.transpose(0, 3, 1, 2), dtype=np.float32)


def write_refiner_json(folder: Path, kinds: Sequence[RegionKind], face: np.ndarray, extra: dict) -> None:
    """Write ``folder/refiner.json`` (atomically)."""
    from .fileio import write_json_atomic

    doc = {"format": REFINER_FORMAT, "version": REFINER_VERSION, "num_points": int(len(face)),
           "kinds": [k.to_json() for k in kinds], "mean_face": np.asarray(face).round(6).tolist(), **extra}
    json.dumps(doc)  # fail before writing anything unserialisable
    write_json_atomic(folder / "refiner.json", doc)


def load_refiner(model: str | Path | None, required: bool = True) -> RegionRefiner | None:
    """The region refiner of a landmark model: the ``refiner/`` folder of its package (a shipped
    name, a package folder, or None for the default model). Without one: None, or with
    ``required`` a :class:`ModelError` (one line)."""
    from .runtime import resolve_model

    package = resolve_model(model)
    folder = package / "refiner" if package.is_dir() else package.with_name("refiner")
    if not (folder / "refiner.json").is_file():
        if not required:
            return None
        raise ModelError(folder, f"model {package.name!r} has no region refiner (the shipped 'default' and 'accurate' have one; "
                         "train one: asmnet refiner --base MODEL ..., then copy its refiner/ folder into the package)")
    return RegionRefiner(folder)
