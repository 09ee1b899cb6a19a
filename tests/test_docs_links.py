"""Links between README.md and docs/, and pointers from the code into them, land on a file and a
heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE = [
    path
    for folder in ("pipeline", "stages", "bench", "tests")
    for path in sorted((ROOT / folder).rglob("*.py"))
    if path != Path(__file__).resolve()
]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target)
DOC_POINTER = re.compile(r"(?<![\w/.])docs/([\w.-]+\.md)(?:#([\w-]+))?")
README_ANCHOR = re.compile(r"(?<![\w/.])README\.md#([\w-]+)")
README_TITLE = re.compile(r'(?<![\w/.])README(?:\.md)?(?:,\s*|\s+)"([^"]+)"')


def prose(text: str) -> str:
    """The markdown text with its ``` fenced blocks and `code` spans blanked, lines kept."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced, line = not fenced, ""
        lines.append("" if fenced else line)
    return re.sub(r"`[^`\n]*`", lambda code: " " * len(code[0]), "\n".join(lines))


def headings(path: Path) -> list[str]:
    """The titles of a page's `#` headings, outside code blocks."""
    titles, fenced = [], False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", line)):
            # a link in a heading keeps its text
            titles.append(re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match[1]))
    return titles


def slug(title: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation but - and _ dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a page; a repeated heading gets -1, -2, ... as on GitHub."""
    found, counts = set(), {}
    for title in headings(path):
        name = slug(title)
        found.add(f"{name}-{counts[name]}" if name in counts else name)
        counts[name] = counts.get(name, 0) + 1
    return found


def where(path: Path, text: str, offset: int) -> str:
    """FILE:LINE of an offset in a file's text."""
    return f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, offset) + 1}"


def test_links_in_readme_and_docs_resolve():
    broken = []
    for page in PAGES:
        text = prose(page.read_text())
        for match in LINK.finditer(text):
            target = match[1]
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            name, _, anchor = target.partition("#")
            path = (page.parent / name).resolve() if name else page
            if not path.exists():
                broken.append(f"{where(page, text, match.start())}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{where(page, text, match.start())}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_code_points_at_docs_and_readme_sections_that_exist():
    readme = ROOT / "README.md"
    titles = {" ".join(title.replace("`", "").split()).casefold() for title in headings(readme)}
    broken = []
    for path in CODE:
        text = path.read_text()
        for match in DOC_POINTER.finditer(text):
            page = ROOT / "docs" / match[1]
            if not page.is_file() or match[2] and match[2] not in anchors(page):
                broken.append(f"{where(path, text, match.start())}: {match[0]}")
        for match in README_ANCHOR.finditer(text):
            if match[1] not in anchors(readme):
                broken.append(f"{where(path, text, match.start())}: {match[0]}")
        for match in README_TITLE.finditer(text):
            title = " ".join(re.sub(r"\n\s*#?", " ", match[1]).split())  # across wrapped lines
            if title.casefold() not in titles:
                broken.append(f'{where(path, text, match.start())}: README "{title}"')
    assert not broken, "pointers to missing docs or README sections:\n" + "\n".join(broken)


MODULE_POINTER = re.compile(
    r"(?<![\w/.-])((?:pipeline|stages|bench|tests)/[\w/]+\.py)(?:::(\w+)(\*?))?"
)


def test_code_and_docs_point_at_modules_that_exist():
    """`pipeline/.../x.py` (or `tests/.../test_x.py::test_name`) in a docstring or a page
    names a file of this checkout, and a function (or, with `*`, a prefix) it defines."""
    broken = []
    for path in [*CODE, *PAGES]:
        text = path.read_text()
        for match in MODULE_POINTER.finditer(text):
            module = ROOT / match[1]
            function = match[2] and f"def {match[2]}{'' if match[3] else '('}"  # name* : a prefix
            if not module.is_file() or function and function not in module.read_text():
                broken.append(f"{where(path, text, match.start())}: {match[0]}")
    assert not broken, "pointers to missing modules:\n" + "\n".join(broken)
