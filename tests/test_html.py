"""Checks over the built book (``_build/html``), run by step 5 of scripts/test.sh after the build.

Skipped unless ``NCUTILS_TEST_HTML=1`` (a stale build must not be tested by accident). Fails on
raw ``$`` or ``\\(`` in text outside maths and code, on tables wider than MAX_COLUMNS columns, and
on figures (images in the pages or in cell outputs) without a caption.
"""
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("NCUTILS_HTML_DIR", ROOT / "_build" / "html"))
MAX_COLUMNS = 8
SKIP_TAGS = {"script", "style", "code", "pre", "kbd", "samp", "math", "svg", "textarea"}
MATH_CLASSES = {"math", "MathJax", "MathJax_Preview", "mjx-container", "katex"}

pytestmark = pytest.mark.skipif(os.environ.get("NCUTILS_TEST_HTML") != "1",
                                reason="set NCUTILS_TEST_HTML=1 after building the book (scripts/test.sh step 5)")


def pages():
    if not HTML.is_dir():
        pytest.fail(f"no built book at {HTML}: build it first (jupyter-book build .)")
    skip = {"genindex.html", "search.html"}
    return sorted(p for p in HTML.rglob("*.html") if p.name not in skip and "_static" not in p.parts
                  and "_sources" not in p.parts)


def soup_of(path):
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
    return soup.find("main") or soup.find("article") or soup.body


def _in_math_or_code(node) -> bool:
    for parent in node.parents:
        if parent.name in SKIP_TAGS:
            return True
        classes = set(parent.get("class") or [])
        if classes & MATH_CLASSES or any(c.startswith(("highlight", "math")) for c in classes):
            return True
    return False


def raw_math(main) -> list:
    """Text outside maths and code that still holds TeX: a ``$`` before a letter or backslash, or ``\\(``."""
    bad = []
    for text in main.find_all(string=True):
        if _in_math_or_code(text):
            continue
        s = str(text)
        if re.search(r"\$[\\A-Za-z{^_]|\\\(|\\\[|\\(frac|tfrac|lambda|sqrt|mathbb|mathrm)\b", s):
            bad.append(s.strip()[:120])
    return bad


def wide_tables(main, limit: int = MAX_COLUMNS) -> list:
    out = []
    for table in main.find_all("table"):
        rows = table.find_all("tr")
        width = max((sum(int(c.get("colspan", 1)) for c in r.find_all(["td", "th"], recursive=False))
                     for r in rows), default=0)
        if width > limit:
            head = [c.get_text(" ", strip=True)[:20] for c in rows[0].find_all(["td", "th"])][:limit + 2]
            out.append(f"{width} columns: {head}")
    return out


def uncaptioned_figures(main) -> list:
    out = []
    for img in main.find_all("img"):
        if img.find_parent("figure") is None:
            src = str(img.get("src", ""))
            if "logo" in src or src.endswith(".svg"):
                continue
            out.append(src[-60:])
            continue
        figure = img.find_parent("figure")
        caption = figure.find("figcaption")
        if caption is None or not caption.get_text(strip=True):
            out.append(str(img.get("src", ""))[-60:])
    return out


def test_the_checks_catch_planted_defects():
    from bs4 import BeautifulSoup

    html = BeautifulSoup("""<main><p>- \\tfrac1N\\langle W\\rangle$ and $x$</p><span class="math">\\(x\\)</span>
        <table><tr>""" + "<td>1</td>" * 9 + """</tr></table><div class="output"><img src="a.png"></div>
        <figure><img src="b.png"><figcaption><p>ok</p></figcaption></figure></main>""", "html.parser").main
    assert len(raw_math(html)) == 1
    assert len(wide_tables(html)) == 1 and not wide_tables(html, 9)
    assert uncaptioned_figures(html) == ["a.png"]


def test_every_page_renders_maths_tables_and_figures():
    problems = {}
    for page in pages():
        main = soup_of(page)
        if main is None:
            continue
        found = [f"raw TeX: {t!r}" for t in raw_math(main)] + [f"table of {t}" for t in wide_tables(main)] + \
            [f"figure without caption: {f}" for f in uncaptioned_figures(main)]
        if found:
            problems[str(page.relative_to(HTML))] = found
    assert not problems, "\n".join(f"{page}:\n  " + "\n  ".join(found) for page, found in problems.items())


def test_each_page_loads_each_script_once():
    """The same script twice (e.g. sphinx-thebe) throws on every page."""
    from bs4 import BeautifulSoup

    for page in pages():
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        srcs = [re.sub(r"\?.*$", "", s["src"]) for s in soup.find_all("script", src=True)]
        dupes = sorted({s for s in srcs if srcs.count(s) > 1})
        assert not dupes, f"{page.relative_to(HTML)} loads {dupes} more than once"
