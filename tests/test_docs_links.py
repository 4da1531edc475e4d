"""Every relative link in the Markdown docs (README.md, CONTRIBUTING.md, docs/*.md) points to a
file that exists, and every ``#anchor`` to a heading of the linked page, as GitHub names it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.exporter import REPO

DOCS = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]+)\"", re.I)
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def without_code(markdown: str) -> str:
    """The text with fenced blocks removed and code spans emptied (their links are not links)."""
    text = FENCE.sub("", markdown)
    return CODE_SPAN.sub("code", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation dropped, spaces to ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every anchor a page offers, with GitHub's ``-1``, ``-2`` suffixes for repeated headings."""
    seen: dict[str, int] = {}
    result = set()
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def link_targets(markdown: str) -> Iterator[str]:
    text = without_code(markdown)
    for pattern in (INLINE_LINK, REFERENCE_LINK, HTML_LINK):
        yield from pattern.findall(text)


def broken_links(page: Path, markdown: str, root: Path = REPO) -> list[str]:
    """Why each relative link of ``page`` (whose text is ``markdown``) does not resolve to a
    file under ``root`` or to a heading of it."""
    problems = []
    for target in link_targets(markdown):
        if SCHEME.match(target):
            continue  # http:, https:, mailto: are not checked here
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            problems.append(f"{target}: no file {linked}")
            continue
        if root.resolve() not in (linked, *linked.parents):
            problems.append(f"{target}: outside the repository")
            continue
        if anchor:
            if linked.suffix != ".md":
                problems.append(f"{target}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(markdown if linked == page else linked.read_text()):
                problems.append(f"{target}: no heading #{anchor} in {linked.name}")
    return problems


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    problems = broken_links(page, page.read_text())
    assert not problems, f"{page.relative_to(REPO)}:\n" + "\n".join(problems)


def test_the_pages_link_to_each_other() -> None:
    readme_targets = set(link_targets((REPO / "README.md").read_text()))
    for page in DOCS[2:]:
        if page.name not in ("design.md", "benchmarks.md"):
            assert f"docs/{page.name}" in readme_targets, f"README.md does not link to {page.name}"
    assert "CONTRIBUTING.md" in readme_targets


def test_slugs_follow_github() -> None:
    assert slug("TLS and basic auth (`--web.config.file`)") == "tls-and-basic-auth---webconfigfile"
    assert slug("kvm_stats (`query-stats`, QEMU 7.1+ with KVM)") == (
        "kvm_stats-query-stats-qemu-71-with-kvm"
    )
    assert slug("The exporter's own metrics") == "the-exporters-own-metrics"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_a_broken_link_or_anchor_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Present\n")
    page = tmp_path / "page.md"
    text = (
        "# Page\n[ok](other.md#present) [gone](missing.md) [bad](other.md#absent)\n"
        "[self](#nowhere) [top](#page)\n"
        "`[in code](missing-too.md)` [web](https://example.org/x#y)\n"
        "```\n[fenced](missing-three.md)\n```\n"
    )
    page.write_text(text)
    problems = broken_links(page, text, root=tmp_path)
    assert [p.split(":")[0] for p in problems] == ["missing.md", "other.md#absent", "#nowhere"]
