"""The course's nbgrader configuration against broken submissions, on a tiny synthetic lesson.

One temporary course, the real grader/nbgrader_config.py (short timeout, 1 GiB memory), and a class of
students whose notebooks break in every way the grader must survive. One `nbgrader autograde` run grades
them all; each must cost its student exactly the cells it breaks.
"""
import csv
import html
import json
import re
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from course import Course

pytestmark = pytest.mark.slow

TIMEOUT_S = 8
MEMORY_MB = 1024

SOLUTIONS = {"square": "return x * x", "cube": "return x * x * x"}


def _solution_cell(name):
    return new_code_cell(
        f"def {name}(x):\n    ### BEGIN SOLUTION\n    {SOLUTIONS[name]}\n    ### END SOLUTION",
        metadata={"nbgrader": {"grade": False, "grade_id": name, "locked": False, "schema_version": 3,
                               "solution": True, "task": False}},
    )


def _test_cell(name, arg, expected, points):
    source = (f"assert {name}(2) == {2 ** (2 if name == 'square' else 3)}, 'visible check'\n"
              "### BEGIN HIDDEN TESTS\n"
              f"assert {name}({arg}) == {expected}, f'{name}({arg}) should be {expected}, got {{{name}({arg})}}'\n"
              "### END HIDDEN TESTS")
    return new_code_cell(source, metadata={"nbgrader": {
        "grade": True, "grade_id": f"test_{name}", "locked": True, "points": points, "schema_version": 3,
        "solution": False, "task": False}})


def source_notebook():
    nb = new_notebook(cells=[
        new_markdown_cell("# A tiny lesson"),
        new_code_cell("import os"),
        _solution_cell("square"),
        _test_cell("square", 3, 9, 1),
        _solution_cell("cube"),
        _test_cell("cube", 3, 27, 2),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def make_course(root, *config_lines):
    """A course whose config is the real one, with the tiny lesson as its only source."""
    course = Course(root)
    source = course.root / "source" / "tiny"
    source.mkdir(parents=True)
    nbformat.write(source_notebook(), source / "tiny.ipynb")
    with open(course.root / "nbgrader_config.py", "a") as config:
        config.write(f"c.CourseDirectory.source_directory = {str(course.root / 'source')!r}\n")
        config.write("".join(line + "\n" for line in config_lines))
    course.release("tiny")
    return course


# --------------------------------------------------------------------------- the students
def solved(released):
    nb = nbformat.read(released, as_version=4)
    for cell in nb.cells:
        name = cell.metadata.get("nbgrader", {}).get("grade_id")
        if name in SOLUTIONS:
            cell.source = f"def {name}(x):\n    {SOLUTIONS[name]}"
    return nb


def cell_of(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def copied_square(nb, answer_in_copy):
    """The square cell pasted below itself, metadata and all; the answer in one copy, the stub in the other."""
    answered = cell_of(nb, "square")
    stub = nbformat.from_dict(json.loads(json.dumps(answered)))
    stub.source = "def square(x):\n    raise NotImplementedError()"
    first, second = (stub, answered) if answer_in_copy else (answered, stub)
    at = nb.cells.index(answered)
    nb.cells[at:at + 1] = [first, second]
    second.id = "pasted-copy"
    return nb


def damaged_metadata(nb):
    cell_of(nb, "test_square").metadata.nbgrader = {}
    return nb


def flipped_flags(nb):
    """The exercise marked as a graded cell worth 5 points, the test cell marked as an answer."""
    cell_of(nb, "square").metadata.nbgrader.update(grade=True, points=5)
    cell_of(nb, "test_square").metadata.nbgrader.update(solution=True)
    return nb


def deleted_exercise_and_test(nb):
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") not in ("cube", "test_cube")]
    return nb


def answer(name, code):
    def edit(nb):
        cell_of(nb, name).source = code
        return nb
    return edit


def edited_test(nb):
    cell_of(nb, "square").source = "def square(x):\n    return x + 2  # right for 2 only"
    cell_of(nb, "test_square").source = "pass"
    return nb


# Text that the submitted file holds instead of a notebook, for the unreadable ones.
NOT_JSON = '{"cells": [ {"cell_type": "code", '
NOT_UTF8 = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"
NOT_A_NOTEBOOK = "[1, 2, 3]"

HOG = f"""\
def keep_everything():
    chunks = []
    for _ in range({3 * MEMORY_MB // 64}):  # three times the memory limit, 64 MiB at a time, each written to
        chunks.append(bytearray(64 * 2**20))
keep_everything()
def square(x):
    return x * x"""

REPORTS = """\
import os, resource
open("where.txt", "w").write(os.getcwd())
print("RLIMIT_DATA", resource.getrlimit(resource.RLIMIT_DATA)[0])"""

# student: (how the notebook is made, {graded cell: expected score})
STUDENTS = {
    "a-correct": (lambda nb: nb, {"test_square": 1, "test_cube": 2}),
    "b-copied-cell-answer-in-copy": (lambda nb: copied_square(nb, True), {"test_square": 1, "test_cube": 2}),
    "c-copied-cell-stub-in-copy": (lambda nb: copied_square(nb, False), {"test_square": 0, "test_cube": 2}),
    "d-damaged-metadata": (damaged_metadata, {"test_square": 1, "test_cube": 2}),
    "e-deleted-exercise-and-test": (deleted_exercise_and_test, {"test_square": 1, "test_cube": 0}),
    "ea-flipped-flags": (flipped_flags, {"test_square": 1, "test_cube": 2}),
    "f-not-json": (NOT_JSON, {"test_square": 0, "test_cube": 0}),
    "g-not-utf8": (NOT_UTF8, {"test_square": 0, "test_cube": 0}),
    "h-json-not-a-notebook": (NOT_A_NOTEBOOK, {"test_square": 0, "test_cube": 0}),
    "i-memory-hog": (answer("square", HOG), {"test_square": 0, "test_cube": 2}),
    "j-reports-limits": (answer("square", REPORTS + "\ndef square(x):\n    return x * x"),
                         {"test_square": 1, "test_cube": 2}),
    "k-endless-loop": (answer("square", "def square(x):\n    while True:\n        pass"),
                       {"test_square": 0, "test_cube": 2}),
    "l-wrong-hidden": (answer("square", "def square(x):\n    return 2 * x  # right for 2 only"),
                       {"test_square": 0, "test_cube": 2}),
    "m-edited-test": (edited_test, {"test_square": 0, "test_cube": 2}),
    "n-links-outside": (lambda nb: nb, {"test_square": 1, "test_cube": 2}),  # + a symlink to a file of the grader
    # the notebook itself a symlink: to a solved notebook of the grader's (a solution), to another student's
    "o-notebook-links-out": (None, {"test_square": 0, "test_cube": 0}),
    "p-notebook-links-to-a-classmate": (None, {"test_square": 0, "test_cube": 0}),
    # a dangling notebook link into a folder of the grader's: that folder's own links must stay
    "q-link-points-the-hook-elsewhere": (lambda nb: nb, {"test_square": 1, "test_cube": 2}),
}
OUTSIDE_SECRET = "the grader's own file, never to reach a student"


def submit_all(course, students):
    released = course.release_dir("tiny") / "tiny.ipynb"
    for student, (make, _) in students.items():
        folder = course.root / "submitted" / student / "tiny"
        folder.mkdir(parents=True)
        target = folder / "tiny.ipynb"
        if make is None:
            continue  # a link, made below once every other student's notebook is in place
        if isinstance(make, bytes):
            target.write_bytes(make)
        elif isinstance(make, str):
            target.write_text(make)
        else:
            nbformat.write(make(solved(released)), target)
        if student == "n-links-outside":
            secret = course.root / "outside-secret.txt"
            secret.write_text(OUTSIDE_SECRET)
            (folder / "notes.txt").symlink_to(secret)
            (folder / "own.txt").write_text("the student's own file")
        if student == "q-link-points-the-hook-elsewhere":
            elsewhere = course.root / "graders-folder"
            elsewhere.mkdir()
            (elsewhere / "python").symlink_to(sys.executable)
            (folder / "zzz.ipynb").symlink_to(elsewhere / "anything.ipynb")
    solved_outside = course.root / "graders-solved-tiny.ipynb"
    nbformat.write(solved(released), solved_outside)
    if "o-notebook-links-out" in students:
        (course.root / "submitted" / "o-notebook-links-out" / "tiny" / "tiny.ipynb").symlink_to(solved_outside)
    if "p-notebook-links-to-a-classmate" in students:
        (course.root / "submitted" / "p-notebook-links-to-a-classmate" / "tiny" / "tiny.ipynb").symlink_to(
            Path("..", "..", "a-correct", "tiny", "tiny.ipynb"))


def gradebook_dump(course):
    """Everything autograde decides, per student and cell: (auto score, needs manual grade)."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course.root / 'gradebook.db'}") as gb:
        return {
            (sub.student.id, grade.name): (grade.auto_score, grade.needs_manual_grade)
            for sub in gb.assignment_submissions("tiny") for nb in sub.notebooks for grade in nb.grades
        }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("course"), f"c.Execute.timeout = {TIMEOUT_S}",
                         f"c.Sandbox.memory_limit_mb = {MEMORY_MB}")
    submit_all(course, STUDENTS)
    run = course.autograde("tiny")  # raises, with nbgrader's output, if the run fails
    course.nbgrader("generate_feedback", "tiny")
    course.nbgrader("export", "--to", str(course.root / "grades.csv"))
    return course, run.stdout + run.stderr


def autograded(course, student):
    return nbformat.read(course.root / "autograded" / student / "tiny" / "tiny.ipynb", as_version=4)


def feedback_text(course, student):
    page = (course.root / "feedback" / student / "tiny" / "tiny.html").read_text()
    return html.unescape(re.sub(r"<[^>]+>", "", page))


# --------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("student", STUDENTS)
def test_each_submission_costs_exactly_the_cells_it_breaks(graded, student):
    course, _ = graded
    expected = {name: (float(points), False) for name, points in STUDENTS[student][1].items()}
    got = {name: value for (who, name), value in gradebook_dump(course).items() if who == student}
    assert got == expected


def test_a_copied_cell_runs_as_an_ordinary_cell_with_a_note(graded):
    course, log = graded
    nb = autograded(course, "b-copied-cell-answer-in-copy")
    squares = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def square")]
    assert len(squares) == 2, "both copies stay in the notebook and run"
    assert "nbgrader" not in squares[0].metadata and squares[1].metadata.nbgrader["grade_id"] == "square"
    assert "second copy of the cell square" in feedback_text(course, "b-copied-cell-answer-in-copy")
    assert re.search(r"b-copied-cell-answer-in-copy/tiny/tiny: cell \d+ is a second copy", log)


def test_plain_nbgrader_stops_the_whole_run_at_a_copied_cell(tmp_path):
    """Why RepairCellMetadata exists (nbgrader #1083). If this starts failing, nbgrader has fixed it.

    nbgrader's own pipeline and defaults; with add_missing_cells on, the copy fails differently (a KeyError
    in OverwriteCells), for that student only.
    """
    course = make_course(tmp_path, "c.Autograde.sanitize_preprocessors = ["
                         "'nbgrader.preprocessors.ClearOutput', 'nbgrader.preprocessors.DeduplicateIds', "
                         "'nbgrader.preprocessors.OverwriteKernelspec', 'nbgrader.preprocessors.OverwriteCells', "
                         "'nbgrader.preprocessors.CheckCellMetadata']", "c.OverwriteCells.add_missing_cells = False")
    submit_all(course, {name: STUDENTS[name] for name in ("b-copied-cell-answer-in-copy", "l-wrong-hidden")})
    with pytest.raises(AssertionError, match="old version"):
        course.autograde("tiny")
    assert not (course.root / "autograded" / "l-wrong-hidden").exists(), "the student after the copy is not graded"


def test_restored_cells_are_the_source_cells_with_hidden_tests(graded):
    course, log = graded
    assert re.findall(r"(\S+): cell (\S+) differs from the released version", log) == [("m-edited-test/tiny/tiny",
                                                                                        "test_square")]
    source = {c.metadata.nbgrader["grade_id"]: c.source for c in source_notebook().cells if "nbgrader" in c.metadata}
    for student, cell in (("m-edited-test", "test_square"), ("d-damaged-metadata", "test_square"),
                          ("e-deleted-exercise-and-test", "test_cube")):
        restored = cell_of(autograded(course, student), cell)
        assert restored.source.endswith(source[cell]) and "BEGIN HIDDEN TESTS" in restored.source, student
    nb = autograded(course, "e-deleted-exercise-and-test")
    names = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]
    assert names.index("test_cube") == names.index("test_square") + 1, "restored after its nearest neighbour"
    assert len({c.id for c in nb.cells}) == len(nb.cells), "every cell has its own id"


@pytest.mark.parametrize("student, reason", [
    ("f-not-json", r"not valid JSON: Expecting .+ \(line 1, column \d+\)"),
    ("g-not-utf8", r"not UTF-8 text"),
    ("h-json-not-a-notebook", r"not a Jupyter notebook"),
])
def test_an_unreadable_file_is_reported_for_that_student_only(graded, student, reason):
    course, log = graded
    assert re.search(rf"submitted/{student}/tiny/tiny.ipynb is not a readable notebook \({reason}", log)
    feedback = feedback_text(course, student)
    assert "this submission could not be read" in feedback and re.search(reason, feedback)
    original = course.root / "submitted" / student / "tiny" / "tiny.ipynb"
    assert original.read_bytes() == (STUDENTS[student][0] if isinstance(STUDENTS[student][0], bytes)
                                     else STUDENTS[student][0].encode()), "the submitted file is left as it was"
    assert len(re.findall("is not a readable notebook", log)) == 5, \
        "only the three unreadable files and the two notebooks that were links out are reported"


def test_memory_hog_is_stopped_and_the_run_goes_on(graded):
    course, _ = graded
    hog = cell_of(autograded(course, "i-memory-hog"), "square")
    assert [out.ename for out in hog.outputs if out.output_type == "error"] == ["MemoryError"]
    reports = cell_of(autograded(course, "j-reports-limits"), "square")
    printed = "".join(out.get("text", "") for out in reports.outputs)
    assert f"RLIMIT_DATA {MEMORY_MB * 2**20}" in printed


def test_the_kernel_works_in_a_private_copy_that_is_thrown_away(graded):
    course, _ = graded
    reports = cell_of(autograded(course, "j-reports-limits"), "square")
    assert "RLIMIT_DATA" in "".join(out.get("text", "") for out in reports.outputs)
    for step in ("autograded", "submitted", "feedback"):
        assert not list((course.root / step).rglob("where.txt")), f"a file the student's code wrote reached {step}/"


def test_an_endless_loop_is_cut_with_an_explanation(graded):
    course, log = graded
    test = cell_of(autograded(course, "k-endless-loop"), "test_square")
    timeouts = [out for out in test.outputs if out.output_type == "error" and out.ename == "CellTimeoutError"]
    assert timeouts and f"stopped this cell after {TIMEOUT_S} s" in timeouts[0].evalue
    assert re.findall(r"(\S+): cell \d+ was stopped after", log) == ["k-endless-loop/tiny/tiny"]


def test_feedback_shows_the_verdict_of_hidden_tests_but_not_their_code(graded):
    course, _ = graded
    text = feedback_text(course, "l-wrong-hidden")
    assert "AssertionError: square(3) should be 9, got 6" in text
    assert "assert square(3)" not in text and "assert cube(3)" not in text
    assert "hidden tests: they ran at grading" in text
    assert "assert square(3)" in cell_of(autograded(course, "l-wrong-hidden"), "test_square").source, \
        "the instructor's autograded copy keeps the hidden tests"


def test_a_submitted_link_to_a_file_of_the_grader_is_removed_before_it_is_copied(graded):
    course, log = graded
    for step in ("autograded", "feedback"):
        folder = course.root / step / "n-links-outside" / "tiny"
        for path in folder.rglob("*"):
            assert OUTSIDE_SECRET not in path.read_text(errors="replace"), f"{path} carries the grader's file"
    assert (course.root / "autograded" / "n-links-outside" / "tiny" / "own.txt").exists(), "the student's files stay"
    assert "removed the symlink notes.txt, which points outside the submission" in log


def test_a_notebook_that_is_a_link_out_of_the_submission_is_graded_as_unreadable_and_says_why(graded):
    course, log = graded
    for student, target in (("o-notebook-links-out", "graders-solved-tiny.ipynb"),
                            ("p-notebook-links-to-a-classmate", "a-correct")):
        text = feedback_text(course, student)
        assert "could not be read" in text and "symbolic link to a file outside your submission" in text, text
        assert f"{student}/tiny: removed the symlink tiny.ipynb" in log and target in log
        assert not (course.root / "submitted" / student / "tiny" / "tiny.ipynb").is_symlink()
    assert (course.root / "submitted" / "a-correct" / "tiny" / "tiny.ipynb").read_text().startswith("{"), \
        "the classmate's notebook is untouched"


def test_the_link_clean_up_never_leaves_the_submission_folder(graded):
    course, log = graded
    assert (course.root / "graders-folder" / "python").is_symlink(), "a link in a folder of the grader's was removed"
    assert "q-link-points-the-hook-elsewhere/tiny: removed the symlink zzz.ipynb" in log


def test_export_lists_every_student(graded):
    course, _ = graded
    with open(course.root / "grades.csv") as f:
        scores = {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)}
    assert scores == {student: float(sum(cells.values())) for student, (_, cells) in STUDENTS.items()}


def test_autograding_again_gives_the_same_gradebook(graded):
    course, _ = graded
    first = gradebook_dump(course)
    course.autograde("tiny")  # --force: every notebook is executed again
    assert gradebook_dump(course) == first
    course.nbgrader("autograde", "tiny")  # without --force: every submission is already graded
    assert gradebook_dump(course) == first


def test_zip_collect_files_named_by_an_lms(tmp_path):
    course = Course(tmp_path)
    (tmp_path / "release" / "tiny").mkdir(parents=True)
    nbformat.write(source_notebook(), tmp_path / "release" / "tiny" / "tiny.ipynb")
    archive = tmp_path / "downloaded" / "tiny" / "archive"
    archive.mkdir(parents=True)
    with zipfile.ZipFile(archive / "submissions.zip", "w") as zf:
        zf.writestr("alice_tiny.ipynb", "{}")  # <student>_<notebook>.ipynb
        zf.writestr("export/bobsmith_LATE_1234_5678_tiny-1.ipynb", "{}")  # Canvas, a second attempt
        zf.writestr("carol_notes.txt", "not a notebook")
    course.nbgrader("zip_collect", "tiny")
    collected = sorted(p.relative_to(tmp_path / "submitted").as_posix() for p in (tmp_path / "submitted").rglob("*.ipynb"))
    assert collected == ["alice/tiny/tiny.ipynb", "bobsmith/tiny/tiny.ipynb"]


# --------------------------------------------------------------------------- no sandbox, no grading
def test_without_bubblewrap_autograde_refuses_in_one_sentence_and_the_opt_out_grades(tmp_path):
    course = make_course(tmp_path / "course", 'c.Sandbox.bwrap = "/nonexistent/bwrap"', f"c.Execute.timeout = {TIMEOUT_S}")
    submit_all(course, {"a-correct": STUDENTS["a-correct"]})
    with pytest.raises(AssertionError) as refused:
        course.autograde("tiny")
    assert re.search(r"a-correct/tiny/tiny: not graded, no student code ran: bubblewrap \(bwrap\) is not installed, so "
                     r"student code cannot be isolated: install it \(Debian: apt-get install bubblewrap\) or, accepting "
                     r"the risk, set c.Sandbox.enabled = False\.", str(refused.value)), str(refused.value)[-3000:]
    assert not (course.root / "autograded" / "a-correct" / "tiny").exists()
    # nbgrader keeps the submission it had started (so it shows 0 until graded), with no cell scored
    assert {auto for auto, _ in gradebook_dump(course).values()} <= {None}

    with open(course.root / "nbgrader_config.py", "a") as config:
        config.write("c.Sandbox.enabled = False\n")
    run = course.autograde("tiny")
    assert "The sandbox is off" in run.stdout + run.stderr
    assert course.scores("tiny") == {"a-correct": (3.0, 3.0)}
