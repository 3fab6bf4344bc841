"""Chapters: each notebook is paired with its text form, carries no outputs, is in the
table of contents, and starts with the set-up cell that works on Colab, installing the
package from the repository and release named once in book/_config.yml."""
import re
import sys
from pathlib import Path

import jupytext
import pytest
import yaml
from jupytext.compare import compare_notebooks

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book"))
import set_repository  # noqa: E402  (book/set_repository.py)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TEXTS = sorted((ROOT / "notebooks" / "text").glob("*.md"))


def toc_files():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part["chapters"]]
    return files


def test_there_are_chapters():
    assert NOTEBOOKS, "no chapters found in notebooks/"
    assert {p.stem for p in NOTEBOOKS} == {p.stem for p in TEXTS}, \
        "every notebooks/*.ipynb needs notebooks/text/<same name>.md and vice versa"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_in_sync(nb_path):
    nb = jupytext.read(nb_path)
    text = jupytext.read(ROOT / "notebooks" / "text" / f"{nb_path.stem}.md")
    assert nb.metadata.get("jupytext", {}).get("formats") == "ipynb,text//md:myst", \
        f"{nb_path.name} is not paired as 'ipynb,text//md:myst'"
    try:
        compare_notebooks(text, nb, fmt="md:myst")
    except Exception as exc:  # jupytext raises its own comparison errors
        pytest.fail(f"{nb_path.name} and text/{nb_path.stem}.md disagree; run `make sync` "
                    f"after editing the text form.\n{exc}")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(nb_path):
    nb = jupytext.read(nb_path)
    with_outputs = [i for i, c in enumerate(nb.cells) if c.get("outputs")]
    assert not with_outputs, f"{nb_path.name} has outputs in cells {with_outputs}: strip them"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_in_table_of_contents(nb_path):
    assert f"notebooks/{nb_path.stem}" in toc_files()


def test_toc_entries_exist():
    for entry in toc_files():
        candidates = [ROOT / f"{entry}{ext}" for ext in (".ipynb", ".md")]
        assert any(c.exists() for c in candidates), f"toc entry {entry} has no file"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_code_cell_is_the_setup(nb_path):
    nb = jupytext.read(nb_path)
    first = next(c for c in nb.cells if c.cell_type == "code").source
    for needle in ("find_spec(\"scaleinv_utils\")", "pip", "get_device()", "DATA = "):
        assert needle in first, f"{nb_path.name}: the first code cell lacks {needle!r}"


def test_colab_button_configured():
    config = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())
    assert config["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")
    assert config["repository"]["url"].startswith("https://github.com/")
    assert config["execute"]["execute_notebooks"] == "force"


def test_repository_is_the_books_own_and_pinned_to_the_release():
    url, ref = set_repository.repository()
    assert re.fullmatch(r"https://github\.com/[A-Za-z0-9-]+/[A-Za-z0-9._-]+", url), url
    # github.com/scaleinv is an unrelated account: never install from it.
    assert not url.startswith("https://github.com/scaleinv/"), url
    assert ref == f"v{set_repository.package_version()}", \
        f"repository.branch={ref!r}: the release tag must be 'v' + pyproject's version"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_install_cell_uses_the_configured_repository(nb_path):
    nb = jupytext.read(nb_path)
    first = next(c for c in nb.cells if c.cell_type == "code").source
    expected = set_repository.install_requirement(*set_repository.repository())
    found = re.findall(r"git\+[^\"']+", first)
    assert found == [expected], (f"{nb_path.name} installs {found}, the config says {expected}: "
                                 "run `python book/set_repository.py`")


def test_set_repository_rewrites_every_install_line():
    text = ('"scaleinv_utils[offline-models] @ git+https://github.com/old/name"], check=True)\n'
            "x = 1\n")
    new, n = set_repository.rewrite(text, "git+https://github.com/fork/book@v9.9")
    assert n == 1 and "git+https://github.com/fork/book@v9.9\"]" in new and "old/name" not in new
    assert set_repository.main(["--check"]) == 0, "run `python book/set_repository.py`"


@pytest.mark.parametrize("text_path", TEXTS, ids=lambda p: p.stem)
def test_a_predict_before_you_run_prompt_at_each_key_result(text_path):
    """At least one per chapter; the claim chapters (6 and 7) one before each headline test."""
    n = text_path.read_text().count(":::{admonition} Predict before you run")
    needed = 2 if text_path.stem in ("06_scale_invariance_alignment", "07_neurons") else 1
    assert n >= needed, (f"{text_path.name}: {n} 'Predict before you run' prompts, expected at least "
                         f"{needed} (one at each key result)")
