"""Every hidden check of every lesson gives the same verdict in the grader's replay as when it runs locally.

The reference solutions (the lesson sources' solution cells) must pass both ways; this is what autograde
relies on: the grader never calls student code, it replays what the kernel recorded.
"""
import nbformat
import pytest

from course import NOTEBOOKS, is_graded_test, lessons, solution_namespace
from grading_modes import both
from gradlab.instructor.checks import check_calls


def _calls():
    out = []
    for assignment, notebook in lessons():
        nb = nbformat.read(NOTEBOOKS / assignment / notebook, as_version=4)
        for cell in nb.cells:
            if is_graded_test(cell):
                for call in check_calls(cell.source):
                    out.append(pytest.param(f"{assignment}/{notebook}", call, id=f"{call.name}{call.kwargs or ''}"))
    return out


@pytest.mark.parametrize("notebook, call", _calls())
def test_reference_solution_passes_when_replayed(notebook, call):
    namespace = solution_namespace(notebook)
    args = [namespace[value] if kind == "function" else value for kind, value in call.args]
    err, verdict = both(call.resolve(), *args, **call.kwargs)
    assert err is None and verdict.ok, verdict.message
