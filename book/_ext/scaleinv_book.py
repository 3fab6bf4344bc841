"""The book's own Sphinx extension (book/_config.yml: sphinx.local_extensions).

- Exercises are numbered per chapter: "Exercise 2.1" is the first exercise of
  notebooks/02_*.ipynb (sphinx-exercise alone numbers them through the whole book, since the
  book's table of contents is not section-numbered).
- Progress bars are off in the executed chapters: ``SCALEINV_PROGRESS=0`` is set for the
  build, and the kernels that execute the chapters inherit it (scaleinv_utils._progress);
  a reader running a chapter in Jupyter or on Colab still sees them.
- Figures are drawn at 150 dpi (book/_ext/matplotlibrc, through ``MATPLOTLIBRC``), so that
  none is a postage stamp on the page.
- Figures are shown at all: the kernels that execute the chapters use matplotlib's inline
  backend even when the build runs with ``MPLBACKEND=Agg`` (as .ci/run and headless shells
  set it). ipykernel selects the inline backend only when MPLBACKEND is unset, so an
  inherited ``Agg`` made every ``plt.show()`` draw nothing and the book had no figures.
- What a cell prints between two displays is one output box, not one per flush of the
  kernel's timer: the kernels use an IPython profile under ``_build/`` whose start-up file
  (book/_ext/kernel_startup.py) flushes printed text only at displays and cell ends.
- Bibliography labels read "Dupré la Tour et al. 2022" instead of BibTeX's alpha labels
  ("DupreITENEG22"): a pybtex style, "authoryear", registered for sphinxcontrib-bibtex.
- In-text citations read a BibTeX "and others" as "et al." too ("Yu et al., 2025", not
  "Yu and others, 2025"): the referencing style "author_year_etal".
"""
import codecs
import os
import re
from collections import Counter
from pathlib import Path

from dataclasses import dataclass, field

import latexcodec  # noqa: F401  (registers the "ulatex" codec)
from pybtex.plugin import register_plugin
from pybtex.richtext import Tag, Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle as AuthorYearTitleSortingStyle
from pybtex.style.template import FieldIsMissing
from sphinxcontrib.bibtex.plugin import register_plugin as register_bibtex_plugin
from sphinxcontrib.bibtex.style.referencing import PersonStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle
from sphinxcontrib.bibtex.style.template import first_of, join, node, optional, tag
from sphinxcontrib.bibtex.style.template import field as bib_field

CHAPTER = re.compile(r"^notebooks/(\d+)_")
# What ipykernel itself selects when MPLBACKEND is unset: figures become image/png outputs.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def chapter_number(docname):
    """The chapter's number from its file name (notebooks/02_models -> 2), or None."""
    match = CHAPTER.match(docname)
    return int(match.group(1)) if match else None


def number_exercises_per_chapter(app, env):
    """Renumber each chapter's exercises (chapter, 1), (chapter, 2), ... in page order."""
    for docname, figtypes in env.toc_fignumbers.items():
        chapter = chapter_number(docname)
        if chapter is None or "exercise" not in figtypes:
            continue
        in_order = sorted(figtypes["exercise"].items(), key=lambda item: item[1])
        figtypes["exercise"] = {ids: (chapter, i) for i, (ids, _) in enumerate(in_order, 1)}
    return []


def _plain(text):
    """BibTeX LaTeX (Dupr{\\'e}) as plain text (Dupré)."""
    return codecs.decode(text, "ulatex").replace("{", "").replace("}", "")


def author_year_label(entry):
    """'Allen et al. 2022', 'Benjamini and Hochberg 1995', 'Levina 2004'."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_plain(" ".join(p.prelast_names + p.last_names)) for p in persons
             if str(p) != "others"]
    if not names:
        names = [_plain(entry.fields.get("organization", entry.key))]
    if len(names) == 1 and len(persons) == 1:
        who = names[0]
    elif len(names) == 2 and len(persons) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who} {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = [author_year_label(entry) for entry in sorted_entries]
        counts, seen = Counter(labels), Counter()
        for label in labels:  # two works of the same authors and year: 2025a, 2025b
            if counts[label] > 1:
                seen[label] += 1
                label += "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            yield label


class FirstAuthorYearSortingStyle(AuthorYearTitleSortingStyle):
    """Sorted as the labels read: first author, then year, then the other authors.

    pybtex's ``author_year_title`` compares whole author lists, so "Yu, Junjie and Ma, ..."
    (2026) came before "Yu, Junjie and others" (2025): "Yu et al. 2026" above "Yu et al. 2025".
    """

    def sorting_key(self, entry):
        persons = entry.persons.get("author") or entry.persons.get("editor") or []
        first = self.person_key(persons[0]) if persons else ""
        rest = self.persons_key(persons[1:])
        return (first, entry.fields.get("year", ""), rest, entry.fields.get("title", ""))


class AuthorYearStyle(UnsrtStyle):
    default_label_style = "authoryear"
    default_sorting_style = "first_author_year"


@node
def names_et_al(children, data, role, **kwargs):
    """sphinxcontrib-bibtex's ``names`` node, except that an author list ending in BibTeX's
    "and others" reads "<first author> et al." (``other``, as for three or more authors) or,
    where the full list is asked for, every known author and "et al."."""
    assert not children
    try:
        persons = data["entry"].persons[role]
    except KeyError:
        raise FieldIsMissing(role, data["entry"])
    person = data["style"].person
    known = [p for p in persons if str(p) != "others"]
    formatted = [person.style_plugin.format(p, person.abbreviate) for p in known]
    if len(known) < len(persons):
        short = kwargs.get("other") is not None
        shown = formatted[:1] if short else formatted
        other = kwargs["other"] if short else Text(" ", Tag("em", "et al."))
        return Text(join(sep=kwargs.get("sep", ", "))[shown].format_data(data), other)
    return join(**kwargs)[formatted].format_data(data)


@node
def author_or_editor_or_title_et_al(children, data, **kwargs):
    assert not children
    return first_of[optional[names_et_al("author", **kwargs)],
                    optional[names_et_al("editor", **kwargs)],
                    tag("em")[bib_field("title")]].format_data(data)


@dataclass
class EtAlPersonStyle(PersonStyle):
    def names(self, role, full):
        return names_et_al(role=role, sep=self.sep, sep2=self.sep2, last_sep=self.last_sep,
                           other=None if full else self.other)

    def author_or_editor_or_title(self, full):
        return author_or_editor_or_title_et_al(sep=self.sep, sep2=self.sep2, last_sep=self.last_sep,
                                               other=None if full else self.other)


@dataclass
class AuthorYearEtAlReferenceStyle(AuthorYearReferenceStyle):
    person: PersonStyle = field(default_factory=EtAlPersonStyle)


def _kernel_profile(ipython_dir):
    """An IPython directory whose default profile runs kernel_startup.py in every kernel."""
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    source = Path(__file__).with_name("kernel_startup.py")
    (startup / "00-one-box-per-print.py").write_text(source.read_text())
    return ipython_dir


#: Where a code identifier in a table may break: after a dot, an underscore, an opening
#: parenthesis or a comma (``alignment.<wbr>alignment_<wbr>table(``), never inside a name.
_IDENTIFIER_BREAK = re.compile(r"(?<=[._(,])(?=[^\s.,)])")


def identifier_break_points(text):
    """``text`` cut where a code identifier may wrap (see :data:`_IDENTIFIER_BREAK`)."""
    cuts = [m.start() for m in _IDENTIFIER_BREAK.finditer(text)]
    return [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]


def break_identifiers_in_tables(app, doctree, docname):
    """Let inline code in tables wrap between the parts of a name, not inside them.

    The browser otherwise has only two choices for a long identifier in a narrow column:
    overflow the page, or (CSS ``overflow-wrap: anywhere``) break it mid-word
    ("ali/gnment"). A ``<wbr>`` after each dot or underscore gives it the right places."""
    from docutils import nodes
    if app.builder.format != "html":
        return
    for table in doctree.findall(nodes.table):
        for literal in list(table.findall(nodes.literal)):
            text = literal.astext()
            parts = identifier_break_points(text)
            if len(parts) < 2:
                continue
            children = []
            for i, part in enumerate(parts):
                if i:
                    children.append(nodes.raw("", "<wbr>", format="html"))
                children.append(nodes.Text(part))
            literal.children = []
            literal.extend(children)


def setup(app):
    os.environ.setdefault("SCALEINV_PROGRESS", "0")
    os.environ.setdefault("MATPLOTLIBRC", str(Path(__file__).with_name("matplotlibrc")))
    os.environ["MPLBACKEND"] = INLINE_BACKEND  # not setdefault: an inherited Agg hides figures
    os.environ["IPYTHONDIR"] = str(_kernel_profile(Path(app.outdir).parent / "ipython"))
    register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabelStyle)
    register_plugin("pybtex.style.sorting", "first_author_year", FirstAuthorYearSortingStyle)
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)
    # sphinxcontrib-bibtex keeps its referencing styles in a registry of its own
    register_bibtex_plugin("sphinxcontrib.bibtex.style.referencing", "author_year_etal",
                           AuthorYearEtAlReferenceStyle)
    # After Sphinx's own numbering (TocTreeCollector, priority 500).
    app.connect("env-get-updated", number_exercises_per_chapter, priority=900)
    app.connect("doctree-resolved", break_identifiers_in_tables)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
