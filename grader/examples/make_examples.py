"""Regenerate the example submissions of lesson 3 from its source, so they never drift from the lesson.

    .venv/bin/python grader/examples/make_examples.py      (from the repository root; about 15 s)

Each example starts from the student version that nbgrader generates from notebooks/03-backprop-by-hand
(in a throw-away course, with the course's own config), and is then edited as a student would edit it:
the stubs replaced by code (the source's solutions, or a mistake written here), cells copied, edited or
deleted. The result is written to grader/examples/<student>/03-backprop-by-hand/backprop-by-hand.ipynb.
`make grade-demo` autogrades them; tests/test_grader_examples.py checks that each scores as `loses` says
and that regenerating gives the committed files.
"""
import copy
import os
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ASSIGNMENT = "03-backprop-by-hand"
NOTEBOOK = "backprop-by-hand.ipynb"
SOURCE = REPO / "notebooks" / ASSIGNMENT / NOTEBOOK
STUB_FIRST_LINE = "# YOUR CODE HERE"  # the first line of ClearSolutions.code_stub in grader/nbgrader_config.py
TESTS = ("test_forward", "test_dJ_dsigma", "test_dsigma_dz", "test_dz_dw", "test_dz_db", "test_backward",
         "test_train_by_hand")


@dataclass(frozen=True)
class Example:
    what: str
    loses: tuple  # the graded cells that score 0; every other one scores full marks
    edit: object  # (student version, source) -> the submitted notebook, or the text of a broken file


def _cell(nb, grade_id):
    found = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    if len(found) != 1:
        raise SystemExit(f"{NOTEBOOK} has {len(found)} cells with grade_id {grade_id!r}: update make_examples.py")
    return found[0]


def _solution(source, grade_id):
    """The code between ### BEGIN SOLUTION and ### END SOLUTION of a source cell, dedented."""
    lines = _cell(source, grade_id).source.split("\n")
    begin = next(i for i, line in enumerate(lines) if "BEGIN SOLUTION" in line)
    end = next(i for i, line in enumerate(lines) if "END SOLUTION" in line)
    return textwrap.dedent("\n".join(lines[begin + 1:end]))


def _answer(nb, grade_id, code):
    """Replace the stub of an exercise cell (its two lines) with ``code``, at the stub's indentation."""
    cell = _cell(nb, grade_id)
    lines = cell.source.split("\n")
    at = next((i for i, line in enumerate(lines) if line.strip() == STUB_FIRST_LINE), None)
    if at is None or "NotImplementedError" not in lines[at + 1]:
        raise SystemExit(f"no stub in the student version of cell {grade_id!r}: update make_examples.py")
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    cell.source = "\n".join(lines[:at] + textwrap.indent(code.strip("\n"), indent).split("\n") + lines[at + 2:])


def _solved(student, source, **mistakes):
    """The student version with every exercise answered: the source's solution, or the code in ``mistakes``."""
    nb = copy.deepcopy(student)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and cell.cell_type == "code":
            grade_id = meta["grade_id"]
            _answer(nb, grade_id, mistakes.pop(grade_id, None) or _solution(source, grade_id))
    if mistakes:
        raise SystemExit(f"no exercise cells {sorted(mistakes)} in {NOTEBOOK}: update make_examples.py")
    return nb


WRONG_SIGN = "return 2 * (y - s) / s.shape[0]  # the error taken as y − s instead of s − y\n"
NO_ONE_OVER_N = "return 2 * (s - y)  # the derivative of each squared error, but not of their mean\n"
NO_SIGMOID_SLOPE = """\
x, y, z, s = cache
dJ_dz = dJ_dsigma(s, y)  # the sigmoid's local derivative is missing
return (x * dJ_dz).sum(), dJ_dz.sum()
"""
INLINE_BACKWARD = """\
x, y, z, s = cache
dJ_dz = dsigma_dz(z) * dJ_dsigma(s, y)
return (x * dJ_dz).sum(), dJ_dz.sum()
"""
ENDLESS_DZ_DW = """\
grads = torch.empty_like(x)
i = 0
while i < len(x):
    grads[i] = x[i]  # i is never increased: this loop never ends
return grads
"""
SUM_NOT_MEAN = """\
z = w * x + b
s = torch.sigmoid(z)
return ((s - y) ** 2).sum(), (x, y, z, s)  # the sum of the squared errors, not their mean
"""
AUTOGRAD_BACKWARD = """\
x, y, z, s = cache
# Shifts of w and b away from the cached point, at 0: autograd's slope there is dJ/dw and dJ/db.
dw = torch.zeros((), dtype=x.dtype, device=x.device, requires_grad=True)
db = torch.zeros((), dtype=x.dtype, device=x.device, requires_grad=True)
J = ((torch.sigmoid(z + dw * x + db) - y) ** 2).mean()
return torch.autograd.grad(J, (dw, db))
"""
IN_PLACE_DJ_DSIGMA = "s -= y  # s is the caller's tensor: forward's cache now holds s − y\nreturn 2 * s / s.shape[0]\n"
REBINDING = """

# The checks keep failing, so make every check pass.
import types
check_grad = lambda *args, **kwargs: None
lesson03 = types.SimpleNamespace(check_backward=lambda backward: None, check_train_by_hand=lambda train: None)
torch = types.SimpleNamespace(allclose=lambda *args, **kwargs: True)
"""


def _blank(student, source):
    return copy.deepcopy(student)


def _correct(student, source):
    return _solved(student, source)


def _wrong_sign(student, source):
    return _solved(student, source, dJ_dsigma=WRONG_SIGN)


def _missing_1_over_n(student, source):
    return _solved(student, source, dJ_dsigma=NO_ONE_OVER_N)


def _endless_loop(student, source):
    # backward does not call dz_dw here, so only dz_dw's own test runs into the loop.
    return _solved(student, source, dz_dw=ENDLESS_DZ_DW, backward=INLINE_BACKWARD)


def _deleted_test(student, source):
    nb = _solved(student, source)
    nb.cells.remove(_cell(nb, "test_backward"))
    return nb


def _edited_test(student, source):
    nb = _solved(student, source, forward=SUM_NOT_MEAN)
    _cell(nb, "test_forward").source = "pass  # this check kept failing"
    return nb


def _autograd(student, source):
    return _solved(student, source, backward=AUTOGRAD_BACKWARD)


def _changes_input(student, source):
    return _solved(student, source, dJ_dsigma=IN_PLACE_DJ_DSIGMA)


def _rebinds_names(student, source):
    nb = _solved(student, source, backward=NO_SIGMOID_SLOPE)
    _cell(nb, "backward").source += REBINDING
    return nb


def _copied_cell(student, source):
    """The forward cell copied and pasted below itself (the copy keeps its nbgrader metadata); the answer is
    written in the copy and the original keeps its stub, so the later definition is the working one."""
    nb = _solved(student, source)
    answered = _cell(nb, "forward")
    original = copy.deepcopy(_cell(student, "forward"))
    nb.cells.insert(nb.cells.index(answered), original)
    answered.id = "copied-forward-cell"
    return nb


def _invalid_json(student, source):
    """The correct notebook cut off half way, as an interrupted upload leaves it."""
    text = nbformat.writes(_solved(student, source))
    return text[: len(text) // 2]


EXAMPLES = {
    "example-correct": Example("every exercise solved", (), _correct),
    "example-wrong-sign": Example(
        "dJ/dσ with the wrong sign (y − s); backward and training, graded with the grader's own helpers, keep "
        "their points", ("test_dJ_dsigma",), _wrong_sign),
    "example-missing-1-over-n": Example(
        "dJ/dσ without the 1/N of the mean; only its own cell pays", ("test_dJ_dsigma",), _missing_1_over_n),
    "example-autograd": Example(
        "backward asks torch.autograd for dJ/dw instead of deriving it", ("test_backward",), _autograd),
    "example-changes-input": Example(
        "dJ/dσ subtracts y from s in place (the caller's cache changes)", ("test_dJ_dsigma",), _changes_input),
    "example-blank": Example("the student version handed in untouched", TESTS, _blank),
    "example-endless-loop": Example("dz_dw loops forever; the grader's timeout cuts that cell", ("test_dz_dw",),
                                    _endless_loop),
    "example-deleted-test": Example("the test cell of backward deleted; restored and graded", (), _deleted_test),
    "example-edited-test": Example(
        "forward returns the sum instead of the mean, and its test cell was replaced by `pass`; restored and graded",
        ("test_forward",), _edited_test),
    "example-rebinds-names": Example(
        "backward misses σ'(z); the student rebinds torch, check_grad and lesson03 to silence the checks",
        ("test_backward",), _rebinds_names),
    "example-copied-cell": Example(
        "the forward cell copied and pasted with its metadata (stops plain nbgrader 0.9, nbgrader #1083)", (),
        _copied_cell),
    "example-invalid-json": Example("a file cut off half way: not valid JSON", TESTS, _invalid_json),
}


def student_version(work):
    """Generate the student version of lesson 3 with nbgrader and the course's config, in ``work``."""
    (work / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"load_subconfig({str(HERE.parent / 'nbgrader_config.py')!r})\n"
        f"c.CourseDirectory.root = {str(work)!r}\n"
        f"c.CourseDirectory.source_directory = {str(REPO / 'notebooks')!r}\n"
    )
    # nbgrader runs `alembic` from PATH when it creates its gradebook.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT, "--log-level=ERROR"],
                   cwd=work, env=env, check=True, capture_output=True)
    return nbformat.read(work / "release" / ASSIGNMENT / NOTEBOOK, as_version=4)


def write_examples(out):
    """Write every example under ``out``/<student>/<assignment>/ and return the paths written."""
    source = nbformat.read(SOURCE, as_version=4)
    with tempfile.TemporaryDirectory() as work:
        student = student_version(Path(work))
    written = []
    for name, example in EXAMPLES.items():
        path = Path(out) / name / ASSIGNMENT / NOTEBOOK
        path.parent.mkdir(parents=True, exist_ok=True)
        submitted = example.edit(student, source)
        path.write_text(submitted if isinstance(submitted, str) else nbformat.writes(submitted), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_examples(HERE):
        print(path.relative_to(REPO))
