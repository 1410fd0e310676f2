"""The learned failure score: the error head's estimate of a face's NME, with the second look's point move.

A model whose ONNX graph has the ``error`` output (the *error head*: one linear layer on the
pooled features the landmark head reads, fitted to predict ln(NME %) of the crop's own
landmarks; ``scripts/fit_quality.py``) carries ``quality_model`` in its model.json: for each
kind of setting, the coefficients of

    quality = exp(intercept + error * e + move * ln(m + move_offset))

where ``e`` is the error head's output averaged over the passes whose points make the result
(the second-look passes, or the one pass; with ``flip_tta`` also over the mirrored crops) and
``m`` is how far the last second-look pass moved the points, in % of the predicted inter-ocular
distance (the ``refine1`` / ``refine2`` score). The coefficients are a least-squares fit of
ln(NME %) on training faces, so the score reads as an estimated NME in percent. ``error`` > 0
and ``move`` >= 0: the score never falls when either signal grows. Kinds: ``learned0`` (one
pass, no move term), ``learned1`` (one second-look pass), ``learned2`` (two or more).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError

LEARNED_KINDS = ("learned0", "learned1", "learned2")
QUALITY_MODEL_VERSION = 1
_MAX_EXPONENT = 50.0  # exp(50) % is already absurd; keeps the score finite for any finite input
_MAX_TERM = 1e3  # a coefficient beyond this is no fit of ln(NME %): the file is broken
MAX_FLAGGED = 0.05  # a model's threshold for a score flags at most this share of its validation faces


def flag_threshold(scores: np.ndarray) -> float:
    """The threshold that flags at most :data:`MAX_FLAGGED` of ``scores`` (quality > threshold):
    the sorted score at the 1 - MAX_FLAGGED position itself, as the shipped models' thresholds
    are set (benchmarks/second_look.py). Non-finite scores are left out; ValueError when none is left."""
    finite = np.asarray(scores, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        raise ValueError("no finite quality score to place a threshold on")
    return float(np.quantile(finite, 1.0 - MAX_FLAGGED, method="higher"))


def learned_kind(refine: int) -> str:
    """The learned kind for ``refine`` second-look passes (2 stands for 2 or more)."""
    return LEARNED_KINDS[min(int(refine), 2)]


@dataclass(frozen=True)
class QualityTerms:
    """The coefficients of one kind (see the module docstring)."""

    intercept: float
    error: float
    move: float = 0.0
    move_offset: float = 0.05

    def score(self, error: np.ndarray, move: np.ndarray | None) -> np.ndarray:
        """The quality (K,) from the mean error-head output (K,) and the last pass's move in % of
        the inter-ocular distance (K,) (None: no second look; the move term is left out)."""
        z = self.intercept + self.error * np.asarray(error, dtype=np.float64)
        if move is not None and self.move:
            z = z + self.move * np.log(np.maximum(np.asarray(move, dtype=np.float64), 0.0) + self.move_offset)
        return np.exp(np.minimum(z, _MAX_EXPONENT))


@dataclass
class QualityModel:
    """model.json ``quality_model``: the terms of each learned kind, and how they were fitted."""

    kinds: dict[str, QualityTerms]
    fitted: dict = field(default_factory=dict)  # a description (data, perturbations, sizes); not used to score

    def score(self, kind: str, error: np.ndarray, move: np.ndarray | None) -> np.ndarray:
        """The quality of ``kind`` (a key of ``kinds``)."""
        return self.kinds[kind].score(error, move)

    def to_json(self) -> dict[str, Any]:
        return {"version": QUALITY_MODEL_VERSION,
                "formula": "exp(intercept + error * e + move * ln(m + move_offset))",
                "kinds": {k: {"intercept": t.intercept, "error": t.error, "move": t.move, "move_offset": t.move_offset}
                          for k, t in self.kinds.items()},
                "fitted": self.fitted}

    @classmethod
    def from_json(cls, data: Any, source: str | Path) -> QualityModel | None:
        """Parse and check model.json's ``quality_model`` (None when absent); :class:`ModelError`
        naming ``source`` for anything that could not score a face sensibly."""
        if data is None:
            return None
        if not isinstance(data, dict):
            raise ModelError(source, f"quality_model must be an object, got {type(data).__name__}")
        if data.get("version") != QUALITY_MODEL_VERSION:
            raise ModelError(source, f"quality_model version {data.get('version')!r}; this asmnet reads "
                             f"{QUALITY_MODEL_VERSION}")
        kinds = data.get("kinds")
        if not isinstance(kinds, dict) or not kinds:
            raise ModelError(source, "quality_model.kinds must be a non-empty object")
        parsed = {}
        for kind, terms in kinds.items():
            if kind not in LEARNED_KINDS:
                raise ModelError(source, f"quality_model: unknown kind {kind!r} (known: {', '.join(LEARNED_KINDS)})")
            parsed[kind] = _terms(kind, terms, source)
        fitted = data.get("fitted", {})
        if not isinstance(fitted, dict):
            raise ModelError(source, "quality_model.fitted must be an object")
        return cls(parsed, dict(fitted))


def _terms(kind: str, terms: Any, source: str | Path) -> QualityTerms:
    if not isinstance(terms, dict):
        raise ModelError(source, f"quality_model.kinds.{kind} must be an object")
    unknown = set(terms) - {"intercept", "error", "move", "move_offset"}
    if unknown:
        raise ModelError(source, f"quality_model.kinds.{kind}: unknown field(s) {sorted(unknown)}")
    values = {}
    for name, default in (("intercept", None), ("error", None), ("move", 0.0), ("move_offset", 0.05)):
        value = terms.get(name, default)
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or abs(value) > _MAX_TERM):
            raise ModelError(source, f"quality_model.kinds.{kind}.{name} must be a finite number within "
                             f"+-{_MAX_TERM:g}, got {value!r}")
        values[name] = float(value)
    if values["error"] <= 0:
        raise ModelError(source, f"quality_model.kinds.{kind}.error must be > 0 (the score must grow with the "
                         f"predicted error), got {values['error']}")
    if values["move"] < 0:
        raise ModelError(source, f"quality_model.kinds.{kind}.move must be >= 0, got {values['move']}")
    if values["move_offset"] <= 0:
        raise ModelError(source, f"quality_model.kinds.{kind}.move_offset must be > 0, got {values['move_offset']}")
    if kind == "learned0" and values["move"]:
        raise ModelError(source, "quality_model.kinds.learned0 has a move term, but one pass has no move")
    return QualityTerms(**values)
