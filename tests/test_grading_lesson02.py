"""Lesson 2's hidden checks: the lesson's solutions and every valid variant pass, the classic mistakes (and the
holes a strict review found) fail with a message that names the mistake. The important cases run both ways the
grader runs a check (locally, and recorded then replayed: tests/grading_modes.py)."""
import re
import time
from pathlib import Path

import pytest
import torch

import gradlab
from course import solution_namespace
from grading_modes import both
from gradlab.check import autograd_grads
from gradlab.grading import lesson02

SOLUTIONS = solution_namespace("02-gradient-descent/gradient-descent.ipynb")
dJ_dw, dJ_db, gd_step, fit = (SOLUTIONS[n] for n in ("dJ_dw", "dJ_db", "gd_step", "fit"))


def passes(check, fn):
    err, verdict = both(check, fn)
    assert err is None, err
    return verdict


def fails(check, fn, kind, *needles):
    """The check fails ``fn`` both ways, with this kind and a message holding every needle."""
    err, verdict = both(check, fn)
    assert err is not None, "the check passed"
    message = str(err)
    assert getattr(err, "kind", None) == kind == verdict.kind, (getattr(err, "kind", None), verdict.kind, message)
    for needle in needles:
        assert needle in message, message
    return message


def namespace(source):
    """Functions defined as in a student's notebook: one namespace, so they call each other by name."""
    ns = {"torch": torch}
    exec(source, ns)
    return ns


def J(x, y, w, b):
    return ((torch.sigmoid(w * x + b) - y) ** 2).mean()


def make_fit(lr=20.0, max_steps=10_000, step=None, record=True):
    """A correct loop (with the lesson's gd_step unless ``step`` is given)."""
    step = step or gd_step

    def fit(x, y, w, b, threshold):
        costs = [J(x, y, w, b).item()]
        for _ in range(max_steps):
            if costs[-1] < threshold:
                break
            w, b = step(x, y, w, b, lr)
            costs.append(J(x, y, w, b).item())
        return w, b, costs
    return fit


# --------------------------------------------------------------------------- the solutions
def test_the_solutions_pass_both_ways():
    for check, fn in ((lesson02.check_dJ_dw, dJ_dw), (lesson02.check_dJ_db, dJ_db), (lesson02.check_gd_step, gd_step),
                      (lesson02.check_fit, fit)):
        verdict = passes(check, fn)
        assert not verdict.notes, verdict.notes


def test_no_hidden_check_module_holds_a_hand_formula():
    """Students can read gradlab/grading: the formulas the exercises ask for must not be there."""
    for module in ("lesson01.py", "lesson02.py"):
        code = "\n".join(line.split("#")[0] for line in (Path(lesson02.__file__).parent / module).read_text().splitlines()
                         if not line.strip().startswith(('"', "'")))
        for pattern in (r"\(1 *- *\w+\)", r"\w+ *\* *\(1 *-", r"- *lr *\*", r"\*\* *2\)\.(sum|mean)", r"exp\(-[a-zA-Z(]"):
            assert not re.search(pattern, code), f"{module} holds {pattern}"


# --------------------------------------------------------------------------- the partial derivatives
def test_partial_variants_pass():
    def with_where(x, y, w, b):
        z = w * x + b
        h = torch.where(z >= 0, 1 / (1 + torch.exp(-z)), torch.exp(z) / (1 + torch.exp(z)))
        return 2 * torch.mean((h - y) * h * (1 - h) * x)

    def own_copy_in_place(x, y, w, b):
        h = torch.sigmoid(w * x + b)
        e = h - y
        e.mul_(h).mul_(1 - h).mul_(2 / len(x))
        return e.sum()

    def device_agnostic(x, y, w, b):
        h = torch.ones_like(x) / (torch.ones_like(x) + torch.exp(-(w * x + b)))
        return (x.new_tensor(2.0) * (h - y) * h * (1 - h) * x).sum() / x.shape[0]

    def float64_inside(x, y, w, b):
        return dJ_dw(x.double(), y.double(), w.double(), b.double()).to(x.dtype)

    for fn in (with_where, float64_inside, device_agnostic):
        passes(lesson02.check_dJ_dw, fn)
    passes(lesson02.check_dJ_db, own_copy_in_place)
    passes(lesson02.check_dJ_db, lambda x, y, w, b: (2 * (torch.sigmoid(w * x + b) - y) * torch.sigmoid(w * x + b)
                                                     * (1 - torch.sigmoid(w * x + b))).mean())


def test_partials_name_2_over_n_lost_from_every_case():
    # a sum with neither the 2 nor the 1/N: ½, 3.5, 32, 284.5 in the four sizes, never one constant
    def summed(x, y, w, b):
        h = torch.sigmoid(w * x + b)
        return ((h - y) * h * (1 - h) * x).sum()
    message = fails(lesson02.check_dJ_dw, summed, "factor", "∂J/∂w is wrong (n=1",
                    "N/2 × the expected one in every case (N = 1: ½, N = 7: 3.5, N = 64: 32, N = 569: 284.5)",
                    "both factors of 2/N are missing")
    assert "the chain rule" not in message and "derivative of x² is 2x" not in message


def test_partials_name_the_classic_mistakes():
    fails(lesson02.check_dJ_dw, lambda x, y, w, b: dJ_dw(x, y, w, b) / 2, "factor", "missing factor 2")
    fails(lesson02.check_dJ_dw, lambda x, y, w, b: dJ_dw(x, y, w, b) * x.shape[0], "factor", "divide by N")
    fails(lesson02.check_dJ_db, lambda x, y, w, b: -dJ_db(x, y, w, b), "sign", "wrong sign")
    # the x factor does not belong in ∂J/∂b (was "values": the diagnosis names it)
    fails(lesson02.check_dJ_db, dJ_dw, "wrong_factor", "∂J/∂b is wrong", "it multiplies by x, but ∂z/∂b = 1")
    fails(lesson02.check_dJ_dw, lambda x, y, w, b: dJ_dw(x, y, w, torch.zeros_like(b)), "values", "∂J/∂w is wrong")


def _partial_with(local, reduce=torch.mean):
    """A partial derivative with the per-observation term after the square's 2(h − y) replaced: local(x, y, w, h, z)."""
    def wrong(x, y, w, b):
        z = w * x + b
        h = torch.sigmoid(z)
        return reduce(local(x, y, w, h, z))
    return wrong


# Formula mistakes the diagnosis names, from the computation the check declares (z = w·x + b → h = σ(z) → J), with
# the fix in the lesson's notation: only when the same mistake fits every case tried.
NAMED = [
    (lesson02.check_dJ_dw, _partial_with(lambda x, y, w, h, z: 2 * (h - y) * z * (1 - z) * x), "wrong_point",
     "it computes z·(1 − z): that is σ' written for the output σ, applied to the input z"),
    (lesson02.check_dJ_dw, _partial_with(lambda x, y, w, h, z: 2 * (h - y) * h * (1 - h)), "dropped",
     "the factor x is missing: ∂z/∂w = x. Fix: ∂J/∂w = Σ ∂J/∂z · x."),
    (lesson02.check_dJ_dw, _partial_with(lambda x, y, w, h, z: 2 * (h - y) * h * (1 - h) * x * x), "twice",
     "x is multiplied in twice"),
    (lesson02.check_dJ_dw, _partial_with(lambda x, y, w, h, z: 2 * (h - y) * h * (1 - h) * x[0]), "stale_input",
     "the first observation's x in every term"),
    (lesson02.check_dJ_dw, _partial_with(lambda x, y, w, h, z: 2 * (h - y) * h * (1 - h) * w), "wrong_factor",
     "it multiplies by w where x belongs"),
    (lesson02.check_dJ_db, _partial_with(lambda x, y, w, h, z: 2 * (h - y)), "dropped",
     "the sigmoid's local derivative σ'(z) is missing"),
    (lesson02.check_dJ_db, _partial_with(lambda x, y, w, h, z: 2 * h * h * (1 - h)), "error_term",
     "it uses the prediction h where the error h − y belongs"),
    (lesson02.check_dJ_db, _partial_with(lambda x, y, w, h, z: 2 * (h - y) * (1 - h)), "sigmoid_part",
     "1 − σ(z) only"),
]


@pytest.mark.parametrize("check, wrong, kind, needle", NAMED, ids=[f"{c.check_name}-{k}" for c, _, k, _ in NAMED])
def test_partials_name_formula_mistakes_with_the_graph_attached(check, wrong, kind, needle):
    err, verdict = both(check, wrong)
    message = str(err)
    assert err.kind == verdict.kind == kind and needle in message.splitlines()[0], message
    assert "(n=569," in message.splitlines()[0] and "Fix:" in message.splitlines()[0]
    assert verdict.figure and "first wrong" in verdict.figure and "∂J/∂z" in verdict.figure


@pytest.mark.parametrize("check, wrong", [
    (lesson02.check_dJ_dw, _partial_with(lambda x, y, w, h, z: 2 * (h - y) * (1 - torch.tanh(z) ** 2) * x)),
    (lesson02.check_dJ_dw, _partial_with(lambda x, y, w, h, z: 2 * (h - y) * h * (1 - h) * x + 0.01 * x ** 3)),
    (lesson02.check_dJ_db, _partial_with(lambda x, y, w, h, z: 2 * (h - y) * h * (1 - h) * (x + 1))),
    (lesson02.check_dJ_db, _partial_with(lambda x, y, w, h, z: 2 * (y - h) * h)),  # two slips: sign and σ only
])
def test_partials_do_not_name_a_mistake_that_does_not_fit_every_case(check, wrong):
    from gradlab.variants import KINDS

    err, verdict = both(check, wrong)
    assert err is not None and err.kind not in KINDS and "Fix:" not in str(err), str(err)


def test_a_sum_for_the_mean_is_still_told_from_the_first_case_that_shows_it():
    """A plain constant factor on every case needs no formula: the message is the one the check always gave."""
    message = fails(lesson02.check_dJ_dw, _partial_with(lambda x, y, w, h, z: 2 * (h - y) * h * (1 - h) * x,
                                                        reduce=torch.sum), "factor", "divide by N")
    assert "(n=7," in message.splitlines()[0]


def test_partials_reject_constants_and_non_answers():
    fails(lesson02.check_dJ_dw, lambda x, y, w, b: torch.tensor(0.0125, dtype=x.dtype, device=x.device), "values", "∂J/∂w")
    fails(lesson02.check_dJ_dw, lambda x, y, w, b: None, "none", "∂J/∂w")


def test_partials_must_follow_the_input_dtype_stay_tensors_and_be_0_dim():
    fails(lesson02.check_dJ_dw, lambda x, y, w, b: dJ_dw(x, y, w, b).item(), "type", "should be a tensor")
    fails(lesson02.check_dJ_db, lambda x, y, w, b: dJ_db(x, y, w, b).double(), "placement", "should follow the inputs")
    message = fails(lesson02.check_dJ_db, lambda x, y, w, b: dJ_db(x, y, w, b).reshape(1), "shape",
                    "right value but shape (1,)", "0-dim")
    assert "(N, N)" not in message


def test_a_partial_that_changes_its_input_fails():
    def in_place_y(x, y, w, b):
        y -= torch.sigmoid(w * x + b)
        return (-2 * y * (1 - y) * 0).sum()
    fails(lesson02.check_dJ_dw, in_place_y, "changed input", "changed its input `y` in place")


def test_an_unwritten_function_says_so():
    def stub(*args):
        raise NotImplementedError("Replace this line with your solution")
    for check in (lesson02.check_dJ_dw, lesson02.check_dJ_db, lesson02.check_gd_step, lesson02.check_fit):
        fails(check, stub, "not written", "not written yet")


# --------------------------------------------------------------------------- autograd is not a hand derivative
def _cost(x, y, w, b):
    return ((torch.sigmoid(w * x + b) - y) ** 2).mean()


def _backward(x, y, w, b):
    w, b = w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    _cost(x, y, w, b).backward()
    return w.grad, b.grad


def _autograd_grad(x, y, w, b):
    w, b = w.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
    return torch.autograd.grad(_cost(x, y, w, b), (w, b))


SAVED_GRAD = torch.autograd.grad


def _saved_reference(x, y, w, b):
    w, b = w.detach().clone(), b.detach().clone()
    w.requires_grad = True
    b.requires_grad = True
    return SAVED_GRAD(_cost(x, y, w, b), (w, b))


def _factory(x, y, w, b):
    w = torch.tensor(float(w), dtype=x.dtype, device=x.device, requires_grad=True)
    b = torch.tensor(float(b), dtype=x.dtype, device=x.device, requires_grad=True)
    return SAVED_GRAD(_cost(x, y, w, b), (w, b))


def _parameter(x, y, w, b):
    w, b = torch.nn.Parameter(w.detach().clone()), torch.nn.Parameter(b.detach().clone())
    return SAVED_GRAD(_cost(x, y, w, b), (w, b))


def _func_grad(x, y, w, b):
    return torch.func.grad(_cost, argnums=(2, 3))(x, y, w, b)


AUTOGRAD_WAYS = [_backward, _autograd_grad, _saved_reference, _factory, _parameter, _func_grad]


@pytest.mark.parametrize("way", AUTOGRAD_WAYS)
@pytest.mark.parametrize("check, which", [(lesson02.check_dJ_dw, 0), (lesson02.check_dJ_db, 1)])
def test_autograd_fails_the_partial_derivatives(check, which, way):
    name = "dJ_dw" if which == 0 else "dJ_db"
    fails(check, lambda x, y, w, b: way(x, y, w, b)[which], "autograd", f"`{name}` used autograd", "derived by hand")


def test_autograd_fails_the_step_and_the_loop():
    def step(x, y, w, b, lr):
        dw, db = _backward(x, y, w, b)
        return w - lr * dw, b - lr * db
    fails(lesson02.check_gd_step, step, "autograd", "`gd_step` used autograd")
    fails(lesson02.check_fit, make_fit(step=step), "autograd", "`fit` used autograd")


# --------------------------------------------------------------------------- one step
def test_step_variants_pass():
    def as_list(x, y, w, b, lr):
        return list(gd_step(x, y, w, b, lr))

    def own_copies_in_place(x, y, w, b, lr):
        dw, db = dJ_dw(x, y, w, b), dJ_db(x, y, w, b)
        w_new, b_new = w.clone(), b.clone()
        w_new -= lr * dw
        b_new.sub_(lr * db)
        return w_new, b_new

    def stacked(x, y, w, b, lr):
        theta = torch.stack([w, b]) - lr * torch.stack([dJ_dw(x, y, w, b), dJ_db(x, y, w, b)])
        return theta[0], theta[1]

    for fn in (as_list, own_copies_in_place, stacked):
        passes(lesson02.check_gd_step, fn)


def test_step_mistakes_get_their_own_message():
    def uphill(x, y, w, b, lr):
        return w + lr * dJ_dw(x, y, w, b), b + lr * dJ_db(x, y, w, b)

    def no_rate(x, y, w, b, lr):
        return w - dJ_dw(x, y, w, b), b - dJ_db(x, y, w, b)

    def one_after_the_other(x, y, w, b, lr):
        w = w - lr * dJ_dw(x, y, w, b)
        return w, b - lr * dJ_db(x, y, w, b)

    fails(lesson02.check_gd_step, uphill, "uphill", "uphill")
    fails(lesson02.check_gd_step, no_rate, "no learning rate", "learning rate is missing")
    fails(lesson02.check_gd_step, one_after_the_other, "stale gradient", "NEW w")
    fails(lesson02.check_gd_step, lambda x, y, w, b, lr: (w, b), "zeros", "the step in w")
    fails(lesson02.check_gd_step, lambda x, y, w, b, lr: float(gd_step(x, y, w, b, lr)[0]), "not a pair",
          "should return a pair")


def test_a_step_of_python_numbers_fails_with_what_is_wanted():
    def numbers(x, y, w, b, lr):
        w_new, b_new = gd_step(x, y, w, b, lr)
        return w_new.item(), b_new.item()
    fails(lesson02.check_gd_step, numbers, "type", "w_new should be a 0-dim tensor, but it is a float", ".item()")


def test_a_step_that_moves_the_callers_parameters_fails():
    def in_place(x, y, w, b, lr):
        dw, db = dJ_dw(x, y, w, b), dJ_db(x, y, w, b)
        w -= lr * dw
        b -= lr * db
        return w, b
    fails(lesson02.check_gd_step, in_place, "changed input", "changed its input `w` in place")


def test_step_is_graded_with_the_course_partials_and_says_so():
    student = namespace(
        "def dJ_dw(x, y, w, b):\n    h = torch.sigmoid(w * x + b)\n    return ((h - y) * h * (1 - h) * x).mean()\n\n"
        "def dJ_db(x, y, w, b):\n    raise NotImplementedError\n\n"
        "def gd_step(x, y, w, b, lr):\n    return w - lr * dJ_dw(x, y, w, b), b - lr * dJ_db(x, y, w, b)\n")
    fails(lesson02.check_dJ_dw, student["dJ_dw"], "factor", "missing factor 2")
    verdict = passes(lesson02.check_gd_step, student["gd_step"])
    assert any("`dJ_dw` and `dJ_db` in its place" in note for note in verdict.notes), verdict.notes
    assert student["gd_step"].__globals__["dJ_db"] is student["dJ_db"]  # the student's own are put back


# --------------------------------------------------------------------------- the threshold
def test_threshold_rule_on_the_cell_data():
    X, y = gradlab.cell_tensors("cpu", dtype=torch.float64)
    x = X[:, 0]
    best = lesson02.best_cost(x, y)
    constant = float(y.var(unbiased=False))
    assert 0.05 < best < constant
    assert lesson02.threshold_for(x, y) == pytest.approx(best + lesson02.GAP_LEFT * (constant - best))
    # A long plain descent from lesson 1's start ends at the same minimum.
    w, b = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    for _ in range(3000):
        w, b = gd_step(x, y, w, b, 20.0)
    assert float(lesson02.cost(x, y, w, b)) == pytest.approx(best, abs=1e-9)


def test_best_cost_on_fresh_data_matches_a_long_descent():
    x, y = lesson02.cell_like(torch.Generator().manual_seed(3), 400)
    w, b = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    for _ in range(4000):
        (dw, db) = autograd_grads(lambda w_, b_: lesson02.cost(x, y, w_, b_), w, b)
        w, b = w - 20.0 * dw, b - 20.0 * db
    assert lesson02.best_cost(x, y) == pytest.approx(float(lesson02.cost(x, y, w, b)), abs=1e-8)


def test_reference_step_and_cost_agree_with_the_formulas():
    gen = torch.Generator().manual_seed(9)
    x, y = torch.randn(30, generator=gen, dtype=torch.float64), (torch.rand(30, generator=gen) < 0.5).double()
    w, b = torch.tensor(1.3, dtype=torch.float64), torch.tensor(-0.4, dtype=torch.float64)
    assert float(lesson02.cost(x, y, w, b)) == pytest.approx(float(J(x, y, w, b)), rel=1e-14)
    w_new, b_new = lesson02.sgd_step(x, y, w, b, 2.5)
    w_hand, b_hand = gd_step(x, y, w, b, 2.5)
    torch.testing.assert_close((w_new, b_new), (w_hand, b_hand))


# --------------------------------------------------------------------------- the loop
def test_loop_variants_pass():
    def tensor_costs_and_while(x, y, w, b, threshold):
        costs = [J(x, y, w, b)]
        while costs[-1] >= threshold and len(costs) <= 5000:
            w, b = gd_step(x, y, w, b, 10.0)
            costs.append(J(x, y, w, b))
        return w, b, costs

    def momentum(x, y, w, b, threshold):
        vw = vb = 0.0
        costs = [J(x, y, w, b).item()]
        while costs[-1] >= threshold and len(costs) <= 10_000:
            vw = 0.5 * vw + dJ_dw(x, y, w, b)
            vb = 0.5 * vb + dJ_db(x, y, w, b)
            w, b = w - 5.0 * vw, b - 5.0 * vb
            costs.append(J(x, y, w, b).item())
        return w, b, costs

    for fn in (make_fit(5.0), tensor_costs_and_while, momentum):
        passes(lesson02.check_fit, fn)


def test_a_correct_but_slow_loop_passes_on_a_busy_machine():
    """The verdict on a loop comes from its steps, not from the clock: a loop 5-10 times slower than the lesson's
    (as on a loaded 2-core machine) gets the same verdict."""
    def sluggish(x, y, w, b, threshold):
        time.sleep(0.2)
        return fit(x, y, w, b, threshold)
    lesson02.check_fit(sluggish)


def test_fixed_number_of_steps_fails():
    def fixed_recording_every_cost(x, y, w, b, threshold):
        costs = [J(x, y, w, b).item()]
        for _ in range(300):
            w, b = gd_step(x, y, w, b, 20.0)
            costs.append(J(x, y, w, b).item())
        return w, b, costs

    def fixed_keeping_only_the_ends(x, y, w, b, threshold):
        start = J(x, y, w, b).item()
        for _ in range(300):
            w, b = gd_step(x, y, w, b, 20.0)
        return w, b, [start, J(x, y, w, b).item()]

    fails(lesson02.check_fit, fixed_recording_every_cost, "kept going", "but the loop went on to step 300",
          "first point where J < threshold")
    fails(lesson02.check_fit, fixed_keeping_only_the_ends, "kept going", "is already under the threshold",
          "should return at once", "Yours went on for 1 step.")


def test_a_loop_that_ignores_its_threshold_argument_fails():
    def own_threshold(x, y, w, b, threshold):
        return make_fit()(x, y, w, b, lesson02.threshold_for(x, y))
    fails(lesson02.check_fit, own_threshold, "kept going", "threshold above J at the start", "should return at once")


def test_a_loop_that_takes_one_step_too_many_or_always_one_step_fails():
    def one_more(x, y, w, b, threshold):
        w, b, costs = make_fit()(x, y, w, b, threshold)
        w, b = gd_step(x, y, w, b, 20.0)
        return w, b, costs + [J(x, y, w, b).item()]

    def do_while(x, y, w, b, threshold):
        costs = [J(x, y, w, b).item()]
        while True:
            w, b = gd_step(x, y, w, b, 20.0)
            costs.append(J(x, y, w, b).item())
            if costs[-1] < threshold:
                return w, b, costs

    fails(lesson02.check_fit, one_more, "kept going", "went on to step")
    fails(lesson02.check_fit, do_while, "kept going", "should return at once", "the first one included")


def test_a_crawling_loop_fails_on_the_threshold():
    fails(lesson02.check_fit, make_fit(lr=0.05, max_steps=200), "above threshold", "not under the threshold",
          "learning rate")


def test_a_crawling_loop_that_gets_there_fails_on_its_steps(monkeypatch):
    monkeypatch.setattr(lesson02, "MAX_STEPS", 300)  # the rule, on a smaller scale: lr 1 needs 391 to 977 steps
    fails(lesson02.check_fit, make_fit(lr=1.0, max_steps=100_000), "too many steps", "it may take at most 300",
          "larger learning rate")


def test_a_loop_that_never_stops_is_cut_off():
    x, y = lesson02.cell_like(torch.Generator().manual_seed(1), 300)

    def forever(x, y, w, b, threshold):
        while True:
            w, b = gd_step(x, y, w, b, 1e-6)

    with pytest.raises(AssertionError, match="still running after 0.3 s") as err:
        lesson02.run_fit(forever, x, y, 0.0, 0.0, lesson02.threshold_for(x, y), "test", seconds=0.3)
    assert err.value.kind == "timeout"


def test_an_endless_loop_in_the_check_fails_the_same_way_in_replay(monkeypatch):
    monkeypatch.setattr(lesson02, "FIT_SECONDS", 0.3)

    def forever(x, y, w, b, threshold):
        while True:
            pass
    fails(lesson02.check_fit, forever, "timeout", "`fit` was still running after 0.3 s")


def test_hard_coded_answers_fail():
    X, y = gradlab.cell_tensors("cpu", dtype=torch.float64)
    w_cell, b_cell, _ = make_fit()(X[:, 0], y, torch.tensor(1.0, dtype=torch.float64),
                                   torch.tensor(0.0, dtype=torch.float64), lesson02.threshold_for(X[:, 0], y))

    def memorised(x, y, w, b, threshold):
        w_, b_ = w_cell.to(x.dtype).to(x.device), b_cell.to(x.dtype).to(x.device)
        return w_, b_, [float(lesson02.cost(x, y, w_, b_))]

    def ignores_its_start(x, y, w, b, threshold):
        return make_fit()(x, y, w_cell.to(x.dtype).to(x.device), b_cell.to(x.dtype).to(x.device), threshold)

    fails(lesson02.check_fit, memorised, "costs")
    fails(lesson02.check_fit, ignores_its_start, "costs", "Start from the w and b")


def test_the_loop_must_report_its_costs():
    def no_costs(x, y, w, b, threshold):
        w, b, _ = make_fit()(x, y, w, b, threshold)
        return w, b

    def stale_last_cost(x, y, w, b, threshold):
        w, b, costs = make_fit()(x, y, w, b, threshold)
        w, b = gd_step(x, y, w, b, 20.0)
        return w, b, costs

    def python_numbers(x, y, w, b, threshold):
        w, b, costs = make_fit()(x, y, w, b, threshold)
        return w.item(), b.item(), costs

    def other_dtype(x, y, w, b, threshold):
        w, b, costs = make_fit()(x, y, w, b, threshold)
        return w.double(), b.double(), costs

    def one_element_vectors(x, y, w, b, threshold):
        w, b, costs = make_fit()(x, y, w, b, threshold)
        return w.reshape(1), b.reshape(1), costs

    fails(lesson02.check_fit, no_costs, "fit result", "should return (w, b, costs)")
    fails(lesson02.check_fit, other_dtype, "placement", "returned w as float64 on cpu; it should follow x: float32")
    fails(lesson02.check_fit, one_element_vectors, "shape", "0-dim tensor, but it has shape (1,)")
    fails(lesson02.check_fit, stale_last_cost, "costs", "costs[-1]")
    fails(lesson02.check_fit, python_numbers, "type", "should return w as a 0-dim tensor")


def test_a_loop_that_moves_its_start_in_place_fails():
    def in_place(x, y, w, b, threshold):
        costs = [J(x, y, w, b).item()]
        while costs[-1] >= threshold and len(costs) <= 10_000:
            dw, db = dJ_dw(x, y, w, b), dJ_db(x, y, w, b)
            w -= 20.0 * dw
            b -= 20.0 * db
            costs.append(J(x, y, w, b).item())
        return w, b, costs
    fails(lesson02.check_fit, in_place, "changed input", "changed its input `w` in place")


def test_fit_is_graded_with_the_course_step():
    student = namespace(
        "def gd_step(x, y, w, b, lr):\n    raise NotImplementedError\n\n"
        "def fit(x, y, w, b, threshold):\n"
        "    J = lambda w, b: ((torch.sigmoid(w * x + b) - y) ** 2).mean().item()\n"
        "    costs = [J(w, b)]\n"
        "    while costs[-1] >= threshold and len(costs) <= 10_000:\n"
        "        w, b = gd_step(x, y, w, b, 20.0)\n"
        "        costs.append(J(w, b))\n"
        "    return w, b, costs\n")
    passes(lesson02.check_fit, student["fit"])
