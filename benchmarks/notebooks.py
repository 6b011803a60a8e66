"""Seconds to execute each lesson's source notebook (solutions included) top to bottom, as a student's "Run all".

Each run starts a fresh kernel, as tests/course.py's execute() does, so a time includes the kernel's
start and the lesson's imports (torch alone is about a second).
"""
import os
import statistics
import time

from .course_tools import course, execute


def lesson_names(selected=None):
    """Assignment names (01-one-neuron, ...) of the lessons on disk, or of those whose name starts with one of ``selected``."""
    names = [assignment for assignment, _ in course.lessons()]
    if selected:
        chosen = [n for n in names if any(n.startswith(s) for s in selected)]
        if not chosen:
            raise ValueError(f"no lesson matches {selected}; the lessons are {names}")
        names = chosen
    return names


def time_execution(assignment, notebook):
    """Seconds for one plain execution (a cell that raises stops it with nbclient's CellExecutionError)."""
    start = time.perf_counter()
    execute(course.NOTEBOOKS / assignment / notebook)
    return time.perf_counter() - start


def run(selected=None, repeats=1):
    """{"notebooks_s": {assignment: median seconds}, "notebooks_total_s": sum}."""
    if os.environ.get("NBGRADER_EXECUTION"):
        raise RuntimeError("NBGRADER_EXECUTION is set: the lessons would shorten themselves as under grading")
    files = dict(course.lessons())
    per_lesson = {}
    for assignment in lesson_names(selected):
        runs = [time_execution(assignment, files[assignment]) for _ in range(repeats)]
        per_lesson[assignment] = statistics.median(runs)
        print(f"  {assignment}: {per_lesson[assignment]:.1f} s", flush=True)
    return {"notebooks_s": per_lesson, "notebooks_total_s": sum(per_lesson.values())}
