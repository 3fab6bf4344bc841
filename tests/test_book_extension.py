"""book/_ext/scaleinv_book.py, the book's Sphinx extension, on made-up inputs: exercises
renumbered per chapter in page order, author-year bibliography labels."""
import sys
from pathlib import Path
from types import SimpleNamespace

from pybtex.database import Entry, Person

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))
import scaleinv_book  # noqa: E402


def test_exercises_renumbered_per_chapter_in_page_order():
    env = SimpleNamespace(toc_fignumbers={
        "notebooks/02_models": {"exercise": {"b": (5,), "a": (3,), "c": (4,)}, "figure": {"f": (1,)}},
        "notebooks/05_encoding": {"exercise": {"x": (9,)}},
        "book/teachers": {"exercise": {"t": (1,)}},
    })
    assert scaleinv_book.number_exercises_per_chapter(None, env) == []
    assert env.toc_fignumbers["notebooks/02_models"]["exercise"] == {"a": (2, 1), "c": (2, 2), "b": (2, 3)}
    assert env.toc_fignumbers["notebooks/02_models"]["figure"] == {"f": (1,)}
    assert env.toc_fignumbers["notebooks/05_encoding"]["exercise"] == {"x": (5, 1)}
    assert env.toc_fignumbers["book/teachers"]["exercise"] == {"t": (1,)}  # not a chapter


def _entry(authors, year="2022"):
    entry = Entry("article", fields={"year": year, "title": "t"})
    entry.persons["author"] = [Person(a) for a in authors]
    return entry


def test_author_year_labels():
    label = scaleinv_book.author_year_label
    assert label(_entry(["Levina, Elizaveta"], "2004")) == "Levina 2004"
    assert label(_entry(["Benjamini, Y.", "Hochberg, Y."], "1995")) == "Benjamini and Hochberg 1995"
    assert label(_entry(["Dupr{\\'e} la Tour, Tom", "Eickenberg, M.", "Gallant, J."])) == \
        "Dupré la Tour et al. 2022"
    assert label(_entry(["Yu, Junjie", "others"], "2025")) == "Yu et al. 2025"
    style = scaleinv_book.AuthorYearLabelStyle()
    twins = [_entry(["Yu, A.", "B, C.", "D, E."], "2025"), _entry(["Yu, J.", "others"], "2025")]
    assert list(style.format_labels(twins)) == ["Yu et al. 2025a", "Yu et al. 2025b"]


def test_bibliography_sorts_by_first_author_then_year():
    """As the labels read: "Yu et al. 2025" before "Yu et al. 2026", whatever the co-authors."""
    style = scaleinv_book.FirstAuthorYearSortingStyle()
    entries = [_entry(["Yu, Junjie", "Ma, Wenxiao"], "2026"), _entry(["Yu, Junjie", "others"], "2025"),
               _entry(["Allen, E."], "2022"), _entry(["Yu, Jiahui", "Wang, Z."], "2022")]
    years = [(e.persons["author"][0].last_names[0], e.fields["year"]) for e in style.sort(entries)]
    assert years == [("Allen", "2022"), ("Yu", "2022"), ("Yu", "2025"), ("Yu", "2026")]


def test_identifiers_in_tables_break_between_the_parts_of_a_name():
    cut = scaleinv_book.identifier_break_points
    # the space after the comma is a break the browser takes anyway
    assert cut("alignment.alignment_table(..., encoding=True)") == [
        "alignment.", "alignment_", "table(..., encoding=True)"]
    assert cut("f(a,b)") == ["f(", "a,", "b)"]
    assert cut("su.record") == ["su.", "record"]
    assert cut("verdict") == ["verdict"]
    assert "".join(cut("a.b_c(d, e)")) == "a.b_c(d, e)"


def _cited(authors, full=False):
    style = scaleinv_book.AuthorYearEtAlReferenceStyle()
    node = style.person.author_or_editor_or_title(full=full)
    return node.format_data({"entry": _entry(authors, "2025"), "style": style}).render_as("text")


def test_in_text_citations_read_and_others_as_et_al():
    """sphinxcontrib-bibtex's own author_year style cites "Yu, Junjie and others" as
    "Yu and others"; the book's style gives "Yu et al.", as its labels and for 3+ authors."""
    assert _cited(["Yu, Junjie", "others"]) == "Yu et al."
    assert _cited(["Yu, Junjie", "others"], full=True) == "Yu et al."
    assert _cited(["Ren, Y.", "Wang, X.", "Wang, K.", "others"]) == "Ren et al."
    assert _cited(["Ren, Y.", "Wang, X.", "Wang, K.", "others"], full=True) == "Ren, Wang, Wang et al."
    # lists without "others" are cited as sphinxcontrib-bibtex cites them
    assert _cited(["Benjamini, Y.", "Hochberg, Y."]) == "Benjamini and Hochberg"
    assert _cited(["A, B.", "C, D.", "E, F."]) == "A et al."
    assert _cited(["A, B.", "C, D.", "E, F."], full=True) == "A, C, and E"
    assert _cited(["Levina, E."]) == "Levina"
