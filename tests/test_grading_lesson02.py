"""Lesson 2's hidden checks: the lesson's solutions pass; the classic mistakes fail with a useful message."""
import pytest
import torch

import gradlab
from gradlab.check import autograd_grads
from gradlab.grading import lesson02

# --------------------------------------------------------------------------- the lesson's solutions


def dJ_dw(x, y, w, b):
    h = 1 / (1 + torch.exp(-(w * x + b)))
    return (2 * (h - y) * h * (1 - h) * x).mean()


def dJ_db(x, y, w, b):
    h = 1 / (1 + torch.exp(-(w * x + b)))
    return (2 * (h - y) * h * (1 - h)).mean()


def gd_step(x, y, w, b, lr):
    dw, db = dJ_dw(x, y, w, b), dJ_db(x, y, w, b)
    return w - lr * dw, b - lr * db


def make_fit(lr=20.0, max_steps=10_000, step=gd_step):
    def fit(x, y, w, b, threshold):
        def J(w, b):
            return ((1 / (1 + torch.exp(-(w * x + b))) - y) ** 2).mean()

        costs = [J(w, b).item()]
        for _ in range(max_steps):
            if costs[-1] < threshold:
                break
            w, b = step(x, y, w, b, lr)
            costs.append(J(w, b).item())
        return w, b, costs

    return fit


def fails(check, fn, *needles):
    with pytest.raises(AssertionError) as err:
        check(fn)
    message = str(err.value)
    for needle in needles:
        assert needle in message, message
    return message


# --------------------------------------------------------------------------- the partial derivatives
def test_the_solutions_pass():
    lesson02.check_dJ_dw(dJ_dw)
    lesson02.check_dJ_db(dJ_db)
    lesson02.check_gd_step(gd_step)


def test_partials_name_the_classic_mistakes():
    def no_two(x, y, w, b):
        return dJ_dw(x, y, w, b) / 2

    def summed(x, y, w, b):
        return dJ_dw(x, y, w, b) * x.shape[0]

    def flipped(x, y, w, b):
        return -dJ_db(x, y, w, b)

    fails(lesson02.check_dJ_dw, no_two, "missing factor 2")
    fails(lesson02.check_dJ_dw, summed, "divide by N")
    fails(lesson02.check_dJ_db, flipped, "wrong sign")


def test_partials_reject_wrong_formulas_and_constants():
    fails(lesson02.check_dJ_db, dJ_dw, "∂J/∂b is wrong")  # the x factor does not belong in ∂J/∂b
    fails(lesson02.check_dJ_dw, lambda x, y, w, b: torch.tensor(0.0125, dtype=x.dtype, device=x.device), "∂J/∂w")
    fails(lesson02.check_dJ_dw, lambda x, y, w, b: None, "∂J/∂w")


def test_partials_must_follow_the_input_dtype_and_stay_tensors():
    fails(lesson02.check_dJ_dw, lambda x, y, w, b: dJ_dw(x, y, w, b).item(), "should be a tensor")
    fails(lesson02.check_dJ_db, lambda x, y, w, b: dJ_db(x, y, w, b).double(), "should follow the inputs")


def test_an_unwritten_function_says_so():
    def stub(x, y, w, b):
        raise NotImplementedError("Replace this line with your solution")

    fails(lesson02.check_dJ_dw, stub, "not written yet")


# --------------------------------------------------------------------------- one step
def test_step_mistakes_get_their_own_message():
    def uphill(x, y, w, b, lr):
        return w + lr * dJ_dw(x, y, w, b), b + lr * dJ_db(x, y, w, b)

    def no_rate(x, y, w, b, lr):
        return w - dJ_dw(x, y, w, b), b - dJ_db(x, y, w, b)

    def one_after_the_other(x, y, w, b, lr):
        w = w - lr * dJ_dw(x, y, w, b)
        return w, b - lr * dJ_db(x, y, w, b)

    fails(lesson02.check_gd_step, uphill, "uphill")
    fails(lesson02.check_gd_step, no_rate, "learning rate is missing")
    fails(lesson02.check_gd_step, one_after_the_other, "NEW w")
    fails(lesson02.check_gd_step, lambda x, y, w, b, lr: (w, b), "the step in w")
    fails(lesson02.check_gd_step, lambda x, y, w, b, lr: float(gd_step(x, y, w, b, lr)[0]), "should return a pair")


def test_a_step_that_changes_its_arguments_in_place_still_counts():
    def in_place(x, y, w, b, lr):
        dw, db = dJ_dw(x, y, w, b), dJ_db(x, y, w, b)
        w -= lr * dw
        b -= lr * db
        return w, b

    lesson02.check_gd_step(in_place)


# --------------------------------------------------------------------------- the threshold and the loop
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


def test_newton_derivatives_match_autograd():
    gen = torch.Generator().manual_seed(5)
    u = torch.randn(50, generator=gen, dtype=torch.float64)
    y = (torch.rand(50, generator=gen, dtype=torch.float64) < 0.5).double()
    p = torch.tensor([1.3, -0.4], dtype=torch.float64)

    def J(q):
        return lesson02.cost(u, y, q[0], q[1])

    g, H = lesson02._grad_hessian(u, y, p)
    torch.testing.assert_close(g, torch.autograd.functional.jacobian(J, p))
    torch.testing.assert_close(H, torch.autograd.functional.hessian(J, p))


def test_best_cost_on_fresh_data_matches_a_long_descent():
    x, y = lesson02.cell_like(torch.Generator().manual_seed(3), 400)
    w, b = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    for _ in range(4000):
        (dw, db) = autograd_grads(lambda w_, b_: lesson02.cost(x, y, w_, b_), w, b)
        w, b = w - 20.0 * dw, b - 20.0 * db
    assert lesson02.best_cost(x, y) == pytest.approx(float(lesson02.cost(x, y, w, b)), abs=1e-8)


def test_the_loop_passes_on_fresh_data_with_sensible_rates():
    for lr in (5.0, 20.0):
        lesson02.check_fit(make_fit(lr))


def test_a_crawling_loop_fails_on_the_threshold():
    fails(lesson02.check_fit, make_fit(lr=0.05, max_steps=200), "not under the threshold", "learning rate")


def test_a_loop_that_never_stops_is_cut_off():
    x, y = lesson02.cell_like(torch.Generator().manual_seed(1), 300)

    def forever(x, y, w, b, threshold):
        while True:
            w, b = gd_step(x, y, w, b, 1e-6)

    with pytest.raises(AssertionError, match="still running after 0.3 s"):
        lesson02.run_fit(forever, x, y, 0.0, 0.0, lesson02.threshold_for(x, y), "test", seconds=0.3)


def test_hard_coded_answers_fail():
    X, y = gradlab.cell_tensors("cpu", dtype=torch.float64)
    w_cell, b_cell, _ = make_fit()(X[:, 0], y, torch.tensor(1.0, dtype=torch.float64),
                                   torch.tensor(0.0, dtype=torch.float64), lesson02.threshold_for(X[:, 0], y))

    def memorised(x, y, w, b, threshold):
        w_, b_ = w_cell.to(x.dtype).to(x.device), b_cell.to(x.dtype).to(x.device)
        return w_, b_, [float(lesson02.cost(x, y, w_, b_))]

    def ignores_its_start(x, y, w, b, threshold):
        return make_fit()(x, y, w_cell.to(x.dtype).to(x.device), b_cell.to(x.dtype).to(x.device), threshold)

    fails(lesson02.check_fit, memorised)
    fails(lesson02.check_fit, ignores_its_start, "Start from the w and b")


def test_the_loop_must_report_its_costs():
    def no_costs(x, y, w, b, threshold):
        w, b, _ = make_fit()(x, y, w, b, threshold)
        return w, b

    def stale_last_cost(x, y, w, b, threshold):
        w, b, costs = make_fit()(x, y, w, b, threshold)
        w, b = gd_step(x, y, w, b, 20.0)
        return w, b, costs

    fails(lesson02.check_fit, no_costs, "should return (w, b, costs)")
    fails(lesson02.check_fit, stale_last_cost, "costs[-1]")
