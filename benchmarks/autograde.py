"""Seconds per notebook when nbgrader autogrades a lesson, against executing the same notebook plainly.

A throw-away course with the real grader/nbgrader_config.py (tests/course.py's Course) releases the
lesson, receives its source notebook (solutions included) from ``students`` students, and one
``nbgrader autograde`` command grades them all, as an instructor runs it. Per notebook = the command's
wall time / students, so nbgrader's own start (Python, its imports, the gradebook) is shared out as
it is in a real class; with one student it is paid in full. The plain time is tests/course.py's
execute() of the same notebook, in a fresh kernel each time, median over ``students`` runs.
"""
import statistics
import tempfile
import time

from .course_tools import Course, course
from .notebooks import time_execution


def run(assignment="03-backprop-by-hand", students=3):
    notebook = dict(course.lessons())[assignment]
    with tempfile.TemporaryDirectory(prefix="gradlab-bench-") as root:
        grader = Course(root)
        grader.release(assignment)
        for i in range(students):
            grader.submit(f"bench-{i + 1}", assignment, course.NOTEBOOKS / assignment / notebook)
        start = time.perf_counter()
        grader.autograde(assignment)
        command_s = time.perf_counter() - start
        scores = grader.scores(assignment)
    full_marks = [score == max_score for score, max_score in scores.values()]
    if len(full_marks) != students or not all(full_marks):
        raise RuntimeError(f"autograding the solutions of {assignment} should give full marks, got {scores}")
    plain = statistics.median(time_execution(assignment, notebook) for _ in range(students))
    per_notebook = command_s / students
    print(f"  {assignment}: autograde {per_notebook:.1f} s per notebook, plain {plain:.1f} s", flush=True)
    return {
        "lessons": [assignment],
        "students": students,
        "command_s": command_s,
        "per_notebook_s": per_notebook,
        "plain_per_notebook_s": plain,
        "overhead_s": per_notebook - plain,
    }
