"""The repository stands alone: every ``docs/<page>.md#anchor`` that code, docs or tests cite exists, and no file
points at a document outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("rmt_callbacks", "reference_models", "benchmarks", "examples", "docs", "tests")
CITATION = re.compile(r"docs/([a-z_]+\.md)(?:#([a-z0-9-]+))?")
OUTSIDE = re.compile(r"paper\.md|style\.md|ecosystem\.md|\.\./shared")


def _files() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
    for folder in SOURCES:
        found += [p for p in (ROOT / folder).rglob("*") if p.suffix in {".py", ".md", ".toml", ".txt"}]
    return sorted(p for p in found if p.is_file() and p != Path(__file__).resolve())


def _anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    explicit = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', text))
    headings = {  # GitHub's slugs: lower case, punctuation dropped, spaces to hyphens
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)
    }
    return explicit | headings


def test_every_cited_page_and_anchor_exists() -> None:
    missing = []
    for path in _files():
        for page, anchor in CITATION.findall(path.read_text(encoding="utf-8", errors="replace")):
            target = ROOT / "docs" / page
            if not target.exists():
                missing.append(f"{path.relative_to(ROOT)}: docs/{page} does not exist")
            elif anchor and anchor not in _anchors(target):
                missing.append(f"{path.relative_to(ROOT)}: docs/{page}#{anchor} has no such anchor")
    assert not missing, "\n".join(sorted(set(missing)))


@pytest.mark.parametrize("pattern", ["docs/science.md#heavy-tails", "docs/science.md#gaussian-rbm"])
def test_anchors_sit_on_their_sections(pattern: str) -> None:
    text = (ROOT / "docs" / "science.md").read_text(encoding="utf-8")
    anchor = pattern.split("#")[1]
    after = text.split(f'<a id="{anchor}"></a>', 1)[1].lstrip().splitlines()[0].lower()
    assert after.startswith("## ") and anchor.split("-")[0] in after, after


def test_nothing_cites_a_document_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in _files()
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not offenders, offenders
