"""The feedback page as a student opens it: one HTML file, no network, in headless Chromium.

A throw-away course with the real grader/nbgrader_config.py and a tiny lesson: formulas of every kind the
lessons use, a test cell graded by a real gradlab check that fails, and a test cell whose failure carries a
picture (an SVG display_data above the error, the shape gradlab.instructor.execute gives a failed check's
figure), a long printout and a long explanation. One student, autograded by nbgrader, then
`nbgrader generate_feedback`; the page is opened with every request that is not file:// aborted.
Then every formula of the seven lessons: each lesson rendered by the same exporter (no autograde), and
MathJax's list of what it found and drew compared, formula by formula, with the formulas of the source.

Page size and render time go to artifacts/feedback/ (with screenshots), and are printed.
"""
import collections
import functools
import io
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from browser_helpers import CHROMIUM_ARGS, chromium_or_skip
from course import GRADER_CONFIG, ROOT, Course, lessons, NOTEBOOKS
from gradlab.instructor import feedback, mathjax

ARTIFACTS = ROOT / "artifacts" / "feedback"

# --------------------------------------------------------------------------- the tiny lesson
FORMULAS = [  # what the seven lessons use, in the forms they use it
    r"\frac{\partial J}{\partial w} = \frac{2}{N}\sum_{i=1}^{N}(h_i - y_i)\,\sigma'(z_i)\,x_i",
    r"\underbrace{\sigma(z)\bigl(1 - \sigma(z)\bigr)}_{\text{local slope}} \xrightarrow{\ \text{chain}\ } \boxed{\operatorname{relu}'(z)}",
    r"W \in \mathbb{R}^{D_{in} \times D_{out}},\quad \lVert g \rVert \le \eta",
    r"\operatorname{relu}'(z) = \begin{cases} 1 & z > 0 \\ 0 & \text{otherwise} \end{cases}",
    r"X = \begin{pmatrix} x_{11} & x_{12} \\ x_{21} & x_{22} \end{pmatrix},\qquad \nabla_W L = X^\top \delta",
]
MARKDOWN = (
    "# A tiny lesson\n\n"
    f"Inline: ${FORMULAS[0]}$, and ${FORMULAS[2]}$ within a sentence.\n\n"
    f"$${FORMULAS[1]}$$\n\n"
    f"$${FORMULAS[3]}$$\n\n"
    f"and a matrix, $${FORMULAS[4]}$$ in a paragraph."
)
# The picture a failed check carries: gradlab.graph's backward pass with the first wrong node marked.
NODES = [
    {"name": "L", "label": "L", "status": "right"},
    {"name": "q", "label": "dL/dq", "status": "wrong", "note": "the sign is flipped. Fix: dL/dq = q - y."},
    {"name": "e", "label": "de", "status": "consequence"},
    {"name": "w", "label": "dw", "status": "consequence"},
    {"name": "b", "label": "db", "status": "unknown"},
]
EDGES = [("L", "q"), ("q", "e"), ("e", "w"), ("e", "b")]


@functools.cache
def picture():
    from gradlab import graph

    return graph.draw_backward(NODES, EDGES, title="the backward pass of your grads_by_graph").svg


EXPLANATION = (
    "dL/dq is wrong at the first node of the backward graph: expected -0.4213 but got 0.4213 on case 'float64, N = 7'; "
    "the largest difference is 0.8426 at row 3, and every entry has the opposite sign, so the likely cause is a "
    "flipped sign in the derivative of the loss with respect to q (did you write q - y where the chain rule needs "
    "y - q?), which then flows into every gradient computed after it: de, df, du, dw and db all inherit it. "
    "got=tensor([" + ",".join(["0.4213"] * 40) + "]) END-OF-EXPLANATION")
PRINTOUT = "the student printed this: " + "a long line of output " * 25 + "END-OF-PRINTOUT"


def hidden_lines():
    """{test cell: its hidden lines}: they must not reach the page."""
    return {
        "test_sigmoid": ["lesson01.check_sigmoid(sigmoid)"],
        "test_graph": [f"display({{'image/svg+xml': {picture()!r}, 'text/plain': '(a picture of the mistake)'}}, "
                       "raw=True)", f"raise AssertionError({EXPLANATION!r})"],
    }


def _meta(**nbgrader):
    return {"nbgrader": {"schema_version": 3, "locked": False, "solution": False, "grade": False, "task": False,
                         **nbgrader}}


def _test_cell(grade_id, visible):
    hidden = "\n".join(hidden_lines()[grade_id])
    return new_code_cell(f"{visible}\n### BEGIN HIDDEN TESTS\n{hidden}\n### END HIDDEN TESTS",
                         metadata=_meta(grade_id=grade_id, grade=True, points=1, locked=True))


def source_notebook():
    nb = new_notebook(cells=[
        new_markdown_cell(MARKDOWN),
        new_code_cell("import torch\nfrom IPython.display import display", metadata=_meta(grade_id="imports", locked=True)),
        new_code_cell("def sigmoid(z):\n    ### BEGIN SOLUTION\n    return 1 / (1 + torch.exp(-z))\n    ### END SOLUTION",
                      metadata=_meta(grade_id="sigmoid", solution=True)),
        _test_cell("test_sigmoid", "from gradlab.grading import lesson01"),
        _test_cell("test_graph", f"print({PRINTOUT!r})"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """(feedback page, autograded notebook, seconds generate_feedback took) for a student whose sigmoid has a sign slip."""
    mathjax_or_skip()
    course = Course(tmp_path_factory.mktemp("course"))
    (course.root / "source" / "tiny").mkdir(parents=True)
    nbformat.write(source_notebook(), course.root / "source" / "tiny" / "tiny.ipynb")
    with open(course.root / "nbgrader_config.py", "a") as config:
        config.write(f"c.CourseDirectory.source_directory = {str(course.root / 'source')!r}\n")
    released = nbformat.read(course.release("tiny") / "tiny.ipynb", as_version=4)
    for cell in released.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "sigmoid":
            cell.source = "def sigmoid(z):\n    return 1 / (1 + torch.exp(z))"
    folder = course.root / "submitted" / "ann" / "tiny"
    folder.mkdir(parents=True)
    nbformat.write(released, folder / "tiny.ipynb")
    course.autograde("tiny")
    started = time.perf_counter()
    log = course.nbgrader("generate_feedback", "tiny")
    seconds = time.perf_counter() - started
    assert "MathJax for offline formulas not found" not in log.stdout + log.stderr
    autograded = nbformat.read(course.root / "autograded" / "ann" / "tiny" / "tiny.ipynb", as_version=4)
    return course.root / "feedback" / "ann" / "tiny" / "tiny.html", autograded, seconds


# --------------------------------------------------------------------------- the browser
def mathjax_or_skip():
    """The MathJax file `make setup` fetches; skip without it, except in CI, where it is a failure."""
    path = mathjax.default_path()
    if path.is_file():
        return path
    how = "run `make setup` (it fetches MathJax with npm)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{path} is missing, so feedback pages cannot render formulas offline; {how}", pytrace=False)
    pytest.skip(f"{path} not found; {how}")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    path = chromium_or_skip()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Offline:
    """A page opened with every request that is not file:// aborted (and listed), and its console errors."""

    def __init__(self, browser, path, width=1280):
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.requests, self.errors = [], []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.goto(Path(path).as_uri())
        self.page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                                    timeout=60_000)
        self.rendered_ms = self.page.evaluate("async () => { await MathJax.startup.promise; return performance.now(); }")

    def _route(self, route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            self.requests.append(route.request.url)
            route.abort()

    def math(self):
        """What MathJax found (TeX, whitespace collapsed), drew, and could not read."""
        return self.page.evaluate("""() => ({
            found: Array.from(MathJax.startup.document.math).map(m => m.math.trim().split(/\\s+/).join(' ')),
            drawn: [...document.querySelectorAll('mjx-container > svg')]
                     .filter(s => s.getBoundingClientRect().width > 0 && s.getBoundingClientRect().height > 0).length,
            containers: document.querySelectorAll('mjx-container').length,
            errors: (window.gradlabMathErrors || []).concat(
                [...document.querySelectorAll('[data-mml-node=merror], [data-mjx-error]')]
                  .map(e => e.getAttribute('data-mjx-error') || e.textContent)),
            leftover: [...document.querySelectorAll('.text_cell_render')].map(cell => {
                const copy = cell.cloneNode(true);
                copy.querySelectorAll('mjx-container, code, pre').forEach(e => e.remove());
                return copy.textContent; }).filter(t => /\\$|\\\\\\(|\\\\\\[|\\\\[a-zA-Z]+/.test(t)),
        })""")

    def close(self):
        self.context.close()


@pytest.fixture(scope="module")
def opened(page, browser):
    path, _, _ = page
    view = Offline(browser, path)
    yield view
    view.close()


def _record(name, **values):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / "measurements.json"
    data = json.loads(target.read_text()) if target.exists() else {}
    data[name] = values
    target.write_text(json.dumps(data, indent=2, sort_keys=True))
    print(f"{name}: {values}")


def formulas_in(markdown):
    """Every formula MathJax should find in markdown ($$…$$ and $…$), code spans and fences left out."""
    text = re.sub(r"^(```|~~~).*?^\1", " ", markdown, flags=re.M | re.S)
    text = re.sub(r"(`+)(.+?)\1", " ", text, flags=re.S)
    found = []

    def keep(match):
        found.append(" ".join(match.group(1).split()))
        return " "

    text = re.sub(r"\$\$(.+?)\$\$", keep, text, flags=re.S)
    re.sub(r"(?<!\\)\$(.+?)(?<!\\)\$", keep, text, flags=re.S)
    return found


# --------------------------------------------------------------------------- the tests: the tiny lesson's page
@pytest.mark.slow
@pytest.mark.browser
def test_the_page_asks_nothing_of_the_network_and_logs_no_error(page, opened):
    path, _, seconds = page
    assert opened.requests == [], "the page tried to reach the network"
    assert opened.errors == []
    html = path.read_text()
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=[\"']?(https?:)?//", html, re.I)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    _record("tiny lesson page", bytes=path.stat().st_size, generate_feedback_s=round(seconds, 1),
            mathjax_rendered_ms=round(opened.rendered_ms))


@pytest.mark.slow
@pytest.mark.browser
def test_the_formulas_render(opened):
    math = opened.math()
    assert math["errors"] == []
    assert collections.Counter(math["found"]) == collections.Counter(" ".join(f.split()) for f in FORMULAS)
    assert math["drawn"] == math["containers"] == len(FORMULAS)
    assert math["leftover"] == [], "TeX left as text"


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize("width", [1280, 480])
def test_a_long_explanation_and_printout_wrap_inside_their_box(page, browser, width):
    view = Offline(browser, page[0], width=width)
    try:
        boxes = view.page.evaluate("""() => [...document.querySelectorAll('div.output_text')].map(box => {
            const pre = box.querySelector('pre'), cell = box.closest('.cell').getBoundingClientRect();
            const r = box.getBoundingClientRect();
            return {text: pre.textContent, box: [box.scrollWidth, box.clientWidth], pre: [pre.scrollWidth, pre.clientWidth],
                    inside: r.left >= cell.left - 1 && r.right <= cell.right + 1, lines: Math.round(pre.getBoundingClientRect().height /
                    parseFloat(getComputedStyle(pre).lineHeight))}; })""")
        pictures_inside = view.page.evaluate("""() => [...document.querySelectorAll('div.output_svg img')].map(img =>
            img.getBoundingClientRect().right <= img.closest('.cell').getBoundingClientRect().right + 1)""")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        view.page.screenshot(path=str(ARTIFACTS / f"tiny-{width}px.png"), full_page=True)
        visible = view.page.inner_text("body")
    finally:
        view.close()
    long_ones = [b for b in boxes if "END-OF-" in b["text"]]
    assert len(long_ones) == 2, [b["text"][:80] for b in boxes]
    for box in boxes:
        assert box["box"][0] <= box["box"][1] and box["pre"][0] <= box["pre"][1], f"runs out of its box: {box}"
        assert box["inside"], f"the box sticks out of its cell: {box}"
    for box in long_ones:
        assert box["lines"] > 2, "a long line wraps onto several lines"
    assert pictures_inside == [True], "the picture is scaled to fit its cell"
    # Nothing cut off: the whole explanation and printout are in the text the browser shows.
    shown = " ".join(visible.split())
    assert " ".join(EXPLANATION.split()) in shown.replace("\u200b", "")
    assert " ".join(PRINTOUT.split()) in shown


@pytest.mark.slow
@pytest.mark.browser
def test_the_picture_of_the_mistake_is_shown_above_its_explanation(opened):
    from PIL import Image

    img = opened.page.locator("div.output_svg img")
    assert img.count() == 1
    assert img.is_visible()
    assert img.get_attribute("alt") == "(a picture of the mistake)"
    size = img.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight, img.getBoundingClientRect().width,"
                        " img.closest('.output_area').getBoundingClientRect().width]")
    assert size[0] and size[1] > 100 and size[2] > 100, "the SVG decoded"
    assert 100 < size[3] <= size[4], "drawn at a readable size, inside its output area"
    order = opened.page.evaluate("""() => {
        const img = document.querySelector('div.output_svg img'), area = img.closest('.output');
        const error = [...area.querySelectorAll('.output_error')].pop();
        return [!!error, error && error.textContent.includes('END-OF-EXPLANATION'),
                !!(img.compareDocumentPosition(error) & Node.DOCUMENT_POSITION_FOLLOWING)]; }""")
    assert order == [True, True, True], "the picture comes right before the explanation, in the same cell"
    shot = np.asarray(Image.open(io.BytesIO(img.screenshot())).convert("RGB")).astype(int)
    frame = int((np.abs(shot - [0xc9, 0x2a, 0x2a]).max(axis=-1) < 40).sum())
    fill = int((np.abs(shot - [0xff, 0xc9, 0xc9]).max(axis=-1) < 12).sum())
    assert frame > 50 and fill > 300, "the first wrong node is painted, red on pink"


@pytest.mark.slow
@pytest.mark.browser
def test_the_hidden_tests_code_is_not_in_the_page(page, opened):
    import html as html_module

    path, autograded, _ = page
    text = path.read_text()
    shown = opened.page.inner_text("body")
    for grade_id, lines in hidden_lines().items():
        cell = next(c for c in autograded.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
        for line in lines:
            assert line in cell.source, "the instructor's autograded copy keeps the hidden tests"
            for form in {line, html_module.escape(line), html_module.escape(line, quote=False)}:
                assert form not in text, f"{grade_id}: hidden code in the page"
            assert line not in shown
    assert shown.count("hidden tests: they ran at grading") == 2
    assert "σ(z) is wrong" in shown, "the real check's verdict is shown"


# --------------------------------------------------------------------------- every formula of the seven lessons
@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize("assignment, notebook", lessons())
def test_every_formula_of_the_lessons_renders(browser, tmp_path, assignment, notebook):
    mathjax_or_skip()
    source = NOTEBOOKS / assignment / notebook
    nb = nbformat.read(source, as_version=4)
    expected = [f for cell in nb.cells if cell.cell_type == "markdown" for f in formulas_in(cell.source)]
    assert len(expected) > 20
    for cell in nb.cells:  # what nbgrader's GetGrades adds before the template reads it
        if cell.metadata.get("nbgrader", {}).get("grade") or cell.metadata.get("nbgrader", {}).get("task"):
            cell.metadata.nbgrader.update(score=0, points=cell.metadata.nbgrader.get("points", 0))
    exporter = feedback.FeedbackExporter(config=_grader_config())
    html, _ = exporter.from_notebook_node(nb, resources={
        "nbgrader": {"notebook": notebook, "score": 0, "max_score": 0, "late_penalty": 0},
        "metadata": {"path": str(source.parent)}})
    path = tmp_path / notebook.replace(".ipynb", ".html")
    path.write_text(html)
    view = Offline(browser, path)
    try:
        math = view.math()
        assert view.requests == [] and view.errors == []
        assert math["errors"] == []
        missing = collections.Counter(expected) - collections.Counter(math["found"])
        extra = collections.Counter(math["found"]) - collections.Counter(expected)
        assert not missing and not extra, f"formulas MathJax did not get as written: {list(missing)[:5]}, " \
                                          f"it found instead: {list(extra)[:5]}"
        assert math["drawn"] == math["containers"] == len(expected)
        assert math["leftover"] == []
        _record(f"lesson {assignment}", formulas=len(expected), bytes=len(html.encode()),
                mathjax_rendered_ms=round(view.rendered_ms))
    finally:
        view.close()


def _grader_config():
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader(GRADER_CONFIG.name, path=str(GRADER_CONFIG.parent)).load_config()


# --------------------------------------------------------------------------- without a browser
def _tiny_with_picture():
    nb = new_notebook(cells=[new_markdown_cell("$a_i = \\frac{1}{2}$"), new_code_cell("f()")])
    nb.cells[1].outputs = [new_output("display_data", data={"image/svg+xml": picture(), "text/plain": "(a picture of the mistake)"}),
                           new_output("error", ename="GradingResult", evalue=EXPLANATION, traceback=[EXPLANATION])]
    return nb


def _export(**traits):
    exporter = feedback.FeedbackExporter(config=_grader_config(), **traits)
    html, _ = exporter.from_notebook_node(_tiny_with_picture(), resources={
        "nbgrader": {"notebook": "tiny", "score": 0, "max_score": 1, "late_penalty": 0}})
    return html


def test_the_page_carries_mathjax_inline_and_forbids_the_network():
    library = feedback._script_safe(mathjax_or_skip().read_text())
    html = _export()
    scripts = re.findall(r"<script\b([^>]*)>", html)
    assert all("src" not in attributes for attributes in scripts)
    assert html.count(library) == 1 and "window.MathJax = {" in html
    assert re.search(r"<meta[^>]*Content-Security-Policy", html) and "cdnjs" not in html
    assert 'alt="(a picture of the mistake)"' in html and "white-space: pre-wrap" in html


def test_without_mathjax_the_page_loads_it_from_a_cdn_and_the_log_says_so(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        html = _export(mathjax_file=str(tmp_path / "missing.js"))
    assert "https://cdnjs.cloudflare.com/ajax/libs/mathjax/" in html and "Content-Security-Policy" not in html
    assert "white-space: pre-wrap" in html, "explanations wrap either way"
    assert any("MathJax for offline formulas not found" in r.getMessage() for r in caplog.records)


def test_the_makefile_fetches_mathjax_where_the_exporter_looks():
    makefile = (ROOT / "Makefile").read_text()
    where = re.search(r"^MATHJAX := \$\(VENV\)/(\S+)$", makefile, re.M).group(1)
    assert Path(sys.prefix, where) == mathjax.default_path()
    assert re.search(r"^setup: .*\$\(MATHJAX\)", makefile, re.M) and re.search(r"^test: .*\$\(MATHJAX\)", makefile, re.M)
    assert "$(PY) -m gradlab.instructor.mathjax $@" in makefile


def test_inlined_javascript_cannot_end_its_script_element():
    escaped = feedback._script_safe('a = "</script>"; b = /<!--.*?-->/; c = "</SCRIPT"')
    assert "</script" not in escaped.lower() and "<!--" not in escaped
    assert escaped == 'a = "<\\/script>"; b = /<\\!--.*?-->/; c = "<\\/SCRIPT"'


def test_hidden_lines_are_cut_from_pictures_and_html_too():
    secret = "check_secret(x) < limit and 'q' in names"
    cell = new_code_cell(f"### BEGIN HIDDEN TESTS\n{secret}\n### END HIDDEN TESTS", metadata=_meta(
        grade_id="t", grade=True, points=1, locked=True))
    import html as html_module

    cell.outputs = [new_output("display_data", data={
        "image/svg+xml": f"<svg><text>{html_module.escape(secret)}</text></svg>",
        "text/html": f"<p>{html_module.escape(secret, quote=False)}</p>", "text/plain": secret})]
    nb, _ = feedback.HideHiddenTests().preprocess(new_notebook(cells=[cell]), {})
    data = nb.cells[0].outputs[0].data
    assert data["image/svg+xml"] == f"<svg><text>{feedback.CUT}</text></svg>"
    assert data["text/html"] == f"<p>{feedback.CUT}</p>" and data["text/plain"] == feedback.CUT


def test_setup_without_npm_warns_and_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mathjax.shutil, "which", lambda name: None)
    assert mathjax.main([str(tmp_path / "tex-svg-full.js")]) == 0
    assert "npm is not installed" in capsys.readouterr().err and not (tmp_path / "tex-svg-full.js").exists()
