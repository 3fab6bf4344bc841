"""What a reader sees in the executed chapters (_build/jupyter_execute/**/*.ipynb, written
by `make book`): no solution whose check prints ✗ (a wrong answer), no traceback, no warning, no progress bar,
no path of the build machine, no raw NumPy scalar repr, no bare number left as a cell's
result, no placeholder table header (col_0, row_0), no negative zero (-0.000).

Needs a built book; under `make test` (SCALEINV_REQUIRE_BOOK=1) a missing build is a
failure, otherwise the chapter checks are skipped. The scanner itself is tested on made-up
outputs, so it is known to find each problem."""
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "_build" / "jupyter_execute"

# (what, pattern) searched in every output's text (stream text, text/plain, text/html).
PROBLEMS = [
    # A stub's check says "✎ topic.exN: no answer yet ..."; ✗ (or an old ❌) is a failed check.
    ("a check printed a failure", re.compile(r"[\u2717\u274c]")),
    ("a traceback", re.compile(r"Traceback \(most recent call last\)|^\w*Error: ", re.M)),
    ("a warning", re.compile(r"\b\w*Warning\b:|^WARNING\b|warnings\.warn", re.M)),
    ("a progress bar", re.compile(r"\d+%\|[^|\n]*\||it/s\]|s/it\]")),
    ("a path of the build machine",
     re.compile(re.escape(str(ROOT)) + r"|site-packages|(?<![\w.:/])/(?:tmp|root|home|work|usr|opt|var)/")),
    ("a raw NumPy scalar repr", re.compile(r"\bnp\.(?:float|int|uint|bool_?)\d*\(")),
    ("a placeholder table header", re.compile(r"<th[^>]*>\s*(?:col|row)_\d+\s*</th>")),
    # a value rounded to zero that kept its sign: "-0.000" reads as a measured negative
    ("a negative zero", re.compile(r"(?<![\w.])-0(?:\.0+)?(?![\d.])")),
]
# A cell whose result is one bare number (a recorded value, a forgotten expression).
BARE_NUMBER = re.compile(r"-?\d+(?:\.\d*)?(?:e[-+]?\d+)?")
WIDGET = "application/vnd.jupyter.widget-view+json"


def output_texts(output):
    """The text a reader sees of one notebook output (stream, result, display or error)."""
    if output.get("output_type") == "error":
        yield "\n".join(output.get("traceback", [])) or f"{output.get('ename')}: error"
        return
    if "text" in output:
        yield "".join(output["text"])
    for mime in ("text/plain", "text/html", "text/markdown"):
        if mime in output.get("data", {}):
            yield "".join(output["data"][mime])


def problems(cells):
    """[(cell index, what, excerpt)] for every problem in a notebook's code cells."""
    found = []
    for i, cell in enumerate(cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found.append((i, "a traceback", output.get("ename", "")))
            if WIDGET in output.get("data", {}):
                found.append((i, "a progress bar", "a Jupyter widget (nothing shows in the book)"))
            if (output.get("output_type") == "execute_result"
                    and BARE_NUMBER.fullmatch("".join(output.get("data", {}).get("text/plain", "")).strip())):
                found.append((i, "a bare number as the cell's result",
                              "".join(output["data"]["text/plain"]).strip()))
            for text in output_texts(output):
                for what, pattern in PROBLEMS:
                    match = pattern.search(text)
                    if match:
                        start = max(match.start() - 60, 0)
                        found.append((i, what, text[start:match.end() + 60].replace("\n", " | ")))
    # One report per (cell, problem).
    return sorted({(i, what): (i, what, excerpt) for i, what, excerpt in found}.values())


def executed_notebooks():
    return sorted(EXECUTED.glob("**/*.ipynb"))


@pytest.mark.book
def test_the_build_executed_every_chapter():
    if not EXECUTED.exists():
        if os.environ.get("SCALEINV_REQUIRE_BOOK"):
            pytest.fail("the book was not built: run `make book`")
        pytest.skip("book not built (run `make book`)")
    chapters = set(CHAPTERS)
    assert chapters <= {p.stem for p in executed_notebooks()}, "some chapters were not executed"


#: The chapters, by notebook stem.
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))


def executed_cells(chapter):
    """The cells of a chapter as the build executed it (fails or skips when not built)."""
    path = EXECUTED / "notebooks" / f"{chapter}.ipynb"
    if not path.exists():
        if os.environ.get("SCALEINV_REQUIRE_BOOK"):
            pytest.fail(f"{path} missing: run `make book`")
        pytest.skip("book not built (run `make book`)")
    return json.loads(path.read_text())["cells"]


# A code cell that draws a figure (the chapters draw with pyplot and with scaleinv_utils.plotting).
DRAWS = re.compile(r"\bplt\.(?:subplots|figure|subplot_mosaic)\(|\bplot_\w+\(")
PNG = "image/png"


def figureless_drawing_cells(cells):
    """Indices of the code cells that draw a figure and show none (no image output)."""
    return [i for i, cell in enumerate(cells)
            if cell.get("cell_type") == "code" and DRAWS.search("".join(cell.get("source", "")))
            and not any(PNG in output.get("data", {}) for output in cell.get("outputs", []))
            and not any(output.get("output_type") == "error" for output in cell.get("outputs", []))]


@pytest.mark.book
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_executed_chapter_shows_its_figures(chapter):
    """Every cell that draws shows its figure (a kernel left on Agg shows none: the book
    then had no figure at all, and no other check noticed)."""
    cells = executed_cells(chapter)
    figures = sum(PNG in output.get("data", {}) for cell in cells for output in cell.get("outputs", []))
    missing = figureless_drawing_cells(cells)
    assert figures and not missing, (
        f"{chapter}: {figures} figure(s) shown; cells that draw but show none: {missing} "
        f"(was the kernel's matplotlib backend Agg? book/_ext/scaleinv_book.py sets it inline)")


@pytest.mark.book
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_executed_chapter_shows_no_stray_output(chapter):
    found = problems(executed_cells(chapter))
    assert not found, f"{chapter} shows a reader:\n" + "\n".join(
        f"  cell {i}: {what}: {excerpt[:200]}" for i, what, excerpt in found)


def split_prints(cells):
    """[(cell index, excerpt)] for each place where one run of printing shows as several boxes.

    Two stream outputs of the same name in a row: the kernel sent the printing in pieces (it
    flushes on a timer, so a loop that prints between slow steps arrives as one message per
    step), and the book draws each piece as a box of its own. The build's kernels flush only
    at a display and at the end of a cell (book/_ext/kernel_startup.py).
    """
    found = []
    for i, cell in enumerate(cells):
        outputs = cell.get("outputs", [])
        for a, b in zip(outputs, outputs[1:]):
            if a.get("output_type") == b.get("output_type") == "stream" and a.get("name") == b.get("name"):
                found.append((i, "".join(a["text"])[-60:] + " | " + "".join(b["text"])[:60]))
    return found


@pytest.mark.book
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_executed_chapter_prints_each_run_in_one_box(chapter):
    found = split_prints(executed_cells(chapter))
    assert not found, f"{chapter}: printing split over several boxes:\n" + "\n".join(
        f"  cell {i}: {excerpt!r}" for i, excerpt in found)


def test_split_print_scanner_finds_pieces_of_one_print_only():
    figure = {"output_type": "display_data", "metadata": {}, "data": {"text/plain": "<Figure>"}}
    pieces = [_stream("demo-random  0.28\n"), _stream("demo-clip  0.66\n")]
    assert [i for i, _ in split_prints([{"outputs": pieces}])] == [0]
    # a figure between two prints, or stdout next to stderr, are two boxes on any front end
    assert split_prints([{"outputs": [pieces[0], figure, pieces[1]]},
                         {"outputs": [pieces[0], _stream("note\n", "stderr")]}]) == []


# The scanner, on outputs made up to contain each problem once (and on clean ones).
def _stream(text, name="stdout"):
    return {"output_type": "stream", "name": name, "text": text}


def _result(plain, html=None):
    data = {"text/plain": plain}
    if html:
        data["text/html"] = html
    return {"output_type": "execute_result", "data": data, "metadata": {}}


CLEAN = [_stream("\u2713 similarity.ex1: the overlap profile matches ([0.055 0.504 0.839]).\n"),
         _stream("\u270e similarity.ex1: no answer yet: replace the `...` in the stub with your code.\n"),
         _result("(0.36, 0.5)"), _result("   a  b\n0  1  2", "<th>model</th><th>r</th>"),
         _result("interval [-0.0012, 0.05], k-0 x-0.000", "<td>-0.01</td><td>0.000</td>"),
         _stream("median R2 = 0.36; see https://github.com/scaleinv-book/scaleinv/tree/v0.1.0\n")]
DIRTY = [
    ("a check printed a failure", _stream("\u2717 similarity.ex1: the overlap profile is off\n")),
    ("a check printed a failure", _stream("\u274c similarity.ex1: the overlap profile is off\n")),
    ("a traceback", {"output_type": "error", "ename": "ValueError", "evalue": "x", "traceback": []}),
    ("a traceback", _stream("Traceback (most recent call last):\n  File ...", "stderr")),
    ("a warning", _stream("/x/tqdm/auto.py:21: TqdmWarning: IProgress not found.", "stderr")),
    ("a warning", _stream("UserWarning: n_components is large", "stderr")),
    ("a progress bar", _stream(" 40%|████      | 2/5 [00:01<00:02,  1.50it/s]", "stderr")),
    ("a progress bar", {"output_type": "display_data", "metadata": {},
                        "data": {WIDGET: {"model_id": "1"}, "text/plain": "HBox()"}}),
    ("a path of the build machine", _stream(f"saved to {ROOT}/_build/x.npz\n")),
    ("a path of the build machine", _stream("cache: /tmp/scaleinv-ci/demo\n")),
    ("a path of the build machine", _stream("/opt/venv/lib/python3.11/site-packages/x.py:3\n")),
    ("a raw NumPy scalar repr", _result("(np.float64(0.36), 2)")),
    ("a bare number as the cell's result", _result("0.36")),
    ("a bare number as the cell's result", _result("-0.6363636363636364")),
    ("a placeholder table header", _result("x", '<tr><th class="blank">&nbsp;</th><th>col_0</th></tr>')),
    ("a negative zero", _result("x", "<tr><td>-0.000</td></tr>")),
    ("a negative zero", _stream("slope -0.0 per decade\n")),
]


def _png(cell_source, with_image):
    outputs = [{"output_type": "display_data", "metadata": {},
                "data": {PNG: "iVBOR", "text/plain": "<Figure>"}}] if with_image else []
    return {"cell_type": "code", "source": cell_source, "outputs": outputs}


def test_figure_scanner_finds_a_drawing_cell_without_its_figure():
    cells = [_png("fig, ax = plt.subplots(1, 2)\nax[0].plot(x)", True),
             _png("fig = su.plot_profile(ks, values)", False),
             _png("fig, ax = plt.subplots()", False),
             _png("print(table)", False)]
    assert figureless_drawing_cells(cells) == [1, 2]


def test_scanner_passes_clean_outputs():
    assert problems([{"cell_type": "code", "outputs": CLEAN}]) == []


@pytest.mark.parametrize("what,output", DIRTY, ids=[f"{w}-{i}" for i, (w, _) in enumerate(DIRTY)])
def test_scanner_finds_each_problem(what, output):
    found = problems([{"cell_type": "code", "outputs": [output]}])
    assert [w for _, w, _ in found] == [what], found


def test_a_recorded_number_is_not_echoed_by_a_notebook():
    from IPython.core.formatters import DisplayFormatter

    from scaleinv_utils.record import Recorded, record
    value = record("test.value", np.float64(0.36))
    assert isinstance(value, Recorded) and value == 0.36 and float(value) == 0.36
    assert DisplayFormatter().format(value) == ({}, {})
    assert DisplayFormatter().format(0.36)[0]["text/plain"] == "0.36"  # a float would be


def test_progress_bars_follow_the_environment(monkeypatch, capsys):
    from scaleinv_utils import _progress
    monkeypatch.setenv(_progress.PROGRESS_ENV, "0")
    assert list(_progress.tqdm(range(3), disable=False, file=sys.stderr)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(_progress.PROGRESS_ENV, "1")
    list(_progress.tqdm(range(3), disable=False, file=sys.stderr, mininterval=0))
    assert "3/3" in capsys.readouterr().err
    list(_progress.tqdm(range(3), disable=True, file=sys.stderr))
    assert capsys.readouterr().err == ""


def test_the_book_build_switches_progress_bars_off(monkeypatch, tmp_path):
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import scaleinv_book

    from scaleinv_utils import _progress
    for name in (_progress.PROGRESS_ENV, "MATPLOTLIBRC", "MPLBACKEND", "IPYTHONDIR"):  # restored
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    scaleinv_book.setup(_App(tmp_path / "html"))
    assert not _progress.progress_enabled()


class _App:
    """What the extension's setup uses of a Sphinx application."""

    def __init__(self, outdir):
        self.outdir = str(outdir)

    def connect(self, *args, **kwargs):
        pass


def _figure_outputs():
    """The output types of a one-cell notebook that draws a line, run in a fresh kernel that
    inherits this process's environment (as the book build's kernels do)."""
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([0, 1])\nplt.show()")])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return [mime for output in nb.cells[0].outputs for mime in output.get("data", {})]


@pytest.mark.slow
def test_the_book_build_shows_figures_under_agg(monkeypatch, tmp_path):
    """Under MPLBACKEND=Agg (.ci/run sets it) a kernel shows no figure (the negative control);
    after the book extension's setup the same cell shows its PNG."""
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import scaleinv_book
    pytest.importorskip("nbclient")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("MATPLOTLIBRC", str(ROOT / "book" / "_ext" / "matplotlibrc"))
    monkeypatch.setenv("SCALEINV_PROGRESS", "0")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython-before"))
    assert PNG not in _figure_outputs()
    scaleinv_book.setup(_App(tmp_path / "html"))
    assert os.environ["MPLBACKEND"] == scaleinv_book.INLINE_BACKEND
    assert PNG in _figure_outputs()


def _stream_outputs(code):
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return [(o["output_type"], o.get("name")) for o in nb.cells[0].outputs]


@pytest.mark.slow
def test_the_book_build_prints_a_slow_loop_in_one_box(monkeypatch, tmp_path):
    """A loop that prints between slow steps: a plain kernel sends one stream output per
    step (the negative control); the book's kernels send one, and a figure between two
    prints still splits them, in order."""
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import scaleinv_book
    pytest.importorskip("nbclient")
    loop = "import time\nfor i in range(3):\n    print('step', i)\n    time.sleep(0.5)\n"
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython-before"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    assert len(_stream_outputs(loop)) >= 2   # 3 on a quiet machine; a late timer may join two
    scaleinv_book.setup(_App(tmp_path / "html"))
    assert os.environ["IPYTHONDIR"] == str(tmp_path / "ipython")
    assert _stream_outputs(loop) == [("stream", "stdout")]
    figure = ("print('before')\nimport matplotlib.pyplot as plt\nplt.plot([0, 1])\nplt.show()\n"
              "time.sleep(0.5)\nprint('after')")
    assert _stream_outputs("import time\n" + figure) == [
        ("stream", "stdout"), ("display_data", None), ("stream", "stdout")]


def test_importing_the_package_imports_tqdm_auto_quietly():
    """Later imports of tqdm.auto (huggingface_hub's, under open_clip) reuse this one, so a
    notebook without ipywidgets shows no "IProgress not found" warning."""
    import subprocess
    code = ("import sys, warnings; warnings.simplefilter('error'); import scaleinv_utils; "
            "assert 'tqdm.auto' in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
