"""The hidden checks of lesson 1 pass the lesson's own solutions and fail typical mistakes with a useful message."""
import pytest
import torch

from course import solution_namespace
from gradlab.grading import lesson01


SOLUTIONS = solution_namespace("01-one-neuron/one-neuron.ipynb")
linear, sigmoid, sse, mse, dsse_dw = (SOLUTIONS[n] for n in ("linear", "sigmoid", "sse", "mse", "dsse_dw"))


def test_the_lesson_solutions_pass():
    lesson01.check_linear(linear)
    lesson01.check_sigmoid(sigmoid)
    lesson01.check_sse(sse)
    lesson01.check_mse(mse)
    lesson01.check_dsse_dw(dsse_dw)


def test_an_unwritten_exercise_says_so():
    def stub(*args):
        raise NotImplementedError("Replace this line with your solution, then run the check below.")
    for check in (lesson01.check_linear, lesson01.check_sigmoid, lesson01.check_sse, lesson01.check_mse,
                  lesson01.check_dsse_dw):
        with pytest.raises(AssertionError, match="not written yet"):
            check(stub)


# ---------------------------------------------------------------- linear and sigmoid
def test_linear_without_the_bias_fails():
    with pytest.raises(AssertionError, match=r"z = X·w \+ b is wrong"):
        lesson01.check_linear(lambda X, w, b=0.0: X * w)


def test_linear_that_needs_the_bias_argument_is_told_how_it_was_called():
    with pytest.raises(AssertionError, match="missing 1 required positional argument"):
        lesson01.check_linear(lambda X, w, b: X * w + b)


def test_linear_as_a_matrix_product_crashes_readably():
    with pytest.raises(AssertionError, match=r"`linear` raised RuntimeError"):
        lesson01.check_linear(lambda X, w, b=0.0: X @ w + b)


def test_linear_that_flattens_the_column_fails_on_its_shape():
    with pytest.raises(AssertionError, match="shape"):
        lesson01.check_linear(lambda X, w, b=0.0: (X * w + b).reshape(-1))


@pytest.mark.parametrize("wrong", [
    lambda z: 1 / (1 + torch.exp(z)),          # the sign in the exponent
    lambda z: 1 / (1 - torch.exp(-z)),
    lambda z: torch.exp(-z) / (1 + torch.exp(-z)),
])
def test_wrong_sigmoids_fail(wrong):
    with pytest.raises(AssertionError, match=r"σ\(z\) is wrong"):
        lesson01.check_sigmoid(wrong)


def test_a_sigmoid_that_works_only_on_columns_fails():
    with pytest.raises(AssertionError, match="sigmoid"):
        lesson01.check_sigmoid(lambda z: 1 / (1 + torch.exp(-z[:, 0:1])))


def test_a_sigmoid_in_float32_for_float64_inputs_fails():
    with pytest.raises(AssertionError, match=r"right values but is float32.*float64"):
        lesson01.check_sigmoid(lambda z: torch.sigmoid(z).float())


# ---------------------------------------------------------------- SSE and MSE
def test_the_broadcasting_trap_is_named():
    with pytest.raises(AssertionError, match=r"(?s)SSE is wrong \(n=7.*broadcasting trap.*y.reshape\(-1, 1\)"):
        lesson01.check_sse(lambda h, y: ((h - y) ** 2).sum())
    with pytest.raises(AssertionError, match="MSE is wrong.*broadcasting trap"):
        lesson01.check_mse(lambda h, y: ((h - y) ** 2).mean())


def test_mse_without_the_division_is_named():
    with pytest.raises(AssertionError, match=r"MSE is wrong \(n=7.*divide by N \(N = 7"):
        lesson01.check_mse(sse)


@pytest.mark.parametrize("wrong", [
    lambda h, y: (h - y.reshape(-1, 1)).abs().sum(),
    lambda h, y: (h - y.reshape(-1, 1)).sum() ** 2,
    lambda h, y: torch.tensor(1.25),
])
def test_other_wrong_sses_fail(wrong):
    with pytest.raises(AssertionError, match="SSE"):
        lesson01.check_sse(wrong)


def test_sse_without_the_sum_fails_on_its_shape():
    with pytest.raises(AssertionError, match="SSE"):
        lesson01.check_sse(lambda h, y: (h - y.reshape(-1, 1)) ** 2)


def test_sse_as_a_python_number_must_be_a_tensor():
    with pytest.raises(AssertionError, match="SSE should be a tensor"):
        lesson01.check_sse(lambda h, y: sse(h, y).item())


# ---------------------------------------------------------------- dSSE/dw
def _dsse_dw(factor=2.0, sign=1.0, times_x=True, trap=False):
    def wrong(X, y, w):
        h = torch.sigmoid(X * w)
        labels = y if trap else y.reshape(-1, 1)
        return (sign * factor * (h - labels) * h * (1 - h) * (X if times_x else 1)).sum()
    return wrong


@pytest.mark.parametrize("wrong, diagnosis", [
    (_dsse_dw(factor=1.0), "missing factor 2"),
    (_dsse_dw(sign=-1.0), "wrong sign"),
    (_dsse_dw(times_x=False), "dSSE/dw is wrong"),
    (_dsse_dw(trap=True), "broadcasting trap"),
    (lambda X, y, w: _dsse_dw()(X, y, w) / X.shape[0], r"extra division by N"),
    (lambda X, y, w: torch.tensor(27.4926), "dSSE/dw is wrong"),
])
def test_wrong_derivatives_fail_with_their_diagnosis(wrong, diagnosis):
    with pytest.raises(AssertionError, match=diagnosis):
        lesson01.check_dsse_dw(wrong)

