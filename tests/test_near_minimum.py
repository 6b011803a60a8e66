"""Cases near a loss's minimum (common.near_minimum): where a finite-difference estimate loses its digits and a
formula keeps them, so that lessons 1-3's gradient checks refuse an estimate and accept every way of writing the
formula (measured here, on the very cases the checks use)."""
import math

import pytest
import torch

from gradlab.check import autograd_grads
from gradlab.grading import common, lesson01, lesson02, lesson03

TOLERANCE = 1.1e-7  # float64's rtol + atol of a 0-dim gradient (gradlab.check.TOLERANCES)
STEPS = [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]


def _neuron_cases():
    """(x, y, w, b) of every near-minimum case of lessons 2 and 3 (seeds 201, 202, 306), as the checks make them."""
    found = []
    for seed in (201, 202, 306):
        for _, gen, n in common.near_minimum_cases(seed):
            found.append(common.neuron_near_minimum(gen, n, lambda x, y, w, b: (torch.sigmoid(w * x + b) - y) ** 2 / n))
    return found


CASES = _neuron_cases()


def _cost(x, y, w, b):
    return ((torch.sigmoid(w * x + b) - y) ** 2).mean()


def _formulas(x, y, w, b):
    """∂J/∂w written six right ways, as students write it."""
    n, z = len(x), w * x + b
    s = torch.sigmoid(z)
    terms = [2 * (float(s[i]) - float(y[i])) * float(s[i]) * (1 - float(s[i])) * float(x[i]) for i in range(n)]
    running = 0.0
    for i, t in enumerate(terms):
        running += (t - running) / (i + 1)
    return {
        "vectorised": (2 * (s - y) * s * (1 - s) * x).mean(),
        "exp form": (2 * (s - y) * torch.exp(-z) / (1 + torch.exp(-z)) ** 2 * x).sum() / n,
        "σ(z)σ(−z)": (2 * (s - y) * torch.sigmoid(z) * torch.sigmoid(-z) * x).mean(),
        "matrix product": x @ (2 * (s - y) * s * (1 - s)) / n,
        "python loop": torch.tensor(sum(terms) / n, dtype=torch.float64),
        "running mean": torch.tensor(running, dtype=torch.float64),
    }


def _relative(got, expected):
    return abs(float(got) - float(expected)) / abs(float(expected))


@pytest.mark.parametrize("case", range(len(CASES)))
def test_the_gradient_is_a_millionth_of_its_terms_at_a_tame_point(case):
    x, y, w, b = CASES[case]
    assert w.dtype == b.dtype == torch.float64 and abs(float(w)) < 5 and abs(float(b)) < 5
    s = torch.sigmoid(w * x + b)
    for grad, factor in zip(autograd_grads(lambda w_, b_: _cost(x, y, w_, b_), w, b), (x, torch.ones_like(x))):
        sizes = (2 * (s - y) * s * (1 - s) * factor).abs().sum() / len(x)
        assert float(sizes / grad.abs()) == pytest.approx(common.CANCELLATION, rel=1e-3)


def test_every_way_of_writing_the_formula_keeps_its_digits():
    worst = {}
    for x, y, w, b in CASES:
        (expected,) = autograd_grads(lambda w_: _cost(x, y, w_, b), w)
        for name, value in _formulas(x, y, w, b).items():
            worst[name] = max(worst.get(name, 0.0), _relative(value, expected))
    print({k: f"{v:.1e}" for k, v in worst.items()})
    assert max(worst.values()) < TOLERANCE / 30, worst


def test_a_central_difference_loses_its_digits_at_every_step():
    """Whatever its step, a central difference fails at least one of each check's two cases (every case, in fact)."""
    best = {}
    for x, y, w, b in CASES:
        (expected,) = autograd_grads(lambda w_: _cost(x, y, w_, b), w)
        for h in STEPS:
            estimate = _central(lambda w_: _cost(x, y, w_, b), w, h)
            best[h] = min(best.get(h, math.inf), _relative(estimate, expected))
    print({h: f"{v:.1e}" for h, v in best.items()})
    assert min(best.values()) > 3 * TOLERANCE, best


# --------------------------------------------------------------------------- the checks
def _in64(t):
    return t.detach().double()


def _central(loss, at, h):
    return (loss(at + h) - loss(at - h)) / (2 * h)


def _estimates(h):
    """Each check's exercise answered by a central difference computed in float64 (right on ordinary cases)."""
    def dsse_dw(X, y, w):
        sse = lambda w_: ((torch.sigmoid(_in64(X) * w_).reshape(-1) - _in64(y)) ** 2).sum()
        return _central(sse, _in64(w), h).to(X.dtype)

    def dJ_dw(x, y, w, b):
        return _central(lambda w_: _cost(_in64(x), _in64(y), w_, _in64(b)), _in64(w), h).to(x.dtype)

    def dJ_db(x, y, w, b):
        return _central(lambda b_: _cost(_in64(x), _in64(y), _in64(w), b_), _in64(b), h).to(x.dtype)

    def backward(cache):
        x, y, z, _ = (_in64(t) for t in cache)
        J = lambda dz: ((torch.sigmoid(z + dz) - y) ** 2).mean()
        return (((J(h * x) - J(-h * x)) / (2 * h)).to(cache[0].dtype),
                ((J(h + 0 * x) - J(-h + 0 * x)) / (2 * h)).to(cache[0].dtype))
    return {lesson01.check_dsse_dw: dsse_dw, lesson02.check_dJ_dw: dJ_dw, lesson02.check_dJ_db: dJ_db,
            lesson03.check_backward: backward}


@pytest.mark.parametrize("h", [1e-4, 1e-5, 1e-6, 1e-7])
@pytest.mark.parametrize("check", list(_estimates(1e-6)), ids=lambda c: c.__name__)
def test_each_check_refuses_a_finite_difference_estimate(check, h):
    with pytest.raises(AssertionError) as info:
        check(_estimates(h)[check])
    message = str(info.value)
    assert getattr(info.value, "kind", None) in ("numerical", "close"), message
    if info.value.kind == "numerical":
        assert common.NEAR_MINIMUM in message and "finite-difference" in message and "derived by hand" in message


def test_the_estimate_is_told_so_at_the_usual_steps():
    for check, fn in _estimates(1e-6).items():
        with pytest.raises(AssertionError) as info:
            check(fn)
        assert info.value.kind == "numerical", (check.__name__, str(info.value))


def test_a_formula_computed_in_float32_is_not_called_an_estimate():
    """Digits lost to float32 inside the formula show on the ordinary float64 cases too: that is another message."""
    def in_float32(x, y, w, b):
        x32, y32, w32, b32 = (t.float() for t in (x, y, w, b))
        s = torch.sigmoid(w32 * x32 + b32)
        return (2 * (s - y32) * s * (1 - s) * x32).mean().to(x.dtype)
    with pytest.raises(AssertionError) as info:
        lesson02.check_dJ_dw(in_float32)
    assert info.value.kind != "numerical" and "finite-difference" not in str(info.value), str(info.value)


def test_lesson_1s_cases_keep_a_formulas_digits_and_lose_a_differences():
    """dSSE/dw with no bias, positive areas and the sum: the same margins as lessons 2-3's cases."""
    worst_formula, best_difference = 0.0, math.inf
    for _, gen, n in common.near_minimum_cases(105):
        X, y = lesson01._column(gen, n, torch.float64, "cpu"), common.labels(gen, n, torch.float64, "cpu")
        sse = lambda w_: ((torch.sigmoid(X * w_).reshape(-1) - y) ** 2).sum()
        (w,) = common.near_minimum(lambda w_: (torch.sigmoid(X * w_).reshape(-1) - y) ** 2,
                                   [torch.zeros((), dtype=torch.float64)])
        (expected,) = autograd_grads(sse, w)
        h = torch.sigmoid(X * w).reshape(-1)
        x = X.reshape(-1)
        loop = sum(2 * (float(h[i]) - float(y[i])) * float(h[i]) * (1 - float(h[i])) * float(x[i]) for i in range(n))
        for value in ((2 * (h - y) * h * (1 - h) * x).sum(), X.T @ (2 * (h - y) * h * (1 - h)), loop):
            worst_formula = max(worst_formula, _relative(value.reshape(()) if torch.is_tensor(value) else value,
                                                         expected))
        for step in STEPS:
            best_difference = min(best_difference, _relative(_central(sse, w, step), expected))
    print(f"formula {worst_formula:.1e}, central difference {best_difference:.1e}")
    assert worst_formula < TOLERANCE / 30 and best_difference > 3 * TOLERANCE
