"""Inference never reaches into training code, and what should work without PyTorch does.

Each check runs in a fresh interpreter in which ``import torch`` fails (a meta-path finder refuses
it), so the result does not depend on what the test process imported before.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
BLOCK_TORCH = textwrap.dedent("""
    import sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
            return None

    sys.meta_path.insert(0, NoTorch())
""")
INFERENCE_MODULES = ["asmnet", "asmnet.api", "asmnet.runtime", "asmnet.inference", "asmnet.jobs",
                     "asmnet.jobs.predict", "asmnet.jobs.align", "asmnet.jobs.local_engine", "asmnet.jobs.ray_engine",
                     "asmnet.evaluation", "asmnet.video", "asmnet.draw", "asmnet.detection", "asmnet.metrics",
                     "asmnet.benchmark", "asmnet.formats", "asmnet.fileio", "asmnet.align", "asmnet.onnx_graph",
                     "asmnet.quality", "asmnet.records", "asmnet.architectures", "asmnet.package"]


def run_python(code: str, block_torch: bool = True) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    script = (BLOCK_TORCH if block_torch else "") + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)


def test_inference_modules_import_without_torch_and_without_training():
    res = run_python(f"""
        import importlib
        for name in {INFERENCE_MODULES!r}:
            importlib.import_module(name)
        leaked = sorted(m for m in sys.modules if m.split(".")[:2] in (["asmnet", "training"], ["asmnet", "packaging"]))
        assert not leaked, leaked
        assert "torch" not in sys.modules
    """)
    assert res.returncode == 0, res.stderr


def test_the_command_line_and_train_config_need_no_torch():
    res = run_python("""
        from asmnet.cli import build_parser, config_from_args
        from asmnet.training.config import TrainConfig

        args = build_parser().parse_args(["train", "--data", "d", "--out", "o"])
        assert config_from_args(TrainConfig, args) == TrainConfig(data=["d"], out="o")
        assert "torch" not in sys.modules and "asmnet.training.trainer" not in sys.modules
    """)
    assert res.returncode == 0, res.stderr


def test_torch_backend_loads_weights_without_training_code(tmp_path):
    pytest.importorskip("torch")
    from asmnet.runtime import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "weights.pt").exists():
        pytest.skip("the shipped model has no weights.pt")
    res = run_python("""
        import sys
        import numpy as np
        from asmnet.runtime import load_model

        model = load_model(None, backend="torch", threads=1)
        units, pose = model.run(np.zeros((1, model.info.input_size, model.info.input_size, 3), np.uint8))
        assert units.shape == (1, 68, 2) and pose.shape == (1, 3)
        assert not any(m.startswith(("asmnet.training", "asmnet.packaging")) for m in sys.modules), "training imported"
    """, block_torch=False)
    assert res.returncode == 0, res.stderr


def test_one_import_style_inside_the_package():
    """Modules of asmnet import each other relatively (``from .errors import ...``)."""
    import ast

    offenders = []
    for path in sorted((SRC / "asmnet").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(n == "asmnet" or n.startswith("asmnet.") for n in names):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == []
