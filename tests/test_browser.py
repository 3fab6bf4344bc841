"""The rendered book in a real browser: headless Chromium (Debian's chromium + chromedriver,
driven by Selenium) opens every page of _build/html, served on 127.0.0.1, and checks that
each page loads without console errors, every image displays, math is typeset by MathJax,
every same-site link answers HTTP 200 (and its #fragment exists), every chapter links
to its notebook on Colab, every table of a cell's output fits the page body and every figure
is shown at least half as wide as the body (no postage stamps).

Needs a built book (`make book`) and the browser (tests/tools/install_browser.sh .venv/bin/python).
Without them these tests are skipped, unless SCALEINV_REQUIRE_BOOK=1 (book) or
SCALEINV_REQUIRE_BROWSER=1 (browser) make that a failure, as under CI."""
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest
import yaml

from test_notebooks import toc_files

sys.path.insert(0, str(Path(__file__).resolve().parent / "tools"))
import browser  # noqa: E402  (tests/tools/browser.py)

ROOT = Path(__file__).resolve().parents[1]
HTML = browser.HTML  # _build/html, or $SCALEINV_BOOK_HTML
pytestmark = pytest.mark.book
# Every wait is bounded (page load 30 s, MathJax 15 s, images 15 s, each link 10 s), and the
# whole crawl stops visiting pages after this many seconds (a full book takes about 10 s).
CRAWL_BUDGET_S = 300

# Console messages (level SEVERE) that are not the book's fault, each with its reason.
ALLOWED_CONSOLE_ERRORS = [
    (r"/favicon\.ico - Failed to load resource: .* 404",
     "Chromium asks for /favicon.ico by itself; the book sets no favicon"),
    (r"Uncaught SyntaxError: Identifier 'THEBE_JS_URL' has already been declared",
     "sphinx-thebe 0.3.1 registers its inline config script after Builder.init(); Sphinx 7.4 "
     "then adds it to every page twice (filename None vs '' defeats its de-duplication), so "
     "the second copy's `const` fails; the first copy is intact and nothing else breaks"),
    (r'pydata-sphinx-theme\.js.*"Got invalid theme mode: \. Resetting to auto\."',
     "pydata-sphinx-theme 0.17 logs this with console.error on a visitor's first page "
     "(empty localStorage, as in this fresh profile) and then uses the 'auto' mode"),
]


# Sizes of what the chapters' cells show, read off the laid-out page (1280 x 900 window),
# with every dropdown open (exercise solutions, hidden cells), as a reader who opens it sees it.
LAYOUT_FACTS = r"""
document.querySelectorAll('details').forEach(d => { d.open = true; });
document.querySelectorAll('.toggle-hidden').forEach(el => el.classList.remove('toggle-hidden'));
document.querySelectorAll('.toggle-details__container').forEach(el => { el.style.display = ''; });
const body = document.querySelector('article.bd-article') || document.querySelector('main')
             || document.body;
const style = getComputedStyle(body);
const bodyWidth = body.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
const where = el => {
  const heading = [...document.querySelectorAll('h1, h2, h3')]
    .filter(h => h.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_FOLLOWING).pop();
  return (heading ? heading.textContent.replace('#', '').trim() : '?').slice(0, 60);
};
return {
  bodyWidth: bodyWidth,
  tables: Array.from(body.querySelectorAll('.cell_output table, table.table')).map(t => ({
    where: where(t), width: t.getBoundingClientRect().width,
    header: Array.from(t.querySelectorAll('th')).slice(0, 8).map(th => th.textContent.trim())})),
  figures: Array.from(body.querySelectorAll('.cell_output img')).map(img => ({
    where: where(img), src: img.src.split('/').pop(), width: img.getBoundingClientRect().width,
    naturalWidth: img.naturalWidth})),
};
"""


def small_figures(facts):
    """The figures of one page shown narrower than half its body (a hidden one is 0 px)."""
    return [f"({img['where']}): {img['src']} {img['width']:.0f} px in a "
            f"{facts['bodyWidth']:.0f} px body" for img in facts["figures"]
            if img["width"] < 0.5 * facts["bodyWidth"]]


def wide_tables(facts):
    """The tables of one page wider than its body (clipped or scrolled)."""
    return [f"({t['where']}): table {t['width']:.0f} px wide in a {facts['bodyWidth']:.0f} px "
            f"body, columns {t['header']}" for t in facts["tables"]
            if t["width"] > facts["bodyWidth"] + 1]


def _allowed(message):
    return any(re.search(pattern, message) for pattern, _why in ALLOWED_CONSOLE_ERRORS)


def _pages():
    return sorted(p for p in HTML.rglob("*.html")
                  if not {"_static", "_sources"} & set(p.relative_to(HTML).parts))


_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def _status(url):
    try:
        with _LOCAL.open(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:  # connection problems, timeouts
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="module")
def crawl():
    """Every page's facts as Chromium saw them, and the HTTP status of every same-site link."""
    if not (HTML / "index.html").exists():
        if os.environ.get("SCALEINV_REQUIRE_BOOK"):
            pytest.fail("the book was not built: run `make book`")
        pytest.skip("book not built (run `make book`)")
    missing = browser.missing_browser()
    if missing:
        if os.environ.get("SCALEINV_REQUIRE_BROWSER"):
            pytest.fail(f"{missing}: run tests/tools/install_browser.sh .venv/bin/python")
        pytest.skip(f"{missing} (tests/tools/install_browser.sh installs them)")
    from selenium.common.exceptions import WebDriverException

    pages, statuses = {}, {}
    with browser.serve(HTML) as base, browser.chromium() as driver:
        deadline = time.monotonic() + CRAWL_BUDGET_S
        for path in _pages():
            rel = path.relative_to(HTML).as_posix()
            if time.monotonic() > deadline:
                pages[rel] = {"failed": f"not visited: the crawl ran past {CRAWL_BUDGET_S} s"}
                continue
            try:
                pages[rel] = browser.visit(driver, base + rel)
                pages[rel].update(driver.execute_script(LAYOUT_FACTS))
            except WebDriverException as exc:  # a page that never finishes loading, a hung script
                pages[rel] = {"failed": f"{type(exc).__name__}: {exc.msg}"}
        links = {urldefrag(link).url for facts in pages.values() for link in facts.get("links", [])
                 if link.startswith(base)}
        statuses = {link[len(base):] or "/": _status(link) for link in sorted(links)}
    return {"base": base, "pages": pages, "statuses": statuses}


def test_every_page_was_visited(crawl):
    failed = {page: facts["failed"] for page, facts in crawl["pages"].items() if "failed" in facts}
    assert not failed, f"pages that did not load: {failed}"
    missing = [f for f in toc_files() if f"{f}.html" not in crawl["pages"]]
    assert not missing, f"table-of-contents pages not in the build: {missing}"


def test_pages_load_without_console_errors(crawl):
    errors = [f"{page}: {entry['message']}"
              for page, facts in crawl["pages"].items() for entry in facts.get("log", [])
              if entry["level"] == "SEVERE" and not _allowed(entry["message"])]
    assert not errors, "console errors:\n" + "\n".join(errors[:30])


def test_every_image_displays(crawl):
    broken = [f"{page}: {img['src']} (complete={img['complete']}, naturalWidth={img['naturalWidth']})"
              for page, facts in crawl["pages"].items() for img in facts.get("images", [])
              if not (img["complete"] and img["naturalWidth"] > 0)]
    assert not broken, "images that do not display:\n" + "\n".join(broken[:30])


def test_math_renders(crawl):
    with_math = {page: facts for page, facts in crawl["pages"].items() if facts.get("math")}
    assert with_math, "no page of the book contains math (class 'math'): did the parser change?"
    problems = []
    for page, facts in with_math.items():
        if facts["mathjax"] != "typeset":
            problems.append(f"{page}: MathJax did not run ({facts['mathjax']})")
        elif facts["mathTypeset"] < facts["math"]:
            problems.append(f"{page}: {facts['math'] - facts['mathTypeset']} of {facts['math']} "
                            f"formulas not typeset, e.g. {facts['mathUntypeset']}")
        if facts["mathErrors"]:
            problems.append(f"{page}: TeX errors {facts['mathErrors']}")
    assert not problems, "math:\n" + "\n".join(problems)


def test_internal_links_resolve(crawl):
    broken = [f"{link} -> {status}" for link, status in crawl["statuses"].items() if status != 200]
    assert not broken, "same-site links that do not answer 200:\n" + "\n".join(broken[:30])


def test_internal_link_fragments_exist(crawl):
    base, pages = crawl["base"], crawl["pages"]
    missing = set()
    for page, facts in pages.items():
        for link in facts.get("links", []):
            target, fragment = urldefrag(link)
            target = urlparse(target)._replace(query="").geturl()
            if not fragment or not target.startswith(base):
                continue
            target_page = target[len(base):] or "index.html"
            if target_page in pages and unquote(fragment) not in pages[target_page].get("ids", []):
                missing.add(f"{page} -> {target_page}#{fragment}")
    assert not missing, "links to anchors that do not exist:\n" + "\n".join(sorted(missing)[:30])


def _colab_prefix():
    config = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())
    repo = urlparse(config["repository"]["url"]).path.strip("/")
    colab = config["launch_buttons"]["colab_url"].rstrip("/")
    return f"{colab}/github/{repo}/blob/{config['repository'].get('branch', 'main')}/"


@pytest.mark.parametrize("chapter", [f for f in toc_files() if f.startswith("notebooks/")])
def test_chapter_has_colab_link_to_existing_notebook(crawl, chapter):
    facts = crawl["pages"].get(f"{chapter}.html")
    assert facts and "links" in facts, f"{chapter}.html was not rendered"
    prefix = _colab_prefix()
    colab = [link for link in facts["links"] if link.startswith("https://colab.research.google.com/")]
    assert colab, f"{chapter}: no Colab link on the rendered page"
    expected = f"{prefix}{chapter}.ipynb"
    assert expected in colab, f"{chapter}: Colab links {colab}, expected {expected}"
    assert (ROOT / f"{chapter}.ipynb").exists(), f"{chapter}.ipynb, which Colab opens, is missing"


def _chapters(crawl):
    return {page: facts for page, facts in crawl["pages"].items()
            if page.startswith("notebooks/") and "bodyWidth" in facts}


def test_every_table_fits_the_page_body(crawl):
    chapters = _chapters(crawl)
    assert any(facts["tables"] for facts in chapters.values()), "no chapter shows a table"
    # every page, not only the chapters: paper_to_code's claim tables are text-page tables
    pages = {page: facts for page, facts in crawl["pages"].items() if "bodyWidth" in facts}
    assert any(facts["tables"] for page, facts in pages.items() if page not in chapters), \
        "no text page shows a table (paper_to_code has two): the check would not see them"
    wide = [f"{page} {line}" for page, facts in pages.items() for line in wide_tables(facts)]
    assert not wide, "tables wider than the page (clipped):\n" + "\n".join(wide)


def test_every_figure_is_at_least_half_the_body_width(crawl):
    chapters = _chapters(crawl)
    without = [page for page, facts in chapters.items() if not facts["figures"]]
    assert not without, f"chapters that show no figure of a cell: {without}"
    small = [f"{page} {line}" for page, facts in chapters.items() for line in small_figures(facts)]
    assert not small, "figures shown smaller than half the page body:\n" + "\n".join(small)


# The two layout checks on a made-up page with the book's markup (myst-nb's cell containers
# in the theme's article): they find a postage stamp and a clipped table, and the book's CSS
# (book/_static/scaleinv.css) makes the same figure and table pass.
SYNTHETIC_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">{css}</head><body>
<main><article class="bd-article"><section><h1>A chapter</h1>
<h2>A figure</h2>
<div class="cell docutils container"><div class="cell_output docutils container">
<img alt="stamp" src="stamp.png" /></div></div>
<details><summary>Solution</summary><h2>A solution's figure</h2>
<div class="cell docutils container"><div class="cell_output docutils container">
<img alt="stamp" src="stamp.png" /></div></div></details>
<h2>A table</h2>
<div class="cell docutils container"><div class="cell_output docutils container">
<div class="output text_html"><table class="dataframe"><thead><tr>{header}</tr></thead>
<tbody><tr>{row}</tr></tbody></table></div></div></div>
<h2>A text-page table</h2>
<table class="table"><thead><tr><th>claim</th><th>code</th></tr></thead>
<tbody><tr><td>A1</td><td>{code}</td></tr></tbody></table>
</section></article></main></body></html>"""


@pytest.fixture(scope="module")
def synthetic_layouts(tmp_path_factory):
    """The layout facts of the made-up page without and with the book's CSS."""
    missing = browser.missing_browser()
    if missing:
        if os.environ.get("SCALEINV_REQUIRE_BROWSER"):
            pytest.fail(f"{missing}: run tests/tools/install_browser.sh .venv/bin/python")
        pytest.skip(f"{missing} (tests/tools/install_browser.sh installs them)")
    import matplotlib.pyplot as plt

    site = tmp_path_factory.mktemp("synthetic-book")
    fig = plt.figure(figsize=(1.2, 0.8), dpi=100)  # 120 x 80 px: a postage stamp
    fig.savefig(site / "stamp.png")
    plt.close(fig)
    (site / "scaleinv.css").write_text((ROOT / "book" / "_static" / "scaleinv.css").read_text())
    # Headers of several words (broken between words only); values of numbers and words.
    columns = [f"a rather long column name {i}" for i in range(16)]
    # Inline code as Sphinx writes it (basic.css keeps span.pre on one line).
    identifier = "su.alignment.alignment_table(features, subset, encoding=True)." * 3
    cells = dict(header="".join(f"<th>{c}</th>" for c in columns),
                 row="".join(f"<td>{i * 1.2345:.4f} and words</td>" for i in range(16)),
                 code='<code class="docutils literal notranslate"><span class="pre">'
                      f"{identifier}</span></code>")
    sphinx_like = "<style>th, td { white-space: nowrap; } span.pre { white-space: nowrap; }</style>"
    (site / "plain.html").write_text(SYNTHETIC_PAGE.format(css=sphinx_like, **cells))
    (site / "styled.html").write_text(SYNTHETIC_PAGE.format(
        css=sphinx_like + '<link rel="stylesheet" href="scaleinv.css">', **cells))
    with browser.serve(site) as base, browser.chromium() as driver:
        return {name: {**browser.visit(driver, base + f"{name}.html"),
                       **driver.execute_script(LAYOUT_FACTS)} for name in ("plain", "styled")}


def test_figure_check_finds_a_postage_stamp(synthetic_layouts):
    plain = synthetic_layouts["plain"]
    assert [img["naturalWidth"] for img in plain["figures"]] == [120, 120]
    small = small_figures(plain)
    assert len(small) == 2 and "A solution's figure" in small[1], small


def test_table_check_finds_a_clipped_table(synthetic_layouts):
    plain = synthetic_layouts["plain"]
    assert len(plain["tables"]) == 2 and plain["tables"][0]["width"] > plain["bodyWidth"]
    # the pandas table and the text-page table of code
    assert len(wide_tables(plain)) == 2, wide_tables(plain)


def test_the_book_css_makes_the_same_figure_and_table_fit(synthetic_layouts):
    styled = synthetic_layouts["styled"]
    assert small_figures(styled) == [] and wide_tables(styled) == []
    assert all(img["width"] >= 0.5 * styled["bodyWidth"] for img in styled["figures"])
