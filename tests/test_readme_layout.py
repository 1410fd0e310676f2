"""The README is a front page that leads to the docs: its first lines are the two commands CI runs,
it stays short and links to docs pages that exist, every link of the README and the docs resolves,
every ``asmnet`` command they show parses, user docs carry no issue numbers or dated notes, and the
layout list in docs/contributing.md names every module, script and benchmark of the tree, and only
files that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from asmnet.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
USER_DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


def layout_block() -> str:
    text = (ROOT / "docs" / "contributing.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Layout\n"):]
    return section[section.index("```") + 3:section.index("```", section.index("```") + 3)]


def test_layout_names_every_file_of_the_tree_and_no_other():
    block = layout_block()
    named = set(re.findall(r"[\w-]+\.(?:py|sh)\b", block))
    tree = [p for p in (ROOT / "src" / "asmnet").rglob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    tree += [p for p in (ROOT / "scripts").iterdir() if p.suffix in (".py", ".sh")]
    tree += list((ROOT / "benchmarks").glob("*.py"))
    missing = sorted(str(p.relative_to(ROOT)) for p in tree if p.name not in named)
    assert missing == [], f"docs/contributing.md layout lacks {missing}"
    existing = {p.name for p in tree}
    assert sorted(named - existing) == [], "docs/contributing.md layout names files that do not exist"
    for folder in re.findall(r"^\s*([\w-]+)/", block, re.M):
        assert (ROOT / folder).is_dir() or (ROOT / "src" / "asmnet" / folder).is_dir(), folder


def test_readme_starts_with_the_two_commands_ci_runs():
    lines = README.read_text(encoding="utf-8").splitlines()
    demo, tests = lines[0], lines[2]
    assert lines[1] == "" and lines[3] == ""
    assert demo.startswith("python3 -m venv .venv && ") and demo.endswith(".venv/bin/asmnet demo --out asmnet-demo")
    assert tests.startswith("python3 -m venv .venv && ") and tests.endswith(".venv/bin/python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests in ci, ".ci/run must run exactly the README's test command"


def test_readme_is_a_front_page_that_links_to_the_docs():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    pages = set(re.findall(r"\]\((docs/[\w-]+\.md)", text))
    assert len(pages) >= 3, pages
    for heading in ("## Quick start", "### Output schema", "## Conventions", "## Shipped models and speed",
                    "## Coming from face-alignment, dlib or MediaPipe", "## Train on your own data"):
        assert heading in text, heading


@pytest.mark.parametrize("page", USER_DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name}: link to {target} leads nowhere"


@pytest.mark.parametrize("page", USER_DOCS, ids=lambda p: p.name)
def test_user_docs_carry_no_issue_numbers_or_dated_notes(page):
    text = page.read_text(encoding="utf-8")
    assert not re.findall(r"\b[Ii]ssues? \d+", text)
    assert not re.findall(r"\b20\d\d-\d\d-\d\d\b", text)
    assert "previous default" not in text


def shown_commands(text: str) -> list[list[str]]:
    """The ``asmnet`` command lines of the code blocks, continuation lines joined; lines with
    placeholders (``...``, ``[--flag]``) are not whole commands and are left out."""
    out = []
    for body in re.findall(r"^```\w*\n(.*?)^```", text, re.S | re.M):
        for line in body.replace("\\\n", " ").splitlines():
            if "..." in line or "[" in line.split("#")[0]:
                continue
            try:
                argv = shlex.split(line, comments=True)
            except ValueError:
                continue
            if argv and argv[0] == "asmnet":
                out.append(argv[1:])
    return out


@pytest.mark.parametrize("page", USER_DOCS, ids=lambda p: p.name)
def test_every_command_shown_parses(page):
    """The README's commands run in tests/test_readme.py; here every shown command, the docs'
    included, must at least be accepted by the command line's parser."""
    parser = build_parser()
    for argv in shown_commands(page.read_text(encoding="utf-8")):
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{page.name}: asmnet {shlex.join(argv)} does not parse (exit {exc.code})")
