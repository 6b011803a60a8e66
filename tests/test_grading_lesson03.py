"""Lesson 3's hidden checks: the lesson's solutions and every valid variant pass, the classic mistakes (and the holes a
strict review found) fail with a message that names the mistake, autograd never earns a point, and a slip in a helper
costs the helper's cell only. The important cases run both ways the grader runs a check (locally, and recorded then
replayed: tests/grading_modes.py)."""
import _thread
import ast
import concurrent.futures
import contextlib
import io
import subprocess
import threading
import re
from pathlib import Path

import pytest
import torch
import tqdm

from course import solution_namespace
from grading_modes import both
from gradlab.grading import guard, lesson03

NOTEBOOK = "03-backprop-by-hand/backprop-by-hand.ipynb"
SOLUTIONS = solution_namespace(NOTEBOOK)
forward, backward, train_by_hand = SOLUTIONS["forward"], SOLUTIONS["backward"], SOLUTIONS["train_by_hand"]
dJ_dsigma, dsigma_dz, dz_dw, dz_db = (SOLUTIONS[n] for n in ("dJ_dsigma", "dsigma_dz", "dz_dw", "dz_db"))
CHECKS = {
    "forward": lesson03.check_forward, "dJ_dsigma": lesson03.check_dJ_dsigma, "dsigma_dz": lesson03.check_dsigma_dz,
    "dz_dw": lesson03.check_dz_dw, "dz_db": lesson03.check_dz_db, "backward": lesson03.check_backward,
    "train_by_hand": lesson03.check_train_by_hand,
}


def passes(check, fn):
    err, verdict = both(check, fn)
    assert err is None, err
    return verdict


def fails(check, fn, kind, *needles):
    """The check fails ``fn`` both ways, with this kind and a message holding every needle (regular expressions)."""
    err, verdict = both(check, fn)
    assert err is not None, "the check passed"
    message = str(err)
    assert getattr(err, "kind", None) == kind == verdict.kind, (getattr(err, "kind", None), verdict.kind, message)
    for needle in needles:
        assert re.search(needle, message), message
    return message


def notebook(**sources):
    """The lesson's solutions in one fresh namespace, as in a student's kernel, with some functions redefined."""
    ns = solution_namespace(NOTEBOOK)
    for source in sources.values():
        exec(source, ns)
    return ns


# --------------------------------------------------------------------------- the solutions
def test_the_lesson_solutions_pass_both_ways_without_notes():
    for name, check in CHECKS.items():
        verdict = passes(check, SOLUTIONS[name])
        assert not verdict.notes, verdict.notes


def code_of(module):
    """A module's code without comments and docstrings (ast.unparse keeps neither)."""
    tree = ast.parse(Path(module.__file__).read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def test_no_hidden_check_module_holds_a_hand_formula():
    """Students can read gradlab/grading: lesson 3's derivatives must not be written there (autograd gives them)."""
    code = code_of(lesson03)
    for pattern in (r"\(1 *- *\w+\)", r"\b2 *\*", r"(?<!\*)\* *2\b", r"ones_like", r"/ *(len|N)\b", r"\.shape\[0\]"):
        assert not re.search(pattern, code), f"lesson03.py holds {pattern}"


def test_an_unwritten_exercise_says_so():
    def stub(*args):
        raise NotImplementedError("Replace this line with your solution, then run the check below.")
    for check in CHECKS.values():
        fails(check, stub, "not written", "not written yet")


def test_a_crash_is_reported_with_the_shapes_it_was_called_with():
    fails(lesson03.check_dz_dw, lambda x: x[x.shape[0] + 1], "exception", r"(?s)raised IndexError.*\(1,\) float32 \(n=1")


def test_a_function_overwritten_by_a_number_says_so():
    fails(lesson03.check_dz_db, 1.0, "not a function", "should be a function")


# --------------------------------------------------------------------------- autograd is not a hand derivative
SAVED_GRAD = torch.autograd.grad


def _by_backward(f, *inputs):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    f(*leaves).backward()
    return tuple(t.grad for t in leaves)


def _by_autograd_grad(f, *inputs):
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    return torch.autograd.grad(f(*leaves), leaves)


def _by_saved_reference(f, *inputs):
    leaves = [t.detach().clone() for t in inputs]
    for t in leaves:
        t.requires_grad = True
    return SAVED_GRAD(f(*leaves), leaves)


def _by_factory(f, *inputs):
    leaves = [torch.tensor(t.tolist(), dtype=t.dtype, device=t.device, requires_grad=True) for t in inputs]
    return SAVED_GRAD(f(*leaves), leaves)


def _by_parameter(f, *inputs):
    leaves = [torch.nn.Parameter(t.detach().clone()) for t in inputs]
    return SAVED_GRAD(f(*leaves), leaves)


def _by_func_grad(f, *inputs):
    return torch.func.grad(f, argnums=tuple(range(len(inputs))))(*inputs)


def _by_forward_ad(f, *inputs):
    """Forward mode: one dual number per element, its tangent the derivative along that element."""
    import torch.autograd.forward_ad as fwAD

    grads = []
    for k, t in enumerate(inputs):
        grad = torch.zeros_like(t).reshape(-1)
        for i in range(grad.numel()):
            tangent = torch.zeros_like(t).reshape(-1)
            tangent[i] = 1
            with fwAD.dual_level():
                dual = fwAD.make_dual(t, tangent.reshape(t.shape))
                grad[i] = fwAD.unpack_dual(f(*inputs[:k], dual, *inputs[k + 1:])).tangent
        grads.append(grad.reshape(t.shape))
    return tuple(grads)


def _by_func_jvp(f, *inputs):
    grads = []
    for k, t in enumerate(inputs):
        def along(u):
            return f(*inputs[:k], u, *inputs[k + 1:])
        basis = torch.eye(t.numel(), dtype=t.dtype, device=t.device)
        grads.append(torch.stack([torch.func.jvp(along, (t,), (e.reshape(t.shape),))[1] for e in basis])
                     .reshape(t.shape))
    return tuple(grads)


WAYS = [_by_backward, _by_autograd_grad, _by_saved_reference, _by_factory, _by_parameter, _by_func_grad,
        _by_forward_ad, _by_func_jvp]


def _by_complex_step(f, *inputs):
    """Im f(t + ih) / h: a numerical derivative exact to rounding, no autograd and nothing derived."""
    h = 1e-30
    grads = []
    for k, t in enumerate(inputs):
        grad = torch.zeros_like(t).reshape(-1)
        for i in range(grad.numel()):
            nudge = torch.zeros(t.numel(), dtype=torch.complex128, device=t.device)
            nudge[i] = 1j * h
            moved = t.to(torch.complex128) + nudge.reshape(t.shape)
            grad[i] = f(*inputs[:k], moved, *inputs[k + 1:]).imag / h
        grads.append(grad.reshape(t.shape))
    return tuple(grads)


def _autograd_answers(way):
    """Every by-hand exercise of the lesson, answered with autograd in the given way."""
    def dJ_ds(s, y):
        return way(lambda s_: ((s_ - y) ** 2).mean(), s)[0]

    def ds_dz(z):
        return way(lambda z_: torch.sigmoid(z_).sum(), z)[0]

    def dz_dw_(x):
        return way(lambda w_: (w_ * x).sum(), torch.zeros_like(x))[0]

    def dz_db_(x):
        return way(lambda b_: (x + b_).sum(), torch.zeros_like(x))[0]

    def backward_(cache):
        x, y, z, s = cache
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        return way(lambda dw, db: ((torch.sigmoid(z + dw * x + db) - y) ** 2).mean(), zero, zero)

    def train(x, y, w, b, lr, passes):
        w, b = torch.tensor(w, dtype=x.dtype), torch.tensor(b, dtype=x.dtype)
        for _ in range(passes):
            for i in range(len(x)):
                dw, db = way(lambda w_, b_: ((torch.sigmoid(w_ * x[i] + b_) - y[i]) ** 2), w, b)
                w, b = w - lr * dw, b - lr * db
        return float(w), float(b)
    return {"dJ_dsigma": dJ_ds, "dsigma_dz": ds_dz, "dz_dw": dz_dw_, "dz_db": dz_db_, "backward": backward_,
            "train_by_hand": train}


@pytest.mark.parametrize("way", WAYS, ids=lambda w: w.__name__)
@pytest.mark.parametrize("name", ["dJ_dsigma", "dsigma_dz", "dz_dw", "dz_db", "backward", "train_by_hand"])
def test_autograd_fails_every_hand_derivative(name, way):
    fails(CHECKS[name], _autograd_answers(way)[name], "autograd", f"`{name}` used autograd", "derived by hand")


@pytest.mark.parametrize("name", ["dJ_dsigma", "dsigma_dz", "dz_dw", "dz_db", "backward", "train_by_hand"])
def test_the_complex_step_trick_fails_every_hand_derivative(name):
    wrong = _autograd_answers(_by_complex_step)[name]
    fails(CHECKS[name], wrong, "autograd", f"`{name}` computed a derivative numerically", "complex-step",
          "derived by hand")


@pytest.mark.parametrize("way", [_by_forward_ad, _by_func_jvp, _by_complex_step], ids=lambda w: w.__name__)
def test_forward_mode_and_complex_step_answers_are_right_so_only_the_guard_refuses_them(way, monkeypatch):
    monkeypatch.setattr(guard, "no_autograd", lambda refused=None: contextlib.nullcontext(None))
    for name in ("dsigma_dz", "backward"):
        passes(CHECKS[name], _autograd_answers(way)[name])


def _in_a_thread(start):
    """backward by autograd in a thread of its own, started by ``start(work)`` and waited for."""
    def backward_(cache):
        x, y, z, s = cache
        box = []

        def work():
            w0, b0 = (torch.zeros((), dtype=z.dtype, requires_grad=True) for _ in range(2))
            box.append(torch.autograd.grad(((torch.sigmoid(z + w0 * x + b0) - y) ** 2).mean(), (w0, b0)))
        start(work)
        return box[0] if box else (torch.zeros(()), torch.zeros(()))
    return backward_


def _thread_start(work):
    worker = threading.Thread(target=work)
    worker.start()
    worker.join()


def _raw_thread_start(work):
    done = threading.Event()

    def run():
        try:
            work()
        finally:
            done.set()
    _thread.start_new_thread(run, ())
    done.wait(5)


def _pool_start(work):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(work).result()


@pytest.mark.parametrize("start", [_thread_start, _raw_thread_start, _pool_start], ids=lambda s: s.__name__)
def test_autograd_in_a_thread_started_by_the_function_fails(start):
    fails(lesson03.check_backward, _in_a_thread(start), "autograd", "`backward` used autograd", "requires_grad")


def test_a_process_started_by_the_function_fails():
    def backward_(cache):
        subprocess.run(["true"], check=False)
        return torch.zeros(()), torch.zeros(())
    fails(lesson03.check_backward, backward_, "autograd", "`backward` used autograd", "a new process")


def test_a_right_answer_with_a_progress_bar_thread_passes():
    def backward_(cache):
        x, y, z, s = cache
        for _ in tqdm.tqdm(range(2), file=io.StringIO()):  # tqdm starts its monitor thread
            pass
        d = 2 * (s - y) * s * (1 - s) / len(x)
        return (d * x).sum(), d.sum()
    passes(lesson03.check_backward, backward_)


def test_autograd_hidden_by_enable_grad_or_a_try_fails_too():
    def enabled(s, y):
        with torch.enable_grad():
            return _by_autograd_grad(lambda s_: ((s_ - y) ** 2).mean(), s)[0]

    def swallowed(s, y):
        try:
            return _by_backward(lambda s_: ((s_ - y) ** 2).mean(), s)[0]
        except Exception:
            return 2 * (s - y) / len(s)
    fails(lesson03.check_dJ_dsigma, enabled, "autograd", "used autograd")
    fails(lesson03.check_dJ_dsigma, swallowed, "autograd", "used autograd")


def test_a_forward_may_use_autograd_it_is_no_gradient():
    def recording(x, y, w, b):
        w = torch.as_tensor(w, dtype=x.dtype, device=x.device).clone().requires_grad_()
        z = w * x + b
        s = torch.sigmoid(z)
        return ((s - y) ** 2).mean(), (x, y, z, s)
    passes(lesson03.check_forward, recording)


# --------------------------------------------------------------------------- forward
FORWARD_VARIANTS = {
    "torch.sigmoid": """
def forward(x, y, w, b):
    z = w * x + b
    s = torch.sigmoid(z)
    return torch.mean((s - y) ** 2), [x, y, z, s]
""",
    "in place on its own z": """
def forward(x, y, w, b):
    z = x * w
    z += b
    s = torch.exp(-z).add_(1).reciprocal_()
    return (s - y).pow(2).sum() / x.numel(), (x, y, z, s)
""",
    "torch.where for a stable sigmoid": """
def forward(x, y, w, b):
    z = w * x + b
    e = torch.exp(-z.abs())
    s = torch.where(z >= 0, 1 / (1 + e), e / (1 + e))
    return torch.nn.functional.mse_loss(s, y), (x, y, z, s)
""",
}


@pytest.mark.parametrize("variant", FORWARD_VARIANTS)
def test_forward_variants_pass(variant):
    passes(lesson03.check_forward, notebook(f=FORWARD_VARIANTS[variant])["forward"])


def test_a_sum_instead_of_the_mean_is_named_as_a_missing_division_by_n():
    def summed(x, y, w, b):
        J, cache = forward(x, y, w, b)
        return J * x.shape[0], cache
    fails(lesson03.check_forward, summed, "factor", r"J is wrong \(n=7.*divide by N \(N = 7")


def test_a_cache_in_another_order_fails():
    def shuffled(x, y, w, b):
        J, (x_, y_, z, s) = forward(x, y, w, b)
        return J, (x_, y_, s, z)
    fails(lesson03.check_forward, shuffled, "values", "z in the cache")


@pytest.mark.parametrize("position, what", [(0, "x"), (1, "y")])
def test_a_cache_without_x_or_y_fails(position, what):
    def without(x, y, w, b):
        J, cache = forward(x, y, w, b)
        cache = list(cache)
        cache[position] = None
        return J, tuple(cache)
    fails(lesson03.check_forward, without, "none", f"the cache holds None where {what} belongs")


def test_a_cache_with_the_other_labels_fails():
    fails(lesson03.check_forward, lambda x, y, w, b: (forward(x, y, w, b)[0], (x, 1 - y, *forward(x, y, w, b)[1][2:])),
          "values", "y in the cache is wrong")


def test_forward_must_take_numbers_for_w_and_b_as_its_docstring_says():
    def tensors_only(x, y, w, b):
        return forward(x, y, w.to(x.dtype), b.to(x.dtype))
    fails(lesson03.check_forward, tensors_only, "exception", "raised AttributeError", "w and b as Python floats")


def test_forward_must_return_the_cost_and_the_cache():
    fails(lesson03.check_forward, lambda x, y, w, b: forward(x, y, w, b)[0], "not a pair",
          r"should return a pair \(J, cache\)")
    fails(lesson03.check_forward, lambda x, y, w, b: (forward(x, y, w, b)[0], forward(x, y, w, b)[1][2:]), "cache",
          r"cache should be the tuple \(x, y, z, s\), but it is a tuple of 2")


def test_forward_that_changes_its_input_in_place_is_told_so():
    def in_place(x, y, w, b):
        result = forward(x, y, w, b)
        x.mul_(1.5)
        return result
    fails(lesson03.check_forward, in_place, "changed input", r"changed its input `x` in place")


# --------------------------------------------------------------------------- local derivatives
RIGHT_LOCAL = {
    "dJ_dsigma": [
        lambda s, y: (s - y).mul(2).div(len(s)),
        lambda s, y: 2 / y.shape[0] * (s - y),
        lambda s, y: torch.where(s >= y, 2 * (s - y) / s.numel(), -2 * (y - s) / s.numel()),
        "def f(s, y):\n    g = s.clone()\n    g.sub_(y)\n    g *= 2 / g.numel()\n    return g",
        "def f(s, y):\n    with torch.no_grad():\n        return 2 * (s - y) / len(s)",
    ],
    "dsigma_dz": [
        lambda z: torch.sigmoid(z) * torch.sigmoid(-z),
        lambda z: torch.exp(-z) / (1 + torch.exp(-z)) ** 2,
        lambda z: torch.where(z >= 0, torch.exp(-z) / (1 + torch.exp(-z)) ** 2, torch.exp(z) / (1 + torch.exp(z)) ** 2),
        "def f(z):\n    s = torch.sigmoid(z)\n    s.mul_(1 - s)\n    return s",
    ],
    "dz_dw": [lambda x: x, lambda x: x.clone(), lambda x: x * 1, lambda x: x.detach()],
    "dz_db": [
        torch.ones_like, lambda x: x * 0 + 1, lambda x: x.new_ones(x.shape),
        lambda x: torch.ones(len(x), dtype=x.dtype, device=x.device),
        lambda x: torch.tensor(1.0, dtype=x.dtype, device=x.device).expand(x.shape),
        lambda x: x ** 0,
    ],
}


def _function(source_or_fn):
    if callable(source_or_fn):
        return source_or_fn
    ns = {"torch": torch}
    exec(source_or_fn, ns)
    return ns["f"]


@pytest.mark.parametrize("name, k", [(n, k) for n, fns in RIGHT_LOCAL.items() for k in range(len(fns))])
def test_unusual_right_local_derivatives_pass(name, k):
    passes(CHECKS[name], _function(RIGHT_LOCAL[name][k]))


@pytest.mark.parametrize("wrong, kind, diagnosis", [
    (lambda s, y: 2 * (s - y), "factor", r"n=7.*divide by N \(N = 7"),       # the 1/N of the mean is missing
    (lambda s, y: 2 * (y - s) / s.shape[0], "sign", "wrong sign"),
    (lambda s, y: (s - y) / s.shape[0], "factor", "missing factor 2"),
    (lambda s, y: 2 * (s - y).mean() * torch.ones_like(s), "values", "dJ/dσ is wrong"),
    (lambda s, y: 2 * (s - y) / 569, "factor", r"dJ/dσ is wrong \(n=1"),      # the lesson's N, not the batch's
])
def test_wrong_dJ_dsigma_fails_with_its_diagnosis(wrong, kind, diagnosis):
    fails(lesson03.check_dJ_dsigma, wrong, kind, diagnosis)


def test_a_hard_coded_dJ_dsigma_fails():
    fails(lesson03.check_dJ_dsigma, lambda s, y: torch.tensor([-0.5, 0.9]), "shape", "dJ/dσ")


# Kinds were "values" before the diagnosis (gradlab.variants) named the formula mistakes; σ(1 + σ) fits none.
@pytest.mark.parametrize("wrong, kind, needle", [
    (lambda z: z * (1 - z), "wrong_point",                   # σ(1 − σ) with z put in for σ
     r"dσ/dz is wrong \(n=64.*: it computes z·\(1 − z\): that is σ' written for the output σ, applied to the input z"),
    (lambda z: torch.sigmoid(torch.sigmoid(z)) * (1 - torch.sigmoid(torch.sigmoid(z))), "wrong_point", "applied twice"),
    (lambda z: torch.sigmoid(z) * (1 + torch.sigmoid(z)), "values", "dσ/dz is wrong"),
    (lambda z: torch.sigmoid(z), "sigmoid_part", r"it is σ\(z\) only, but σ'\(z\) = σ\(z\)·\(1 − σ\(z\)\)"),
    (lambda z: 1 - torch.sigmoid(z), "sigmoid_part", r"Fix: multiply by σ\(z\) as well"),
    (lambda z: (torch.sigmoid(z) * (1 - torch.sigmoid(z))) ** 2, "twice", "applied twice: it is squared"),
    (lambda z: torch.sigmoid(z) - (1 - torch.sigmoid(z)), "values", "dσ/dz is wrong"),  # a difference: no usual slip
])
def test_wrong_sigmoid_derivatives_fail(wrong, kind, needle):
    fails(lesson03.check_dsigma_dz, wrong, kind, needle)


def test_dz_dw_of_ones_fails_and_dz_db_of_x_fails():
    fails(lesson03.check_dz_dw, torch.ones_like, "dropped", r"dz/dw is wrong .*the factor x is missing: ∂z/∂w = x\. "
          r"Fix: dz/dw = x\.")
    fails(lesson03.check_dz_db, lambda x: x, "wrong_factor", r"dz/db is wrong .*it multiplies by x, but ∂z/∂b = 1\. "
          "Fix: dz/db = 1 for every observation")
    fails(lesson03.check_dz_dw, lambda x: x * x, "twice", "x is multiplied in twice")


@pytest.mark.parametrize("wrong, kind, needle", [
    (lambda s, y: 2 * s / s.shape[0], "error_term", "it uses the prediction s where the error s − y belongs"),
    (lambda s, y: (s - y) ** 2 / s.shape[0], "loss_for_grad", r"the loss itself, instead of its derivative"),
])
def test_dJ_dsigma_formula_mistakes_are_named(wrong, kind, needle):
    fails(lesson03.check_dJ_dsigma, wrong, kind, needle)


def test_dz_db_in_the_default_dtype_fails_on_float64_inputs():
    fails(lesson03.check_dz_db, lambda x: torch.ones(x.shape[0], device=x.device), "placement",
          r"right values but is float32.*should follow the inputs: float64")


def test_local_derivatives_as_numbers_fail():
    fails(lesson03.check_dz_db, lambda x: 1.0, "shape", "dz/db")
    fails(lesson03.check_dz_dw, lambda x: x.tolist(), "type", "dz/dw")


def test_a_local_derivative_that_changes_its_input_is_told_so():
    def in_place(s, y):
        return s.sub_(y).mul_(2 / len(s))
    fails(lesson03.check_dJ_dsigma, in_place, "changed input", r"changed its input `s` in place")


# --------------------------------------------------------------------------- backward
BACKWARD_VARIANTS = {
    "inline, without the helpers": """
def backward(cache):
    x, y, z, s = cache
    dJ_dz = s * (1 - s) * 2 * (s - y) / len(x)
    return (x * dJ_dz).sum(), dJ_dz.sum()
""",
    "dot products and keyword calls": """
def backward(cache):
    x, y, z, s = cache
    dJ_dz = dsigma_dz(z=z) * dJ_dsigma(s=s, y=y)
    return torch.dot(dz_dw(x), dJ_dz), dJ_dz @ dz_db(x)
""",
    "in place on the helpers' results": """
def backward(cache):
    x, y, z, s = cache
    g = dsigma_dz(z)
    g.mul_(dJ_dsigma(s, y))
    return torch.einsum("i,i->", dz_dw(x), g), g.sum(dim=0)
""",
    "under torch.no_grad": """
def backward(cache):
    with torch.no_grad():
        x, y, z, s = cache
        dJ_dz = dsigma_dz(z) * dJ_dsigma(s, y)
        return (dz_dw(x) * dJ_dz).sum(), (dz_db(x) * dJ_dz).sum()
""",
}


@pytest.mark.parametrize("variant", BACKWARD_VARIANTS)
def test_backward_variants_pass_without_notes(variant):
    verdict = passes(lesson03.check_backward, notebook(backward=BACKWARD_VARIANTS[variant])["backward"])
    assert not verdict.notes, verdict.notes


def _backward_from(dJ_ds, reduce=torch.sum):
    """A backward pass built from another ∂J/∂σ or another batch reduction: the usual slips."""
    def wrong(cache):
        x, y, z, s = cache
        dJ_dz = s * (1 - s) * dJ_ds(s, y)
        return reduce(x * dJ_dz), reduce(dJ_dz)
    return wrong


@pytest.mark.parametrize("wrong, kind, diagnosis", [
    (_backward_from(lambda s, y: 2 * (s - y)), "factor", r"dJ/dw is wrong \(n=7.*divide by N \(N = 7"),
    (_backward_from(lambda s, y: 2 * (y - s) / len(s)), "sign", "dJ/dw is wrong.*wrong sign"),
    (_backward_from(lambda s, y: 2 * (s - y) / len(s), reduce=torch.mean), "factor", r"extra division by N \(N = 7"),
])
def test_wrong_backward_passes_fail_with_their_diagnosis(wrong, kind, diagnosis):
    message = fails(lesson03.check_backward, wrong, kind, diagnosis)
    assert "grader's own dJ_dsigma, dsigma_dz, dz_dw and dz_db in place of yours, so this mistake is in backward" in message


def test_backward_that_forgets_dz_db_times_x_on_b_fails_only_on_b():
    def b_with_x(cache):
        dw, _ = backward(cache)
        x, y, z, s = cache
        return dw, (x * s * (1 - s) * 2 * (s - y) / len(x)).sum()
    # was "recognised slip" ("it equals dJ/dw"): the diagnosis names the factor and the fix
    err, verdict = both(lesson03.check_backward, b_with_x)
    assert err.kind == verdict.kind == "wrong_factor", str(err)
    assert re.search(r"dJ/db is wrong \(n=64.*\): it multiplies by x, but ∂z/∂b = 1\. Fix: dJ/db = Σ dJ/dz, without x",
                     str(err)) and "dJ/dw is" not in str(err)
    assert verdict.figure and "dJ/db" in verdict.figure


def test_backward_that_skips_the_sigmoid_link_fails_even_with_right_helpers():
    ns = notebook(backward="""
def backward(cache):
    x, y, z, s = cache
    dJ_dz = dJ_dsigma(s, y)  # the sigmoid's local derivative is missing
    return (x * dJ_dz).sum(), dJ_dz.sum()
""")
    # was "recognised slip": the diagnosis names the dropped link, and where it sits in the chain
    message = fails(lesson03.check_backward, ns["backward"], "dropped", "dJ/dw is wrong",
                    r"the sigmoid's local derivative σ'\(z\) is missing: dJ/dz equals dJ/dσ",
                    r"The first wrong gradient is dJ/dz \(a step inside your function\); dJ/dw, dJ/db are wrong only "
                    "because of it", "mistake is in backward itself")
    assert "dJ/db is wrong because of it" not in message


@pytest.mark.parametrize("slip, kind, needle", [
    ("dJ_dz = torch.sigmoid(s) * (1 - torch.sigmoid(s)) * dJ_dsigma(s, y)", "wrong_point",
     "it evaluates σ' at s = σ\\(z\\), so the sigmoid is applied twice"),
    ("dJ_dz = z * (1 - z) * dJ_dsigma(s, y)", "wrong_point", r"it computes z·\(1 − z\)"),
    ("dJ_dz = (1 - s) * dJ_dsigma(s, y)", "sigmoid_part", r"by 1 − σ\(z\) only"),
    ("dJ_dz = (s * (1 - s)) ** 2 * dJ_dsigma(s, y)", "twice", r"σ'\(z\) is applied twice"),
])
def test_a_slip_inside_backward_is_named_where_it_is_with_the_graph_attached(slip, kind, needle):
    ns = notebook(backward=f"""
def backward(cache):
    x, y, z, s = cache
    {slip}
    return (dz_dw(x) * dJ_dz).sum(), (dz_db(x) * dJ_dz).sum()
""")
    err, verdict = both(lesson03.check_backward, ns["backward"])
    message = str(err)
    assert err.kind == verdict.kind == kind and re.search(needle, message.splitlines()[0]), message
    assert "(n=64," in message.splitlines()[0] and "The first wrong gradient is dJ/dz" in message
    assert verdict.figure and "first wrong" in verdict.figure and "dJ/dz" in verdict.figure


@pytest.mark.parametrize("dJ_dz", [
    "torch.cos(z) * dJ_dsigma(s, y)",
    "s * (1 - s) * dJ_dsigma(s, y) + 0.001 * x",
    "2 * z * (1 - z) * dJ_dsigma(s, y)",  # two slips at once
])
def test_a_backward_with_no_usual_slip_is_not_given_one(dJ_dz):
    from gradlab.variants import KINDS

    ns = notebook(backward=f"""
def backward(cache):
    x, y, z, s = cache
    dJ_dz = {dJ_dz}
    return (dz_dw(x) * dJ_dz).sum(), (dz_db(x) * dJ_dz).sum()
""")
    err, verdict = both(lesson03.check_backward, ns["backward"])
    assert err is not None and err.kind not in KINDS and "Fix:" not in str(err), str(err)
    assert verdict.figure is None


def test_backward_that_changes_the_cache_in_place_is_told_so():
    def in_place(cache):
        result = backward(cache)
        cache[3].mul_(2)
        return result
    fails(lesson03.check_backward, in_place, "changed input", r"changed its input `cache\[3\]` in place")


def test_backward_must_return_two_gradients():
    fails(lesson03.check_backward, lambda cache: (*backward(cache), None), "not a pair", "should return a pair")


def test_backward_must_return_0_dim_tensors():
    fails(lesson03.check_backward, lambda cache: tuple(g.reshape(1) for g in backward(cache)), "shape", "dJ/dw")
    fails(lesson03.check_backward, lambda cache: tuple(g.item() for g in backward(cache)), "type",
          "should be a tensor")


# --------------------------------------------------------------------------- one slip costs one cell
SLIPS = {
    "dJ_dsigma": ("def dJ_dsigma(s, y):\n    return 2 * (y - s) / s.shape[0]\n",
                  "your dJ_dsigma gives wrong values (every value has the wrong sign)"),
    "dsigma_dz": ("def dsigma_dz(z):\n    return z * (1 - z)\n", "your dsigma_dz gives wrong values"),
    "dz_dw": ("def dz_dw(x):\n    return torch.ones_like(x)\n", "your dz_dw gives wrong values"),
    "dz_db": ("def dz_db(x):\n    return x\n", "your dz_db gives wrong values"),
}


@pytest.mark.parametrize("helper", SLIPS)
def test_a_slip_in_a_helper_costs_backward_nothing_and_the_note_names_the_helper(helper):
    source, said = SLIPS[helper]
    ns = notebook(**{helper: source})
    err, _ = both(CHECKS[helper], ns[helper])
    assert err is not None, "the helper's own check should fail"
    verdict = passes(lesson03.check_backward, ns["backward"])
    (note,) = verdict.notes
    assert note.startswith("`backward` passed with the grader's own dJ_dsigma, dsigma_dz, dz_dw and dz_db in place of "
                           "yours. With your own it gives a wrong result"), note
    because = note.split("because ")[1].split(". Fix")[0]
    assert because.startswith(said) and because.count("your ") == 1, note
    assert note.endswith("Fix that (each has its own test) and `backward` will be right in your notebook too."), note
    # train_by_hand calls forward and backward: with the grader's, it passes too; its note names backward and the helper
    verdict = passes(lesson03.check_train_by_hand, ns["train_by_hand"])
    (note,) = verdict.notes
    because = note.split("because ")[1]
    assert "your backward gives wrong gradients" in because and f"your {helper}" in because, note
    assert "Fix those (each has its own test)" in note, note


def test_the_note_names_the_formula_mistake_of_each_wrong_helper():
    """The helpers are probed on the largest case (one value cannot show a pattern) and each wrong one is diagnosed
    from its own computation, as its own check would."""
    ns = notebook(dsigma_dz="def dsigma_dz(z):\n    return z * (1 - z)\n", dz_db="def dz_db(x):\n    return x\n")
    verdict = passes(lesson03.check_backward, ns["backward"])
    (note,) = verdict.notes
    assert ("your dsigma_dz gives wrong values (it computes z·(1 − z): that is σ' written for the output σ, applied "
            "to the input z) and your dz_db gives wrong values (it multiplies by x, but ∂z/∂b = 1)") in note, note


def test_the_wrong_sign_example_scores_the_helper_cell_only():
    """grader/examples' example-wrong-sign: its mistake is in dJ_dsigma, which backward and training use."""
    ns = notebook(dJ_dsigma="def dJ_dsigma(s, y):\n    return 2 * (y - s) / s.shape[0]  # the error taken as y − s\n")
    fails(lesson03.check_dJ_dsigma, ns["dJ_dsigma"], "sign", "wrong sign")
    for name in ("forward", "dsigma_dz", "dz_dw", "dz_db", "backward", "train_by_hand"):
        passes(CHECKS[name], ns[name])


@pytest.mark.parametrize("helper_source, said", [
    ("def dz_db(x):\n    raise NotImplementedError('Replace this line')\n", "your dz_db is not written yet"),
    ("def dJ_dsigma(s, y):\n    s = s.detach().requires_grad_()\n    return torch.autograd.grad(((s - y) ** 2).mean(), s)[0]\n",
     "your dJ_dsigma used autograd"),
    ("def dsigma_dz(z):\n    return z.sigmoid_() * 0 + 0.25\n", "your dsigma_dz changed its input `z` in place"),
    ("dz_dw = 3\n", "your dz_dw is missing or not a function"),
])
def test_a_broken_helper_is_named_in_the_note(helper_source, said):
    ns = notebook(helper=helper_source)
    verdict = passes(lesson03.check_backward, ns["backward"])
    (note,) = verdict.notes
    assert said in note, note


def test_a_helper_deleted_from_the_notebook_is_named_in_the_note():
    ns = notebook()
    del ns["dz_db"]
    verdict = passes(lesson03.check_backward, ns["backward"])
    (note,) = verdict.notes
    assert "your dz_db is missing or not a function" in note, note
    assert "dz_db" not in ns, "the check put the grader's dz_db into the notebook for good"


def test_an_endless_helper_is_cut_short(monkeypatch):
    monkeypatch.setattr(lesson03, "OWN_SECONDS", 0.3)
    ns = notebook(dz_dw="def dz_dw(x):\n    while True:\n        pass\n")
    verdict = passes(lesson03.check_backward, ns["backward"])
    (note,) = verdict.notes
    assert "your dz_dw was still running after 0.3 s" in note, note


def test_the_notebook_gets_its_own_helpers_back():
    ns = notebook()
    before = {name: ns[name] for name in ("forward", "backward", "dJ_dsigma", "dsigma_dz", "dz_dw", "dz_db")}
    lesson03.check_backward(ns["backward"])
    lesson03.check_train_by_hand(ns["train_by_hand"])
    assert all(ns[name] is fn for name, fn in before.items())


# --------------------------------------------------------------------------- training loop
TRAIN_VARIANTS = {
    "in place on its own copies": """
def train_by_hand(x, y, w, b, lr, passes):
    w, b = torch.tensor(float(w), dtype=x.dtype), torch.tensor(float(b), dtype=x.dtype)
    for _ in range(passes):
        for i in range(len(x)):
            dw, db = backward(forward(x[i:i + 1], y[i:i + 1], w, b)[1])
            w -= lr * dw
            b -= lr * db
    return w.item(), b.item()
""",
    "zip over 0-dim observations, under torch.no_grad": """
def train_by_hand(x, y, w, b, lr, passes):
    with torch.no_grad():
        for _ in range(passes):
            for x_i, y_i in zip(x, y):
                _, cache = forward(x_i.reshape(1), y_i.reshape(1), w, b)
                dw, db = backward(cache)
                w, b = w - lr * dw, b - lr * db
    return w, b
""",
    "under torch.inference_mode": """
def train_by_hand(x, y, w, b, lr, passes):
    with torch.inference_mode():
        for _ in range(passes):
            for i in range(len(x)):
                dw, db = backward(forward(x[i:i + 1], y[i:i + 1], w, b)[1])
                w, b = w - lr * dw, b - lr * db
    return float(w), float(b)
""",
    "inline, with the helpers": """
def train_by_hand(x, y, w, b, lr, passes):
    for _ in range(passes):
        for i in range(len(x)):
            z = w * x[i:i + 1] + b
            dJ_dz = dsigma_dz(z) * dJ_dsigma(torch.sigmoid(z), y[i:i + 1])
            w, b = w - lr * (dz_dw(x[i:i + 1]) * dJ_dz).sum(), b - lr * (dz_db(x[i:i + 1]) * dJ_dz).sum()
    return float(w), float(b)
""",
}


@pytest.mark.parametrize("variant", TRAIN_VARIANTS)
def test_training_variants_pass_without_notes(variant):
    verdict = passes(lesson03.check_train_by_hand, notebook(t=TRAIN_VARIANTS[variant])["train_by_hand"])
    assert not verdict.notes, verdict.notes


def test_a_loop_that_calls_right_helpers_the_wrong_way_passes_with_a_note_that_says_so():
    """0-dim observations: the grader's forward and backward cope, the lesson's dJ_dsigma (len of shape (N,)) does not."""
    ns = notebook(t="""
def train_by_hand(x, y, w, b, lr, passes):
    for _ in range(passes):
        for i in range(len(x)):
            dw, db = backward(forward(x[i], y[i], w, b)[1])
            w, b = w - lr * dw, b - lr * db
    return float(w), float(b)
""")
    verdict = passes(lesson03.check_train_by_hand, ns["train_by_hand"])
    (note,) = verdict.notes
    assert "With your own it raised IndexError" in note and "check how it calls them" in note, note


def test_a_wrong_forward_costs_training_nothing_and_is_named():
    ns = notebook(forward="""
def forward(x, y, w, b):
    z = w * x + b
    s = torch.exp(-z) / (1 + torch.exp(-z))  # 1 − σ(z), not σ(z)
    return ((s - y) ** 2).mean(), (x, y, z, s)
""")
    fails(lesson03.check_forward, ns["forward"], "values", "J is wrong")
    verdict = passes(lesson03.check_train_by_hand, ns["train_by_hand"])
    (note,) = verdict.notes
    assert "your forward gives a wrong cost or cache" in note and "backward" not in note.split("because")[1], note


def _loop(x_for_w=None, sign=1.0, passes=None, full_batch=False, x_of=lambda x: x):
    """train_by_hand with one deliberate slip (inline gradients, so the grader's forward and backward do not help)."""
    def train(x, y, w, b, lr, n_passes):
        x = x_of(x)
        for _ in range(n_passes if passes is None else passes):
            if full_batch:
                dw, db = backward(forward(x, y, w, b)[1])
                w, b = w - sign * lr * dw, b - sign * lr * db
                continue
            for i in range(len(x)):
                x_, y_ = x[i:i + 1], y[i:i + 1]
                s = torch.sigmoid(w * x_ + b)
                dJ_dz = s * (1 - s) * 2 * (s - y_)
                dw = ((x[:1] if x_for_w == "first" else x_) * dJ_dz).sum()
                w, b = w - sign * lr * dw, b - sign * lr * dJ_dz.sum()
        return float(w), float(b)
    return train


def test_the_slip_free_loop_helper_is_right():
    passes(lesson03.check_train_by_hand, _loop())


@pytest.mark.parametrize("wrong, kind, diagnosis", [
    (_loop(x_for_w="first"), "stale x", "first observation's x"),
    (_loop(sign=-1.0), "uphill", "steps uphill"),
    (_loop(passes=1), "one pass", "only one pass"),
    (_loop(full_batch=True), "full batch", "full-batch gradient descent"),
    (_loop(x_of=torch.abs), "training", "side by side"),  # a loop that only works for positive inputs
])
def test_known_training_mistakes_get_named(wrong, kind, diagnosis):
    message = fails(lesson03.check_train_by_hand, wrong, kind, diagnosis)
    assert "grader's own forward and backward in place of yours, so this mistake is in train_by_hand itself" in message


def test_a_hard_coded_training_result_fails():
    fails(lesson03.check_train_by_hand, lambda x, y, w, b, lr, passes: (2.047933, -1.975406), "training",
          "(?s)should end at.*side by side")


def test_a_loop_that_ignores_the_learning_rate_fails():
    fails(lesson03.check_train_by_hand, lambda x, y, w, b, lr, passes: train_by_hand(x, y, w, b, 1e-4, passes),
          "training", "should end at")


def test_training_results_may_be_tensors_but_not_lists():
    def as_tensors(x, *args):  # a loop that never calls float(): 0-dim tensors in the inputs' dtype
        return tuple(torch.tensor(v, dtype=x.dtype, device=x.device) for v in train_by_hand(x, *args))
    passes(lesson03.check_train_by_hand, as_tensors)
    fails(lesson03.check_train_by_hand, lambda *args: tuple(torch.tensor([v, v]) for v in train_by_hand(*args)),
          "not a number", "as one number")
    fails(lesson03.check_train_by_hand, lambda *args: (list(train_by_hand(*args)), 0.0), "not a number",
          "as a number, but returned list")


def test_a_diverging_loop_is_told_so():
    fails(lesson03.check_train_by_hand, lambda *args: (float("nan"), 0.0), "diverged", "diverged")


def test_training_must_not_change_the_data_in_place():
    def shuffles(x, y, w, b, lr, passes):
        result = train_by_hand(x, y, w, b, lr, passes)
        y.zero_()
        return result
    fails(lesson03.check_train_by_hand, shuffles, "changed input", "changed its input `y` in place")


def test_the_reference_loop_is_torch_sgd_and_the_stale_x_replay_is_that_loop():
    """The grader's plain-update reference takes the same steps as torch.optim.SGD (the lesson's loop), and its
    replay of the stale-x mistake ends where the lesson's buggy loop ends."""
    x, y = torch.tensor([0.3, -1.2, 0.8], dtype=torch.float64), torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
    w = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(-0.4, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([w, b], lr=0.5)
    for _ in range(3):
        for i in range(3):
            optimizer.zero_grad()
            ((torch.sigmoid(w * x[i] + b) - y[i]) ** 2).backward()
            optimizer.step()
    assert lesson03.reference_training(x, y, 0.7, -0.4, 0.5, 3) == pytest.approx((w.item(), b.item()), abs=1e-12)
    assert lesson03.reference_training(x, y, 0.7, -0.4, 0.5, 3, x_for_w=x[0]) == pytest.approx(
        _loop(x_for_w="first")(x, y, 0.7, -0.4, 0.5, 3), abs=1e-12)


def test_a_note_after_a_helper_used_autograd_names_its_case_once():
    ns = notebook(dJ_dsigma="""
def dJ_dsigma(s, y):
    s = s.detach().requires_grad_()
    ((s - y) ** 2).mean().backward()
    return s.grad
""")
    verdict = passes(lesson03.check_backward, ns["backward"])
    (note,) = verdict.notes
    assert "With your own it used autograd (" in note and "your dJ_dsigma used autograd" in note, note
    own = note.split("With your own it ", 1)[1].split(", because", 1)[0]
    case = own.split("(", 1)[1].split(")", 1)[0]
    assert own.count(f"({case})") == 1, note
