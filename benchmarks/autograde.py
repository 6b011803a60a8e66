"""Seconds per notebook when nbgrader autogrades a lesson, against executing the same notebook plainly.

A throw-away course with the real grader/nbgrader_config.py (tests/course.py's Course) releases the
lesson and receives its source notebook (solutions included) from ``students`` students. Then:

* nbgrader's start: an ``nbgrader autograde`` command with no submission to grade. It pays what every
  command pays once, however many notebooks it grades: Python, nbgrader's imports, the course's
  config (which imports gradlab), the gradebook.
* one ``nbgrader autograde`` command grades all the submissions, as an instructor runs it.
  Per notebook = (that command − nbgrader's start) / students.
* plain: tests/course.py's execute() of the same notebook (a fresh kernel each time), median of
  ``students`` runs. Overhead = per notebook − plain.
* the sandbox's cost: the same command again with GRADLAB_UNSANDBOXED=1 (the documented opt-out, so the
  kernel starts without bubblewrap); sandbox cost = per notebook − unsandboxed per notebook.
"""
import os
import statistics
import tempfile
import time

from .course_tools import Course, course
from .notebooks import time_execution

NOTHING_TO_GRADE = "No notebooks were matched"


def nbgrader_start(grader, assignment):
    """Seconds of an autograde command that finds nothing to grade (nbgrader says so and exits with 1)."""
    start = time.perf_counter()
    try:
        grader.nbgrader("autograde", assignment, "--student", "nobody-submitted")
    except AssertionError as refused:
        if NOTHING_TO_GRADE not in str(refused):
            raise
    else:
        raise RuntimeError("nbgrader autograde of a student without a submission should fail, and did not")
    return time.perf_counter() - start


def run(assignment="03-backprop-by-hand", students=3):
    notebook = dict(course.lessons())[assignment]
    source = course.NOTEBOOKS / assignment / notebook
    with tempfile.TemporaryDirectory(prefix="gradlab-bench-") as root:
        grader = Course(root)
        grader.release(assignment)
        for i in range(students):
            grader.submit(f"bench-{i + 1}", assignment, source)
        start_s = nbgrader_start(grader, assignment)
        start = time.perf_counter()
        grader.autograde(assignment)
        command_s = time.perf_counter() - start
        scores = grader.scores(assignment)
        os.environ["GRADLAB_UNSANDBOXED"] = "1"
        try:
            start = time.perf_counter()
            grader.autograde(assignment)
            unsandboxed_s = time.perf_counter() - start
        finally:
            del os.environ["GRADLAB_UNSANDBOXED"]
    full_marks = [score == max_score for score, max_score in scores.values()]
    if len(full_marks) != students or not all(full_marks):
        raise RuntimeError(f"autograding the solutions of {assignment} should give full marks, got {scores}")
    plain = statistics.median(time_execution(assignment, notebook) for _ in range(students))
    per_notebook = (command_s - start_s) / students
    unsandboxed = (unsandboxed_s - start_s) / students
    print(f"  {assignment}: nbgrader start {start_s:.1f} s, then {per_notebook:.1f} s per notebook "
          f"({unsandboxed:.1f} s without the sandbox); plain {plain:.1f} s", flush=True)
    return {
        "lessons": [assignment],
        "students": students,
        "command_s": command_s,
        "nbgrader_start_s": start_s,
        "per_notebook_s": per_notebook,
        "plain_per_notebook_s": plain,
        "overhead_s": per_notebook - plain,
        "unsandboxed_per_notebook_s": unsandboxed,
        "sandbox_cost_s": per_notebook - unsandboxed,
    }
