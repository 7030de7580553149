"""The README and docs/: every relative link and #anchor resolves, the README stays short, every
page is reachable from it, and docs/architecture.md lists the package's modules in order."""

from __future__ import annotations

import ast
import re
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_MAX_BYTES = 15_000

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """Return the page's lines outside fenced code blocks, inline code removed."""
    lines, in_code = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return lines


def github_anchor(heading: str) -> str:
    """Return the anchor GitHub gives a heading: lower case, punctuation and symbols dropped,
    each space a hyphen (github-slugger's rule: letters, digits, ``_`` and ``-`` stay)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if char in " -":
            kept.append("-")
        elif category[0] in "LM" or category in ("Nd", "Nl", "Pc"):
            kept.append(char)
    return "".join(kept)


def anchors(path: Path) -> set[str]:
    """Return every anchor of a Markdown page: its headings' (numbered when repeated) and HTML ones."""
    found, seen = set(), {}
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        if in_code:
            continue
        found.update(HTML_ANCHOR.findall(line))
        heading = HEADING.match(line)
        if heading:
            anchor = github_anchor(heading.group(1))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def links(path: Path) -> list[str]:
    """Return the link targets of a Markdown page, code excluded."""
    return [target for line in prose_lines(path.read_text(encoding="utf-8"))
            for target in LINK.findall(line)]


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Return ``'page: target (why)'`` for each relative link or anchor of ``path`` that does not
    resolve; links to other sites are not followed."""
    problems = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}: {target}"
        if not destination.is_relative_to(root.resolve()):
            problems.append(f"{where} (outside the repository)")
        elif not destination.exists():
            problems.append(f"{where} (no such file)")
        elif anchor and destination.suffix != ".md":
            problems.append(f"{where} (an anchor into a file that is not Markdown)")
        elif anchor and anchor not in anchors(destination):
            problems.append(f"{where} (no heading with that anchor)")
    return problems


def test_every_relative_link_and_anchor_resolves():
    problems = [problem for page in pages() for problem in broken_links(page)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_link_check_finds_missing_files_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01_data.ipynb").write_text("{}")
    (tmp_path / "docs" / "speed.md").write_text("# Speed\n\n## How the machine is used\n\n"
                                                "## Notes\n\n## Notes\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\n## The `make report` command\n\n"
        "[ok](docs/speed.md#how-the-machine-is-used) [ok](#the-make-report-command) "
        "[ok](docs/speed.md#notes-1) [ok](notebooks/01_data.ipynb) [ok](https://example.org/x.md)\n"
        "[gone](docs/missing.md) [bad anchor](docs/speed.md#speed-figures) [bad](#nowhere)\n"
        "[into a notebook](notebooks/01_data.ipynb#setup) [up](../elsewhere.md)\n\n"
        "```bash\n[not a link](docs/missing.md)\n```\n`[code](docs/missing.md)`\n")
    problems = broken_links(readme, tmp_path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "docs/missing.md (no such file)",
        "docs/speed.md#speed-figures (no heading with that anchor)",
        "#nowhere (no heading with that anchor)",
        "notebooks/01_data.ipynb#setup (an anchor into a file that is not Markdown)",
        "../elsewhere.md (outside the repository)",
    ]


def test_anchors_are_the_ones_github_gives_headings():
    assert github_anchor("What the original study's code got wrong, measured") == \
        "what-the-original-studys-code-got-wrong-measured"
    assert github_anchor("Full length on a GPU (the `full` profile)") == "full-length-on-a-gpu-the-full-profile"
    assert github_anchor("Label efficiency: how many labelled photos?") == "label-efficiency-how-many-labelled-photos"
    assert github_anchor("DeepLab — a dense CRF") == "deeplab--a-dense-crf"
    assert github_anchor("The `helpers_data` module, [linked](x.md)") == "the-helpers_data-module-linked"
    assert github_anchor("Krähenbühl & Koltun") == "krähenbühl--koltun"


def test_the_readme_reads_in_five_minutes():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes: move detail to a page under docs/"


def test_every_docs_page_is_reachable_from_the_readme():
    reached, queue = set(), [ROOT / "README.md"]
    while queue:
        page = queue.pop()
        if page in reached:
            continue
        reached.add(page)
        for target in links(page):
            file_part = target.partition("#")[0]
            if file_part.endswith(".md") and "://" not in file_part:
                destination = (page.parent / file_part).resolve()
                if destination.is_file():
                    queue.append(destination)
    orphans = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in reached]
    assert not orphans, f"docs pages no link leads to from README.md: {orphans}"


def test_architecture_lists_the_modules_of_the_package_docstring_in_its_order():
    """docs/architecture.md is the one description of the modules; the package docstring names
    them in import order (tests/test_repository.py checks the imports against it)."""
    docstring = ast.get_docstring(ast.parse((ROOT / "helpers" / "__init__.py").read_text()))
    assert "docs/architecture.md" in docstring
    order = re.findall(r"``(\w+)``", docstring.split("what each owns):", 1)[1])
    table = [line.split("|") for line in (ROOT / "docs" / "architecture.md").read_text().splitlines()
             if line.startswith("|") and not line.startswith("|---")][1:]  # below the header row
    listed = [name for row in table for name in re.findall(r"`(\w+)`", row[2])]
    assert listed == order, "docs/architecture.md's module column must follow the package docstring"
