"""The class report (gradlab.instructor.report) and the grade table's list of flags.

Fast tests: every kind label the course's checks use has a line of advice; a visible test's message is read as
the kind gradlab.check gave it; how a cell's verdicts become right / wrong / not reached / not graded.
Slow tests: a throw-away course with the real config grades some of lesson 3's example submissions (in parallel),
plus one whose kernel ends itself and a roster student who hands in nothing; the report must name each example's
mistake under the right gradient, agree with the gradebook, list who could not be graded and the scan's flags,
contain no hidden test and no solution, and render in headless Chromium with every network request blocked.
"""
import ast
import dataclasses
import html
import re
import shutil
import subprocess
import sys
import time

import nbformat
import pandas as pd
import pytest
import torch

from course import LESSON3_TIMEOUT_S, NOTEBOOKS, ROOT, Course
from gradlab.check import GradientError, check_grad
from gradlab.instructor import grade_table, report

ASSIGNMENT, NOTEBOOK = "03-backprop-by-hand", "backprop-by-hand"
TIMEOUT_S = LESSON3_TIMEOUT_S
EXAMPLES = ("example-correct", "example-wrong-sign", "example-missing-1-over-n", "example-endless-loop",
            "example-edited-test", "example-blank", "example-invalid-json", "example-rebinds-names")
OPTIONAL = ("example-autograd",)  # graded too where grader/examples/ has it
EXITS = "example-exits"  # made here from example-correct: dz_db's exercise cell ends the kernel (os._exit)
ABSENT = "absent-student"  # on the roster, hands in nothing


# ============================================================================================ fast
def _course_kinds():
    """Every kind label the course's checks can give, read from their code, per way of giving it: ``kind="..."``
    keywords (also in conditional expressions), ``hint, kind = "...", "..."``, Variant/Diagnosis/Verdict labels,
    diagnose's ``return "kind", sentence``, the lessons' (kind, advice) tables, variants.KINDS, check._LABELS."""
    from gradlab.check import _LABELS
    from gradlab.variants import KINDS

    gradlab = ROOT / "gradlab"
    lessons = sorted((gradlab / "grading").glob("*.py"))
    files = lessons + [gradlab / "check.py", gradlab / "diagnose.py", gradlab / "variants.py",
                       gradlab / "instructor" / "execute.py"]
    found = {"KINDS": set(KINDS), "_LABELS": set(_LABELS)}

    def strings(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, ast.IfExp):
            return strings(node.body) + strings(node.orelse)
        return []

    def add(how, labels):
        found.setdefault(how, set()).update(labels)

    for path in files:
        tree = ast.parse(path.read_text())
        skip = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "_name_ratio"
                for n in ast.walk(f)}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.keyword) and node.arg == "kind":
                add("kind=", strings(node.value))
            elif isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name in ("Variant", "Diagnosis") and node.args:
                    add("Variant", strings(node.args[0]))
                if name == "Verdict" and len(node.args) >= 4:
                    add("Verdict", strings(node.args[3]))
            elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple) \
                    and isinstance(node.value, ast.Tuple):
                for target, value in zip(node.targets[0].elts, node.value.elts):
                    if isinstance(target, ast.Name) and target.id == "kind":
                        add("..., kind =", strings(value))
            elif isinstance(node, ast.Return) and path.name == "diagnose.py" and isinstance(node.value, ast.Tuple) \
                    and len(node.value.elts) == 2:
                add("return kind, sentence", strings(node.value.elts[0]))
            elif isinstance(node, ast.Tuple) and path in lessons and len(node.elts) == 2:
                first, second = (strings(e) for e in node.elts)  # ("weights only", "that counts the weights …")
                if first and second and len(first[0]) <= 25 and len(second[0]) >= 30:
                    add("(kind, advice)", first)
            elif isinstance(node, ast.FunctionDef) and node.name == "_known_mistakes":
                for d in ast.walk(node):
                    if isinstance(d, ast.Dict):
                        add("{kind: ...}", [k.value for k in d.keys if isinstance(k, ast.Constant)])
    return found


def test_every_kind_label_the_course_uses_has_a_line_of_advice():
    found = _course_kinds()
    # The reader must not go blind: each way of giving a label finds some (the lessons change; the ways stay).
    ways = {"KINDS", "_LABELS", "kind=", "Variant", "Verdict", "..., kind =", "return kind, sentence", "(kind, advice)",
            "{kind: ...}"}
    assert {how for how, labels in found.items() if labels} == ways
    kinds = set().union(*found.values())
    assert {"sign", "factor", "wrong_point", "autograd", "not written", "did not run", "grader error"} <= kinds
    assert kinds - set(report.ADVICE) == set(), "write a line of advice for each new label in report.ADVICE"
    for key, (what, advice) in report.ADVICE.items():
        assert what and advice and "\n" not in what + advice, key
    assert {"not defined", "visible test", "no report", "factor: missing 1/N", "factor: 2 = N"} <= set(report.ADVICE)


def test_advice_lines_refine_a_factor_and_fall_back_plainly_for_an_unknown_kind():
    message = "dJ/dσ is wrong (n=7, float32, cpu): every value is 7 × the expected one: did you forget to divide by N (N = 7 here)?"
    assert report.advice_line(0.22, "factor", message).startswith(
        "22 % forgot the 1/N of the mean: revisit why the mean's derivative carries 1/N")
    # N = 2 in the visible test: a factor 2 is a missing 1/N or an extra 2, and the report says so.
    two = "dJ/dσ is wrong (s = [0.5, 0.9], y = [1, 0]): every value is 2 × the expected one: an extra factor 2 (is …"
    assert report.advice("factor", two)[0] == "factor: 2 = N"
    assert report.advice("factor", two.replace("s = [0.5, 0.9], y = [1, 0]", "N = 3, float64"))[0] == "factor: extra 2"
    mistake, what, advice = report.advice("a label nobody wrote advice for")
    assert mistake == "a label nobody wrote advice for" and "a label nobody wrote advice for" in what and advice
    slip = "dJ/dw is wrong (n=1, float32, cpu): it matches a backward pass that leaves out σ'."
    assert report.advice("recognised slip", slip)[0] == "recognised slip: it matches a backward pass that leaves out σ'"


def _visible(got, expected, context="s = [0.5, 0.9], y = [1, 0]"):
    with pytest.raises(GradientError) as caught:
        check_grad("dJ/dσ", got, expected, context=context)
    return caught.value


@pytest.mark.parametrize("got, kind", [
    (lambda e: -e, "sign"), (lambda e: 2 * e, "factor"), (lambda e: torch.zeros_like(e), "zeros"),
    (lambda e: e * torch.tensor([float("nan"), 1.0]), "nan"), (lambda e: e.reshape(1, 2).T.contiguous(), "shape"),
    (lambda e: None, "none"), (lambda e: "0.5, 0.9", "type"), (lambda e: e * (1 + 3e-4), "close"),
    (lambda e: e + torch.tensor([0.0, 1.0]), "values"),
])
def test_a_visible_tests_error_is_read_as_the_kind_gradlab_check_gave_it(got, kind):
    expected = torch.tensor([-0.5, 0.9])
    error = _visible(got(expected), expected)
    assert error.kind == kind
    assert report.visible_diagnosis(str(error)) == ("dJ/dσ", kind)
    verdict = {"ok": False, "kind": "did not run", "gradient": None, "outcomes": [],
               "message": f"the hidden checks did not run, because the cell stopped at an error first: GradientError: {error}"}
    judged = report._judge_cell([verdict], ["dJ/dσ"])["dJ/dσ"]
    assert judged[0] == report.WRONG and judged[1].kind == kind and judged[1].source == "visible test"


def test_a_transposed_matrix_in_a_visible_test():
    expected = torch.arange(6.0).reshape(2, 3)
    assert report.visible_diagnosis(str(_visible(expected.T.contiguous(), expected, "W"))) == ("dJ/dσ", "transposed")


def _outcome(gradient, status="exact", kind=None):
    return {"gradient": gradient, "status": status, "kind": kind, "case": "n=1, float32, cpu"}


def test_how_a_cells_verdicts_become_right_wrong_not_reached_and_not_graded():
    grads = ["dJ/dw", "dJ/db"]
    # The check stopped at dJ/dw: dJ/db was never compared.
    slip = {"ok": False, "kind": "recognised slip", "gradient": "dJ/dw", "message": "dJ/dw is wrong (…): it …",
            "outcomes": [_outcome("dJ/dw", "wrong", "values")]}
    assert {g: s for g, (s, _) in report._judge_cell([slip], grads).items()} == {"dJ/dw": "wrong", "dJ/db": "not reached"}
    # A function that changed its input is wrong as a whole, even where a first comparison was right.
    changed = {"ok": False, "kind": "changed input", "gradient": None, "message": "`f` changed its input",
               "outcomes": [_outcome("dJ/dw"), _outcome("dJ/db")]}
    assert {s for s, _ in report._judge_cell([changed], grads).values()} == {"wrong"}
    # A cell-level failure that is not about the function as a whole leaves what was shown right, right.
    cache = {"ok": False, "kind": "cache", "gradient": None, "message": "the cache should be …",
             "outcomes": [_outcome("J")]}
    assert {g: s for g, (s, _) in report._judge_cell([cache], ["J", "x in the cache"]).items()} == {
        "J": "right", "x in the cache": "wrong"}
    # The grader's own failure, and a kernel that stopped earlier, are not the student's mistakes.
    fault = {"ok": False, "kind": "grader error", "gradient": None, "message": "the grader could not judge this check",
             "problem": "RuntimeError: boom", "outcomes": []}
    stopped = {"ok": False, "kind": "did not run", "gradient": None, "outcomes": [],
               "message": "the hidden checks did not run, because the cell stopped at an error first: NotRun: this cell "
                          "did not run: the kernel stopped in cell 40, so nothing after it could run."}
    for verdict in (fault, stopped):
        assert {s for s, _ in report._judge_cell([verdict], grads).values()} == {"not graded"}


# ============================================================================================ slow
def _exits_submission(folder):
    """example-correct, except that dz_db's exercise cell ends the kernel after defining dz_db."""
    source = ROOT / "grader" / "examples" / "example-correct" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    nb = nbformat.read(source, as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "dz_db")
    cell.source += "\n\nimport os\nos._exit(3)  # the kernel ends here\n"
    target = folder / EXITS / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    target.parent.mkdir(parents=True)
    nbformat.write(nb, target)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    from gradlab.instructor import parallel

    course = Course(tmp_path_factory.mktemp("class-report"))
    with open(course.root / "nbgrader_config.py", "a") as config:
        config.write(f"c.Execute.timeout = {TIMEOUT_S}\n")
    course.release(ASSIGNMENT)
    students = EXAMPLES + tuple(e for e in OPTIONAL if (ROOT / "grader" / "examples" / e).is_dir())
    for student in students:
        shutil.copytree(ROOT / "grader" / "examples" / student, course.root / "submitted" / student)
    _exits_submission(course.root / "submitted")
    course.nbgrader("db", "student", "add", ABSENT)
    start = time.perf_counter()
    summary = parallel.grade_class(ASSIGNMENT, root=course.root, workers=2, progress=False)
    print(f"\nparallel autograde of {len(students) + 1} submissions: {time.perf_counter() - start:.1f} s")
    assert not summary["failed"], summary["failed"]
    return course, report.load(course.root, ASSIGNMENT), students + (EXITS,)


def _mistakes_of(data, student):
    frame = report.mistakes(data)
    return {(r.cell, r.gradient): r for r in frame[frame.student == student].itertuples()}


# student -> {(cell, gradient): the mistakes that name it}
MISTAKES = {
    "example-wrong-sign": {("test_dJ_dsigma", "dJ/dσ"): {"sign"}},
    # The visible tests have N = 2, where a missing 1/N is a factor 2: the report says which it may be.
    "example-missing-1-over-n": {("test_dJ_dsigma", "dJ/dσ"): {"factor: missing 1/N", "factor: 2 = N"}},
    "example-edited-test": {("test_forward", "J"): {"factor: missing 1/N", "factor: 2 = N"}},  # the sum, not the mean
    "example-endless-loop": {("test_dz_dw", "dz/dw"): {"timeout"}},
    "example-autograd": {("test_backward", "dJ/dw"): {"autograd"}, ("test_backward", "dJ/db"): {"autograd"}},
    "example-changes-input": {("test_dJ_dsigma", "dJ/dσ"): {"changed input"}},
}


@pytest.mark.slow
def test_the_report_names_each_examples_mistake_under_its_gradient(graded):
    course, data, students = graded
    page = report.html_page(data)
    sections = dict(re.findall(r"<section class='cell' id='cell-([^']+)'>(.*?)</section>", page, re.S))
    for student, expected in MISTAKES.items():
        if student not in students:
            continue
        found = _mistakes_of(data, student)
        for (cell, gradient), mistakes in expected.items():
            assert (cell, gradient) in found, f"{student}: nothing wrong under {gradient} of {cell}: {found.keys()}"
            row = found[(cell, gradient)]
            assert row.mistake in mistakes, (student, cell, gradient, row.mistake, row.message)
            assert student in sections[cell] and html.escape(row.what) in sections[cell], (student, cell)
    for student in ("example-missing-1-over-n", "example-edited-test"):
        assert all("1/N" in row.advice for row in _mistakes_of(data, student).values())

    # backward without σ': a slip the check recognises, or the formula kind of a local derivative left out.
    slip = _mistakes_of(data, "example-rebinds-names")[("test_backward", "dJ/dw")]
    assert slip.kind == "dropped" or slip.kind == "recognised slip" and "sigmoid" in slip.mistake, slip
    blank = _mistakes_of(data, "example-blank")
    assert {cell for cell, _ in blank} == {grade_id for _, grade_id, _ in data.cells}
    assert {row.mistake for row in blank.values()} == {"not written"}
    assert _mistakes_of(data, "example-correct") == {}
    counts = report.mistake_counts(data)
    sign = counts[(counts.cell == "test_dJ_dsigma") & (counts.mistake == "sign")].iloc[0]
    graded_on_it = report.gradients(data).set_index(["cell", "gradient"]).loc[("test_dJ_dsigma", "dJ/dσ"), "graded"]
    assert sign["students"] == ["example-wrong-sign"] and sign["share"] == pytest.approx(1 / graded_on_it)
    assert sign["advice"].startswith(f"{100 / graded_on_it:.0f} % had the sign wrong: ")


@pytest.mark.slow
def test_the_cells_with_mistakes_are_the_cells_that_lost_points(graded):
    _, data, students = graded
    results = report.results(data)
    points = report.scores(data)
    full = {grade_id: p for _, grade_id, p in data.cells}
    for student in students:
        if points.loc[student, "status"] != "graded":
            continue
        rows = results[results.student == student]
        flawed = set(rows[rows.status.isin(["wrong", "not graded"])].cell)
        lost = {cell for cell, p in full.items() if points.loc[student, cell] != p}
        assert flawed == lost, student
        assert set(rows[rows.status == "right"].cell) >= set(full) - lost, student


@pytest.mark.slow
def test_who_handed_in_nothing_and_who_could_not_be_graded(graded):
    _, data, _ = graded
    scores = report.scores(data)
    assert scores.loc[ABSENT, "status"] == "no submission" and pd.isna(scores.loc[ABSENT, "total"])
    assert scores.loc["example-invalid-json", "status"] == "unreadable"
    assert scores.loc["example-correct", "total"] == scores.loc["example-correct", "max"]
    missing = report.ungraded(data).set_index("student")
    assert missing.loc[ABSENT, "status"] == "no submission"
    assert missing.loc["example-invalid-json", "status"] == "unreadable"
    assert "not valid JSON" in missing.loc["example-invalid-json", "detail"]
    stopped = missing.loc[EXITS]
    assert stopped["status"] == "kernel stopped" and "the kernel stopped" in stopped["detail"]
    assert stopped["cells"].split(", ") == ["test_dz_db", "test_backward", "test_train_by_hand"]
    exits = report.results(data)
    exits = exits[exits.student == EXITS].set_index("cell")
    assert set(exits.loc[["test_forward", "test_dz_dw"], "status"]) == {"right"}
    assert set(exits.loc[["test_dz_db", "test_backward"], "status"]) == {"not graded"}
    assert EXITS not in set(report.mistakes(data).student), "a stopped kernel is not a diagnosed mistake"


@pytest.mark.slow
def test_a_class_that_has_handed_in_nothing_yet_gets_a_page_too(graded):
    _, data, _ = graded
    empty = dataclasses.replace(data, points={}, records={}, submitted=set(), unreadable={}, _results=None)
    page = report.html_page(empty)
    assert "No graded submissions yet" in page and "No diagnosed mistakes." in page
    missing = report.ungraded(empty)
    assert list(missing.student) == data.roster and set(missing.status) == {"no submission"}


@pytest.mark.slow
def test_the_grade_table_and_the_report_list_each_flagged_student_and_cell(graded, capsys):
    course, data, students = graded
    grade_table.main([ASSIGNMENT, "--root", str(course.root)])
    below = capsys.readouterr().out.split("out of", 1)[1]
    flagged = [line for line in below.splitlines() if line.startswith("  example-")]
    assert any(EXITS in line and "(dz_db)" in line and "ends the process (os._exit)" in line for line in flagged)
    assert any("example-rebinds-names" in line and "(backward)" in line and "rebinds `lesson03`" in line
               for line in flagged)
    if "example-autograd" in students:
        assert any("example-autograd" in line and "(backward)" in line and "torch.autograd" in line for line in flagged)
    # The correct example's exercise cells raise only what the lesson's own solution raises: not listed. (Its other
    # cells are flagged only where they differ from the lesson's source, as examples made from an older version do.)
    assert not any("example-correct" in line and ", exercise:" in line for line in flagged)
    flags = report.flags(data)
    # Flags the lesson's own solution raises as well are only counted, in one line (none in lesson 3 today).
    assert ("more that the lesson's own solution raises too" in below) == bool(flags.in_solution.any())
    assert not flags[(flags.student == "example-correct") & (flags.where == "exercise") & ~flags.in_solution].size
    page = report.html_page(data)
    scan = page.split("<h2 id='flags'>", 1)[1].split("<details>", 1)[0]
    assert EXITS in scan and "ends the process (os._exit)" in scan


def _protected_lines():
    """The source's hidden-test and solution lines that could only come from there (no comments, no short ones)."""
    nb = nbformat.read(NOTEBOOKS / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    lines, inside = set(), False
    for cell in nb.cells:
        for line in cell.source.split("\n"):
            if re.search(r"### (BEGIN|END) (HIDDEN TESTS|SOLUTION)", line):
                inside = "BEGIN" in line
                continue
            text = line.strip()
            if inside and len(text) >= 12 and not text.startswith("#"):
                lines.add(text)
    return lines


@pytest.mark.slow
def test_make_class_report_writes_one_private_page_with_no_hidden_test_and_no_solution(graded):
    course, data, _ = graded
    # This interpreter's environment, taken as installed (-o: make must not reinstall it here).
    run = subprocess.run(["make", "-o", f"{sys.prefix}/.installed", "class-report", f"VENV={sys.prefix}",
                          f"LESSON={ASSIGNMENT}", f"COURSE={course.root}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    page_path = course.root / "reports" / f"{ASSIGNMENT}.html"
    assert str(page_path) in run.stdout
    page = page_path.read_text(encoding="utf-8")
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    protected = _protected_lines()
    assert len(protected) > 10 and "lesson03.check_backward(backward)" in protected
    leaked = [line for line in protected if line in page or line in text]
    assert not leaked, leaked
    assert "lesson03.check_" not in text
    for reach in ("http://", "https://", "<script", "<link", "<iframe", "url(", "@import", "//cdn"):
        assert reach not in page.lower(), reach
    assert len(re.findall(r"<img class='chart'[^>]* src='data:image/png;base64,", page)) == 1 + len(data.cells)


@pytest.mark.slow
def test_the_page_renders_in_chromium_with_its_charts_and_no_network(graded):
    from browser_helpers import ARTIFACTS, CHROMIUM_ARGS, chromium_or_skip
    from playwright.sync_api import sync_playwright

    executable = chromium_or_skip()
    course, data, _ = graded
    folder = ARTIFACTS.parent / "class-report"
    folder.mkdir(parents=True, exist_ok=True)
    path = report.write(data, out=folder / f"{ASSIGNMENT}.html")
    url = path.resolve().as_uri()
    requests, blocked, console = [], [], []

    def gate(route):
        if route.request.url == url:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.route("**/*", gate)
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda err: console.append(f"pageerror: {err}"))
            page.goto(url, wait_until="load")
            charts = page.eval_on_selector_all(
                "img.chart", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.clientWidth])")
            headings = page.eval_on_selector_all("h2", "hs => hs.map(h => h.textContent)")
            opened = page.locator("section#cell-test_dJ_dsigma details summary")
            opened.click()
            visible_students = page.locator("section#cell-test_dJ_dsigma details table").inner_text()
            page.screenshot(path=str(folder / "page.png"), full_page=True)
        finally:
            browser.close()
    (folder / "console.log").write_text("\n".join(console) + "\n")
    assert [m for m in console if m.startswith(("error", "pageerror"))] == []
    assert blocked == [] and all(u == url or u.startswith("data:") for u in requests), requests
    assert len(charts) == 1 + len(data.cells)
    assert all(done and width > 200 and height > 50 and shown > 200 for done, width, height, shown in charts), charts
    assert "What to revisit" in headings and any("could not be graded" in h for h in headings)
    assert "example-wrong-sign" in visible_students
