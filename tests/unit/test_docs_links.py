"""Every link in README.md and docs/*.md leads to a file of this repository (and, for a
``#anchor``, to a heading of that file), and no page links or points outside it.

Links are Markdown inline links ``[text](target)`` outside fenced code blocks and inline code.
Anchors are GitHub's heading slugs: lower case, punctuation dropped, spaces to hyphens, a
repeated slug suffixed ``-1``, ``-2``, ...
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose(text: str) -> str:
    """The page without fenced code blocks and inline code (links there are not links)."""
    return _CODE.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    """The targets of the Markdown links of ``text``, in order."""
    return _LINK.findall(_prose(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading (before de-duplication)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a Markdown page, duplicates numbered as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    for h in _HEADING.findall(_FENCE.sub("", text)):
        s = slug(h)
        n = seen.get(s, 0)
        out.add(s if n == 0 else f"{s}-{n}")
        seen[s] = n + 1
    return out


def problems(page: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the links of one page (empty when every link resolves inside ``root``)."""
    text = page.read_text(encoding="utf-8")
    out = []
    if re.search(r"https?://|www\.", _prose(text)):
        out.append("a web address outside code: no page may point outside the repository")
    for target in links(text):
        if _SCHEME.match(target) or target.startswith("//"):
            out.append(f"{target}: links must stay inside the repository")
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if root not in (dest, *dest.parents):
            out.append(f"{target}: leads outside the repository")
        elif not dest.exists():
            out.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            out.append(f"{target}: no heading #{anchor} in {dest.relative_to(root)}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_link_resolves_inside_the_repository(page):
    assert problems(page) == []


def test_the_readme_links_the_docs():
    targets = {t.partition("#")[0] for t in links((ROOT / "README.md").read_text(encoding="utf-8"))}
    assert {"docs/results.md", "docs/design.md", "docs/contributing.md"} <= targets


def test_the_checker_sees_bad_links(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title, with `code`\n\n[ok](#a-title-with-code) [gone](missing.md) "
                    "[web](https://example.org) [up](../../x.md) `[code](nowhere.md)`\n"
                    "```\n[fenced](nowhere.md)\n```\n[bad anchor](#nope)\n", encoding="utf-8")
    found = problems(page, root=tmp_path)
    assert any("missing.md: no such file" in p for p in found)
    assert any("https://example.org" in p for p in found)
    assert any("../../x.md: leads outside" in p for p in found)
    assert any("#nope: no heading" in p for p in found)
    assert not any("nowhere" in p or "#a-title-with-code" in p for p in found)


def test_slugs_follow_github():
    assert slug("neurorit's stage schedule and data, on dev") == "neurorits-stage-schedule-and-data-on-dev"
    assert slug("The `clean` control (format)") == "the-clean-control-format"
    assert anchors("# A\n## A\n```\n# B\n```\n") == {"a", "a-1"}
