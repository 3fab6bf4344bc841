"""The rendered book: every chapter page exists, links to its notebook on Colab, shows its
figures, and has no broken internal link. Needs a built book (`make book`); under `make test`
(SCALEINV_REQUIRE_BOOK=1) a missing build is a failure, otherwise these tests are skipped."""
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from test_notebooks import toc_files

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
pytestmark = pytest.mark.book


@pytest.fixture(scope="module", autouse=True)
def built_book():
    if not (HTML / "index.html").exists():
        if os.environ.get("SCALEINV_REQUIRE_BOOK"):
            pytest.fail("the book was not built: run `make book`")
        pytest.skip("book not built (run `make book`)")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.imgs = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.imgs.append(attrs["src"])


def parse(page):
    links = _Links()
    links.feed(page.read_text())
    return links


def chapter_pages():
    return [f for f in toc_files() if f.startswith("notebooks/")]


@pytest.mark.parametrize("chapter", chapter_pages())
def test_chapter_page_has_colab_link_to_existing_notebook(chapter):
    page = HTML / f"{chapter}.html"
    assert page.exists(), f"{page} missing"
    colab = [h for h in parse(page).hrefs if h.startswith("https://colab.research.google.com/github/")]
    assert colab, f"{chapter}: no Colab launch link"
    target = re.sub(r"^https://colab.research.google.com/github/[^/]+/[^/]+/blob/[^/]+/", "", colab[0])
    assert target == f"{chapter}.ipynb" and (ROOT / target).exists(), colab[0]


@pytest.mark.parametrize("chapter", chapter_pages())
def test_chapter_executed_with_figures_and_no_errors(chapter):
    page = HTML / f"{chapter}.html"
    text = page.read_text()
    assert "Traceback (most recent call last)" not in text, f"{chapter} shows a traceback"
    imgs = [s for s in parse(page).imgs if not s.startswith(("http", "data:"))]
    assert imgs, f"{chapter} shows no figure"
    for src in imgs:
        assert (page.parent / unquote(src)).resolve().exists(), f"{chapter}: image {src} missing"


def test_internal_links_resolve():
    broken = []
    for page in HTML.rglob("*.html"):
        if "_static" in page.parts:
            continue
        for href in parse(page).hrefs:
            url = urlparse(href)
            if url.scheme or href.startswith(("#", "mailto:")) or not url.path:
                continue
            if not (page.parent / unquote(url.path)).resolve().exists():
                broken.append(f"{page.relative_to(HTML)} -> {href}")
    assert not broken, "broken internal links:\n" + "\n".join(broken[:20])


@pytest.mark.parametrize("chapter", chapter_pages())
def test_exercises_are_numbered_per_chapter(chapter):
    text = (HTML / f"{chapter}.html").read_text()
    numbers = re.findall(r'<span class="caption-number">Exercise (\d+)\.(\d+) </span>', text)
    expected = int(re.match(r"notebooks/(\d+)_", chapter).group(1))
    assert numbers, f"{chapter}: no numbered exercise"
    assert [(int(c), int(n)) for c, n in numbers] == [(expected, i) for i in
                                                      range(1, len(numbers) + 1)], numbers
    solutions = re.findall(r"Solution to<a [^>]*> Exercise (\d+\.\d+)", text)
    assert solutions == [f"{c}.{n}" for c, n in numbers], f"{chapter}: solutions {solutions}"


def test_bibliography_has_readable_labels_and_both_papers_with_links():
    text = (HTML / "book" / "bibliography.html").read_text()
    labels = re.findall(r'<span class="label"><span class="fn-bracket">\[</span>(.*?)'
                        r'<span class="fn-bracket">\]</span>', text)
    assert len(labels) > 10, "bibliography labels not found"
    unreadable = [label for label in labels
                  if not re.fullmatch(r"[^\d\[\]]+ (\d{4}[a-z]?|n\.d\.)", label)]
    assert not unreadable, f"labels that are not 'Author et al. year': {unreadable}"
    for arxiv_id in ("2506.12117", "2510.16870"):
        assert f'href="https://arxiv.org/abs/{arxiv_id}"' in text, f"arXiv:{arxiv_id} has no link"


@pytest.mark.parametrize("chapter", chapter_pages())
def test_in_text_citations_say_et_al(chapter):
    """A BibTeX "and others" is cited "et al." (book/_ext: author_year_etal), not spelled out."""
    text = (HTML / f"{chapter}.html").read_text()
    cites = re.findall(r'<a class="reference internal" href="[^"]*bibliography[^"]*"[^>]*>(.*?)</a>',
                       text, re.S)
    spelled = [c for c in cites if "and others" in c]
    assert not spelled, f"{chapter}: citations spell out 'and others': {spelled[:3]}"
