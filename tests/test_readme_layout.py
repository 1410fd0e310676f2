"""The README's layout section names every module, script and benchmark of the tree, and only
files that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Layout\n"):]
    return section[section.index("```") + 3:section.index("```", section.index("```") + 3)]


def test_layout_names_every_file_of_the_tree_and_no_other():
    block = layout_block()
    named = set(re.findall(r"[\w-]+\.(?:py|sh)\b", block))
    tree = [p for p in (ROOT / "src" / "asmnet").rglob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    tree += [p for p in (ROOT / "scripts").iterdir() if p.suffix in (".py", ".sh")]
    tree += list((ROOT / "benchmarks").glob("*.py"))
    missing = sorted(str(p.relative_to(ROOT)) for p in tree if p.name not in named)
    assert missing == [], f"README layout lacks {missing}"
    existing = {p.name for p in tree}
    assert sorted(named - existing) == [], "README layout names files that do not exist"
    for folder in re.findall(r"^\s*([\w-]+)/", block, re.M):
        assert (ROOT / folder).is_dir() or (ROOT / "src" / "asmnet" / folder).is_dir(), folder
