"""The instructor's static scan (gradlab.instructor.scan) flags autograd, tampering and rebinding of the names the
tests import in a submission's code, and leaves the lessons' own solutions and ordinary code alone."""
from pathlib import Path

import nbformat
import pytest

from gradlab.instructor import scan

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "notebooks").glob("*/*.ipynb"))
LESSON3 = ROOT / "notebooks" / "03-backprop-by-hand" / "backprop-by-hand.ipynb"
EXAMPLES = ROOT / "grader" / "examples"


def _whats(source, protected=None):
    found = scan.read(source) + scan.rebinds(source, protected or scan._test_imports(scan._lesson_source(LESSON3)))
    return [what for _, what, _ in found]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.parent.name)
def test_no_lesson_source_is_flagged(source):
    assert scan.flags(nbformat.read(source, as_version=4), source) == []


@pytest.mark.parametrize("code, what", [
    ("def backward(cache):\n    J.backward()\n    return w.grad, b.grad", "calls .backward()"),
    ("g = torch.autograd.grad(J, w)", "uses torch.autograd"),
    ("from torch.autograd import grad\ng = grad(J, w)", "uses torch.autograd"),
    ("w = torch.zeros((), requires_grad=True)", "passes requires_grad="),
    ("w.requires_grad_()", "calls requires_grad_()"),
    ("with torch.enable_grad():\n    pass", "turns gradients on (enable_grad)"),
    ("p = torch.nn.Parameter(w)", "makes an nn.Parameter"),
    ("from torch.func import grad", "uses torch.func"),
    ("import torch.autograd.forward_ad as fwAD", "uses forward-mode autograd"),
    ("from torch.autograd.forward_ad import make_dual", "uses forward-mode autograd (make_dual)"),
    ("g = f(w + 1e-20j).imag / 1e-20", "uses complex numbers (an imaginary literal)"),
    ("w = w.to(torch.complex128)", "uses complex numbers"),
    ("w = complex(w, 1e-20)", "uses complex numbers"),
    ("import cmath", "uses complex numbers (cmath)"),
    ("import threading\nthreading.Thread(target=print).start()", "starts threads"),
    ("from concurrent.futures import ThreadPoolExecutor", "starts threads or processes"),
    ("import base64\nexec(base64.b64decode(b'cHJpbnQoMSk='))", "decodes text into code or data (base64)"),
    ("open('_h.py', 'w').write(code)\nimport _h", "imports `_h`, a module the course does not use"),
    ("from _h import backward", "imports `_h`, a module the course does not use"),
    ("from . import helper", "imports `.`, a module the course does not use"),
    ("import torch._C as C", "reaches into torch._C"),
    ("f = getattr(torch, 'auto' + 'grad')", "looks up an attribute by name"),
    ("exec('print(1)')", "runs code from a string (exec)"),
    ("import os\nos._exit(0)", "ends the process (os._exit)"),
    ("x = 'gradlab'", "has the text 'gradlab' in a string"),
    ("from gradlab.grading import lesson03", "imports the grader's checks (gradlab.grading)"),
    ("import types\nlesson03 = types.SimpleNamespace(check_backward=lambda f: None)",
     "rebinds `lesson03`, which the lesson's tests import"),
    ("check_grad = lambda *args, **kwargs: None", "rebinds `check_grad`, which the lesson's tests import"),
    ("import numpy as torch", "rebinds `torch`, which the lesson's tests import"),
    ("def f():\n    global torch\n    torch = None", "rebinds `torch`, which the lesson's tests import"),
    ("for check_grad in [print]:\n    pass", "rebinds `check_grad`, which the lesson's tests import"),
    ("class lesson03:\n    pass", "rebinds `lesson03`, which the lesson's tests import"),
    ("del torch", "rebinds `torch`, which the lesson's tests import"),
])
def test_what_must_be_flagged(code, what):
    assert what in _whats(code)


@pytest.mark.parametrize("code", [
    # Exercises are functions named backward, grads, ...; a docstring may say so.
    'def backward(cache):\n    """The backward pass, by hand."""\n    x, y, z, s = cache\n    return x, y',
    "def grads_by_graph(X, y, w, b):\n    return X, y",
    # Importing what the tests import, the same way, and local names that shadow nothing outside.
    "import torch\nfrom gradlab.check import check_grad\nimport torch.nn",
    "import math, time, itertools\nfrom collections import defaultdict\nimport numpy as np\nfrom tqdm import tqdm",
    "def f(x):\n    torch = x\n    lesson03 = 2 * x\n    return [check_grad for check_grad in range(3)]",
    "class Layer:\n    torch = None",
    "note = 'the gradient of the loss, computed backward from the output'",
])
def test_what_must_not_be_flagged(code):
    assert _whats(code) == []


def test_lesson_6_training_loop_may_use_autograd_its_hand_gradient_may_not():
    source = ROOT / "notebooks" / "06-mnist-pytorch" / "mnist-pytorch.ipynb"
    nb = nbformat.read(source, as_version=4)
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    cells["train_epoch"].source += "\nloss = torch.zeros(())\nloss.backward()\n"
    exercise = next(g for g, c in cells.items() if g and g != "train_epoch" and c.metadata["nbgrader"].get("solution")
                    and c.cell_type == "code")
    cells[exercise].source += "\n_unused = torch.autograd.grad\n"
    flagged = {(f["grade_id"], f["category"]) for f in scan.flags(nb, source)}
    assert flagged == {(exercise, "autograd")}


def test_an_added_cell_is_read_and_an_unreadable_one_is_a_finding():
    nb = nbformat.read(LESSON3, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("torch = None"))
    nb.cells.append(nbformat.v4.new_code_cell("def broken(:"))
    found = scan.flags(nb, LESSON3)
    assert [(f["where"], f["what"]) for f in found] == [
        ("added or edited cell", "rebinds `torch`, which the lesson's tests import"),
        ("added or edited cell", "is not valid Python (invalid syntax)"),
    ]


def test_the_examples_are_flagged_where_they_cheat_and_nowhere_else():
    def flagged(example):
        path = next((EXAMPLES / example).rglob("*.ipynb"))
        return {(f["grade_id"], f["what"]) for f in scan.flags(nbformat.read(path, as_version=4), LESSON3)}

    assert flagged("example-rebinds-names") == {
        ("backward", f"rebinds `{name}`, which the lesson's tests import") for name in ("check_grad", "lesson03", "torch")}
    assert ("backward", "uses torch.autograd") in flagged("example-autograd")
    assert flagged("example-correct") == set()
