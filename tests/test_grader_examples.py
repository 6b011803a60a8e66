"""The bundled example submissions of lesson 3 (grader/examples/), graded as `make grade-demo` grades them.

They are regenerated from the lesson's source and compared with the committed files, then autograded in
one run in a temporary course with the real config (the timeout shortened to keep CI quick), and each must
lose exactly the cells its example says.
"""
import csv
import fnmatch
import html
import importlib.util
import re
import shutil
import time

import nbformat
import pytest

from course import LESSON3_TIMEOUT_S, ROOT, Course
from gradlab.diagnose import SIGN

pytestmark = pytest.mark.slow

TIMEOUT_S = LESSON3_TIMEOUT_S


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_examples", ROOT / "grader" / "examples" / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


examples = _load_generator()
ASSIGNMENT, NOTEBOOK = examples.ASSIGNMENT, examples.NOTEBOOK.removesuffix(".ipynb")


def test_the_committed_examples_are_what_the_generator_makes_from_the_lesson(tmp_path):
    examples.write_examples(tmp_path)
    committed = ROOT / "grader" / "examples"
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.ipynb"))
    assert made == sorted(p.relative_to(committed) for p in committed.rglob("*.ipynb"))
    stale = [str(p) for p in made if (tmp_path / p).read_bytes() != (committed / p).read_bytes()]
    assert not stale, f"run `.venv/bin/python grader/examples/make_examples.py` and commit: {stale} changed"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = Course(tmp_path_factory.mktemp("examples"))
    with open(course.root / "nbgrader_config.py", "a") as config:
        config.write(f"c.Execute.timeout = {TIMEOUT_S}\n")
    course.release(ASSIGNMENT)
    shutil.copytree(ROOT / "grader" / "examples", course.root / "submitted", ignore=shutil.ignore_patterns("*.py"))
    start = time.perf_counter()
    run = course.autograde(ASSIGNMENT)
    seconds = time.perf_counter() - start
    print(f"\nautograde of {len(examples.EXAMPLES)} example submissions: {seconds:.1f} s "
          f"({seconds / len(examples.EXAMPLES):.1f} s per notebook, one {TIMEOUT_S} s timeout included)")
    course.nbgrader("generate_feedback", ASSIGNMENT)
    course.nbgrader("export", "--to", str(course.root / "grades.csv"))
    return course, run.stdout + run.stderr


def feedback(course, student):
    page = (course.root / "feedback" / student / ASSIGNMENT / f"{NOTEBOOK}.html").read_text()
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def autograded_cell(course, student, grade_id):
    nb = nbformat.read(course.root / "autograded" / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


@pytest.mark.parametrize("student", examples.EXAMPLES)
def test_each_example_loses_exactly_its_broken_cells(graded, student):
    course, _ = graded
    cells = course.cell_scores(student, ASSIGNMENT, NOTEBOOK)
    assert set(cells) == set(examples.TESTS)
    lost = {name for name, (score, max_score) in cells.items() if score != max_score}
    assert lost == set(examples.EXAMPLES[student].loses)
    assert all(score in (0, max_score) for score, max_score in cells.values())


def test_the_feedback_names_each_mistake(graded):
    course, _ = graded
    wrong_sign = feedback(course, "example-wrong-sign")
    assert SIGN in wrong_sign
    assert "passed with the grader's own dJ_dsigma" in wrong_sign, "backward's points are kept, and it says why"
    assert "divide by N" in feedback(course, "example-missing-1-over-n")
    assert "`backward` used autograd" in feedback(course, "example-autograd")
    assert "changed its input `s` in place" in feedback(course, "example-changes-input")


def test_the_endless_loop_is_cut_by_the_timeout(graded):
    course, log = graded
    outputs = autograded_cell(course, "example-endless-loop", "test_dz_dw").outputs
    verdict = [o for o in outputs if o.output_type == "error"]
    assert len(verdict) == 1 and f"stopped this cell after {TIMEOUT_S} s" in verdict[0].evalue
    assert f"Timeout waiting for execute reply ({TIMEOUT_S}s)" in log


def test_edited_and_deleted_test_cells_are_graded_as_in_the_source(graded, repo_root):
    course, _ = graded
    source = nbformat.read(repo_root / "notebooks" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    for student, grade_id in (("example-edited-test", "test_forward"), ("example-deleted-test", "test_backward")):
        original = next(c.source for c in source.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
        assert autograded_cell(course, student, grade_id).source.endswith(original), student


def test_the_invalid_json_is_reported_for_that_student(graded):
    course, log = graded
    assert re.search(r"submitted/example-invalid-json/\S+ is not a readable notebook \(not valid JSON", log)
    assert len(re.findall("is not a readable notebook", log)) == 1
    assert "this submission could not be read" in feedback(course, "example-invalid-json")


def test_a_copied_cell_is_repaired_without_stopping_the_run(graded):
    course, log = graded
    assert re.search(r"example-copied-cell/\S+: cell \d+ is a second copy of the cell `forward`", log)
    assert course.scores(ASSIGNMENT).keys() == examples.EXAMPLES.keys(), "every student after it is graded too"


def test_feedback_hides_the_hidden_tests(graded):
    course, _ = graded
    text = feedback(course, "example-wrong-sign")
    assert "lesson03.check_" not in text and "hidden tests: they ran at grading" in text


def test_the_csv_export_has_every_student(graded):
    course, _ = graded
    with open(course.root / "grades.csv") as f:
        rows = {row["student_id"]: row for row in csv.DictReader(f) if row["assignment"] == ASSIGNMENT}
    assert rows.keys() == examples.EXAMPLES.keys()
    for student, row in rows.items():
        cells = course.cell_scores(student, ASSIGNMENT, NOTEBOOK)
        assert float(row["score"]) == sum(score for score, _ in cells.values())


REGRADED = "example-[cir][oen][pvb]*"


def _gradebook(course):
    return {student: course.cell_scores(student, ASSIGNMENT, NOTEBOOK) for student in examples.EXAMPLES}


def test_autograding_again_gives_the_same_gradebook(graded):
    course, _ = graded
    first = _gradebook(course)
    course.nbgrader("autograde", ASSIGNMENT)  # as an instructor re-runs it: graded submissions are skipped
    assert _gradebook(course) == first
    # From scratch for the three that the grader repairs or diagnoses from the file (a copied cell, an unreadable
    # file, a rebound name): same scores. nbgrader takes one glob for the students.
    again = course.autograde(ASSIGNMENT, f"--student={REGRADED}")
    regraded = set(re.findall(r"Creating/updating student with ID '([^']+)'", again.stdout + again.stderr))
    assert regraded == {s for s in examples.EXAMPLES if fnmatch.fnmatch(s, REGRADED)}
    assert regraded == {"example-copied-cell", "example-invalid-json", "example-rebinds-names"}
    assert _gradebook(course) == first
