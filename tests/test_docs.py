"""The pages: every relative link and anchor in README.md, docs/ and notebooks/README.md resolves,
and docs/cli.md names the flags the command line has (and only those)."""

import re
from pathlib import Path

import pytest

from minifreeze.lab.cli import make_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "notebooks" / "README.md",
         *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor a repository browser gives a Markdown heading (GitHub's rule)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # no headings in code blocks
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.*)$", text, re.M)}


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [a or b for a, b in LINK.findall(text)]


def test_docs_has_pages():
    assert len(PAGES) > 5 and (ROOT / "docs" / "README.md").is_file()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page):
    bad = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with that anchor in {dest.name}")
    assert not bad, f"{page.relative_to(ROOT)}: " + "; ".join(bad)


def _parser_flags() -> dict[str, set[str]]:
    """{command: its long flags} of `python -m minifreeze`."""
    import argparse
    parser = make_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {o for a in p._actions for o in a.option_strings if o.startswith("--")}
            for name, p in sub.choices.items()}


def test_cli_page_names_every_flag_and_no_other():
    text = (ROOT / "docs" / "cli.md").read_text()
    flags = _parser_flags()
    known = set().union(*flags.values())
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))
    assert not named - known, f"docs/cli.md names flags the CLI does not have: {named - known}"
    missing = known - named - {"--help"}
    assert not missing, f"docs/cli.md does not mention: {sorted(missing)}"
    for command in flags:
        assert f"minifreeze {command}" in text, f"docs/cli.md never shows `{command}`"
