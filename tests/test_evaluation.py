"""evaluate() returns a typed EvaluationResult whose to_dict() is the `asmnet evaluate --json` file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from asmnet.cli import main
from asmnet.evaluation import EvaluationResult, FolderResult, ImageResult, evaluate
from asmnet.formats import load_many
from asmnet.regions import load_refiner
from asmnet.runtime import DEFAULT_MODEL_DIR, load_model

JSON_KEYS = ["n", "nme_mean", "nme_median", "fr_0.08", "fr_0.10", "auc_0.08", "auc_0.10", "pose_mae", "pose_n",
             "per_image", "norm", "per_folder", "per_subfolder", "detector_misses", "miss_rate", "missed",
             "unreadable", "model", "annotation_errors", "annotation_notes", "annotation_origin", "training_faces"]

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").exists(), reason="no shipped model")


def test_result_fields_and_json(synthetic_set, tmp_path):
    records = load_many([str(synthetic_set)])[0][:12]
    # with the package's refiner, as asmnet evaluate runs the default model
    res = evaluate(load_model(None, threads=1), records, progress=False, refiner=load_refiner(None, required=False))
    assert isinstance(res, EvaluationResult) and res.n == 12 and res.model == "default"
    assert all(isinstance(i, ImageResult) for i in res.per_image)
    assert isinstance(res.per_folder["synth"], FolderResult) and res.per_folder["synth"].n == 12
    assert res.nmes.shape == (12,) and res.nme_mean == pytest.approx(float(res.nmes.mean()))
    assert 0 <= res.fr_8 <= 100 and 0 <= res.auc_8 <= 1 and res.detector_misses == 0 and res.pose_n == 12
    doc = res.to_dict()
    assert list(doc) == JSON_KEYS
    assert doc["fr_0.10"] == res.fr_10 and doc["per_image"][0] == vars(res.per_image[0])
    json.dumps(doc)  # plain Python values only
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--data", str(synthetic_set), "--threads", "1", "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert list(written) == JSON_KEYS and written["n"] == 64
    assert np.isclose(written["per_image"][0]["nme"], res.per_image[0].nme)
