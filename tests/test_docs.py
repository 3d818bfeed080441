"""The README and docs/ link to files and headings that exist."""

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
# [text](target) and ![alt](target), the target up to a space (a title may follow) or the ")".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?[^)]*\)")


def prose(page: Path) -> str:
    """The page without its code blocks and inline code, where brackets are not links."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text()))


def anchors(page: Path) -> set[str]:
    """The #anchors GitHub gives the page's headings: lower case, punctuation dropped,
    spaces as hyphens, a repeated heading numbered."""
    seen, found = {}, set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", "")).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(f"{slug}-{n}" if n else slug)
    return found


def relative_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(prose(page))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.I)]  # http:, mailto: and the like


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists() or not resolved.is_relative_to(ROOT):
            broken.append(f"{target}: no file {resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
    assert not broken, f"{page.relative_to(ROOT)} links to what is not there:\n" + "\n".join(broken)


def test_the_link_check_sees_links_and_anchors(tmp_path):
    # The checks above pass trivially if nothing is found: they must find these.
    page = tmp_path / "page.md"
    page.write_text("# A `Code` title, too!\n\n## Twice\n\n## Twice\n\n[a](b.md#c) ![i](img/x.png)"
                    " [t](<sp.md> \"title\") [w](https://example.com) `[n](no.md)`\n\n"
                    "```\n[n](no.md)\n```\n")
    assert relative_links(page) == ["b.md#c", "img/x.png", "sp.md"]
    assert anchors(page) == {"a-code-title-too", "twice", "twice-1"}


def test_the_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
