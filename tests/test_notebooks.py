"""Every lesson, three ways: the source runs clean, the student version only fails where a student
has work to do, and autograding gives the source full marks and
the untouched student version zero. New lessons are picked up from disk."""
import shutil

import pytest

from course import Course, errors, execute, is_graded_test, lessons

pytestmark = pytest.mark.slow
LESSONS = lessons()
IDS = [assignment for assignment, _ in LESSONS]


@pytest.fixture(scope="module")
def courses(tmp_path_factory):
    """One temporary nbgrader course per lesson, its student version generated once."""
    made = {}

    def get(assignment):
        if assignment not in made:
            course = Course(tmp_path_factory.mktemp(assignment))
            course.release(assignment)
            made[assignment] = course
        return made[assignment]

    return get


def test_there_are_lessons():
    assert LESSONS, "no notebooks/NN-name/name.ipynb found"


@pytest.mark.parametrize("assignment, notebook", LESSONS, ids=IDS)
def test_source_runs_with_every_test_passing(assignment, notebook, tmp_path, repo_root):
    work = tmp_path / assignment
    shutil.copytree(repo_root / "notebooks" / assignment, work)
    nb = execute(work / notebook)  # raises CellExecutionError, with the traceback, on the first error
    assert not errors(nb)


@pytest.mark.parametrize("assignment, notebook", LESSONS, ids=IDS)
def test_student_version_fails_only_where_work_is_left(assignment, notebook, courses):
    released = courses(assignment).release_dir(assignment) / notebook
    nb = execute(released, allow_errors=True)
    unexpected = [
        f"cell {i}: {out.ename}: {out.evalue}\n{cell.source[:300]}"
        for i, cell, out in errors(nb)
        if out.ename != "NotImplementedError" and not is_graded_test(cell)
    ]
    assert not unexpected, "the student version crashes outside the exercises:\n\n" + "\n\n".join(unexpected)

    failed = {i for i, _, _ in errors(nb)}
    tests = [(i, c) for i, c in enumerate(nb.cells) if is_graded_test(c)]
    assert tests, f"{notebook} has no graded test cells"
    passing_blank = [c.metadata["nbgrader"]["grade_id"] for i, c in tests if i not in failed]
    assert not passing_blank, f"these graded tests pass on the untouched student version: {passing_blank}"


@pytest.mark.parametrize("assignment, notebook", LESSONS, ids=IDS)
def test_autograding_gives_the_solutions_full_marks_and_the_blank_version_zero(
        assignment, notebook, courses, repo_root):
    course = courses(assignment)
    course.submit("solutions", assignment, repo_root / "notebooks" / assignment / notebook)
    course.submit("blank", assignment, course.release_dir(assignment) / notebook)
    course.autograde(assignment)
    cells = course.cell_scores("solutions", assignment, notebook.removesuffix(".ipynb"))
    lost = {name: got for name, got in cells.items() if got[0] != got[1]}
    assert not lost, f"autograde took points off the solutions: {lost}"
    scores = course.scores(assignment)
    score, max_score = scores["solutions"]
    assert max_score > 0 and score == max_score
    assert scores["blank"] == (0, max_score), f"the untouched student version scored {scores['blank']}"
