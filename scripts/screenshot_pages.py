#!/usr/bin/env python3
"""Screenshot every built page of the book in headless Chromium and flag what overflows the column.

    python scripts/screenshot_pages.py [--html _build/html] [--out _build/screenshots] [--width 1400]

Needs Debian's ``chromium`` (``apt-get install -y chromium``). For offline checks the pages are
copied and pointed at a local MathJax (Debian's ``libjs-mathjax``, MathJax 2: ``apt-get install -y
libjs-mathjax``) when it is installed; the published book keeps loading MathJax 3 from its CDN.
For each page it writes a full-page PNG and reports every element wider than the content column
(``article.bd-article``) or scrolling sideways inside it (wide tables, long outputs), plus any TeX
that MathJax left unrendered. Exit status 1 when something overflows.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LOCAL_MATHJAX = Path("/usr/share/javascript/mathjax/MathJax.js")
# MathJax 2 settings equal to the book's MathJax 3 ones: the notebook sections carry tex2jax_ignore,
# and the math spans (class "math") are processed anyway.
MATHJAX2_CONFIG = """<script type="text/x-mathjax-config">MathJax.Hub.Config({tex2jax: {
  inlineMath: [["\\\\(", "\\\\)"]], displayMath: [["\\\\[", "\\\\]"]],
  processClass: "tex2jax_process|mathjax_process|math|output_area"}});</script>"""
PROBE = r"""
<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var col = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;
    var right = col.getBoundingClientRect().right, colWidth = col.clientWidth, found = [];
    col.querySelectorAll("table, img, pre, div.output, div.cell_output, .math, div.highlight, figure, p").forEach(function (el) {
      if (el.closest(".cell_input")) return;  // source code scrolls by design; outputs must fit
      var r = el.getBoundingClientRect(), style = getComputedStyle(el);
      var scrolls = (style.overflowX == "auto" || style.overflowX == "scroll") && el.scrollWidth > el.clientWidth + 2;
      var sticks = r.right > right + 2;
      var parentScrolls = el.parentElement && el.parentElement.scrollWidth > el.parentElement.clientWidth + 2 &&
          ["auto", "scroll"].indexOf(getComputedStyle(el.parentElement).overflowX) >= 0;
      if (scrolls || sticks || (el.tagName == "TABLE" && parentScrolls)) {
        found.push({tag: el.tagName.toLowerCase(), cls: String(el.className).slice(0, 40),
                    width: Math.round(Math.max(el.scrollWidth, r.width)), text: (el.innerText || el.getAttribute("src") || "").slice(0, 80)});
      }
    });
    var raw = [];
    col.querySelectorAll("p, li, td, figcaption, span.caption-text").forEach(function (el) {
      var t = el.innerText || "";
      if (/\$[\\A-Za-z{]|\\\(|\\frac|\\tfrac|\\lambda/.test(t)) raw.push(t.slice(0, 100));
    });
    var pre = document.createElement("pre");
    pre.id = "overflow-report";
    pre.textContent = JSON.stringify({column: colWidth, height: document.documentElement.scrollHeight,
                                      overflow: found, raw_tex: raw});
    document.body.appendChild(pre);
  }, 4000);
});
</script>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("chromium not found: apt-get install -y chromium")


def prepare(src: Path, dst: Path) -> None:
    """Copy the built book and add the probe (and a local MathJax 2 when installed) to every page."""
    shutil.copytree(src, dst)
    for page in dst.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        if LOCAL_MATHJAX.is_file():
            text = re.sub(r'<script[^>]*src="[^"]*mathjax[^"]*"[^>]*></script>',
                          f'<script src="file://{LOCAL_MATHJAX}?config=TeX-AMS_CHTML"></script>', text,
                          flags=re.I)
            text = re.sub(r"<script>\s*window\.MathJax\s*=.*?</script>", lambda m: MATHJAX2_CONFIG, text, flags=re.S)
        page.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")


def run(browser: str, url: str, *args: str) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--allow-file-access-from-files", "--virtual-time-budget=15000", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--html", default="_build/html")
    ap.add_argument("--out", default="_build/screenshots")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--pages", nargs="*", help="only these pages (paths relative to --html)")
    args = ap.parse_args(argv)
    browser, out = chromium(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "html"
        prepare(Path(args.html), site)
        pages = [site / p for p in args.pages] if args.pages else sorted(
            p for p in site.rglob("*.html") if p.name not in ("genindex.html", "search.html")
            and "_static" not in p.parts and "_sources" not in p.parts)
        for page in pages:
            rel = page.relative_to(site)
            dom = run(browser, page.as_uri(), f"--window-size={args.width},1000", "--dump-dom")
            m = re.search(r'<pre id="overflow-report">(.*?)</pre>', dom, re.S)
            report = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                                .replace("&gt;", ">")) if m else {"height": 3000, "overflow": [], "raw_tex": [],
                                                                  "column": None, "error": "no report"}
            png = out / (str(rel).replace("/", "_").removesuffix(".html") + ".png")
            height = min(int(report["height"]) + 50, 30000)
            run(browser, page.as_uri(), f"--window-size={args.width},{height}", f"--screenshot={png}")
            bad = report["overflow"] + [{"raw_tex": t} for t in report["raw_tex"]]
            failed += bool(bad)
            print(f"{rel}: column {report['column']} px, page {report['height']} px, {png}"
                  + ("" if not bad else "\n  " + "\n  ".join(json.dumps(b, ensure_ascii=False) for b in bad)))
    print(f"{failed} page(s) with overflowing elements or raw TeX")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
