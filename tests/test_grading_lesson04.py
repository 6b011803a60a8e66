"""The hidden checks of lesson 4 pass the reference solutions and fail typical mistakes with a useful message."""
import numpy as np
import pytest
import torch

from gradlab.grading import lesson04


# Reference solutions, as in the lesson's solution cells.
def dL_dw1(X, y, w, b):
    return 2 * ((X @ w + b - y) * X[:, 0]).mean()


def dL_dw2(X, y, w, b):
    return 2 * ((X @ w + b - y) * X[:, 1]).mean()


def dL_db(X, y, w, b):
    return 2 * (X @ w + b - y).mean()


def count_parameters(layer_sizes):
    return sum(n_in * n_out + n_out for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]))


CHECKS = [(lesson04.check_dL_dw1, 0), (lesson04.check_dL_dw2, 1), (lesson04.check_dL_db, None)]


def _input(X, y, column):
    return X[:, column] if column is not None else torch.ones_like(y)


def test_reference_solutions_pass():
    lesson04.check_dL_dw1(dL_dw1)
    lesson04.check_dL_dw2(dL_dw2)
    lesson04.check_dL_db(dL_db)
    lesson04.check_count_parameters(count_parameters)


def test_an_unwritten_exercise_says_so():
    def stub(X, y, w, b):
        raise NotImplementedError
    with pytest.raises(AssertionError, match="not written yet"):
        lesson04.check_dL_dw1(stub)


@pytest.mark.parametrize("check, column", CHECKS)
def test_the_prediction_instead_of_the_error_is_named(check, column):
    def wrong(X, y, w, b):
        return 2 * ((X @ w + b) * _input(X, y, column)).mean()
    with pytest.raises(AssertionError, match=r"prediction f\(X\) where the error"):
        check(wrong)


@pytest.mark.parametrize("check, column", CHECKS)
def test_a_flipped_sign_is_named(check, column):
    def wrong(X, y, w, b):
        return 2 * ((y - X @ w - b) * _input(X, y, column)).mean()
    with pytest.raises(AssertionError, match="flips the sign"):
        check(wrong)


@pytest.mark.parametrize("check, column", CHECKS)
def test_a_missing_factor_2_is_named(check, column):
    def wrong(X, y, w, b):
        return ((X @ w + b - y) * _input(X, y, column)).mean()
    with pytest.raises(AssertionError, match="factor 2"):
        check(wrong)


@pytest.mark.parametrize("check, column", CHECKS)
def test_a_sum_without_1_over_N_is_named(check, column):
    def wrong(X, y, w, b):
        return 2 * ((X @ w + b - y) * _input(X, y, column)).sum()
    with pytest.raises(AssertionError, match="divide by N"):
        check(wrong)


def test_swapped_inputs_are_named():
    with pytest.raises(AssertionError, match="swapped"):
        lesson04.check_dL_dw1(dL_dw2)
    with pytest.raises(AssertionError, match="swapped"):
        lesson04.check_dL_dw2(dL_dw1)


def test_forgetting_the_input_is_named():
    with pytest.raises(AssertionError, match="forgets to multiply the error by the input"):
        lesson04.check_dL_dw1(dL_db)


def test_a_hard_coded_number_fails():
    # the visible test's answer: right for that case, wrong for every hidden one
    with pytest.raises(AssertionError, match="dL_dw1 is wrong"):
        lesson04.check_dL_dw1(lambda X, y, w, b: torch.tensor(-1.0))


def test_the_result_keeps_the_inputs_dtype():
    with pytest.raises(AssertionError, match="right values.*float32"):
        lesson04.check_dL_db(lambda X, y, w, b: dL_db(X, y, w, b).float())


def test_a_one_element_vector_is_not_a_scalar():
    with pytest.raises(AssertionError, match=r"scalar tensor \(shape \(\)\)"):
        lesson04.check_dL_db(lambda X, y, w, b: dL_db(X, y, w, b).reshape(1))


def test_an_exception_in_student_code_is_reported_with_the_shapes():
    with pytest.raises(AssertionError, match=r"(?s)raised IndexError.*\(1, 2\)"):
        lesson04.check_dL_dw1(lambda X, y, w, b: X[:, 5].sum())


def test_count_parameters_accepts_numpy_and_tensor_integers():
    lesson04.check_count_parameters(lambda sizes: np.int64(count_parameters(sizes)))
    lesson04.check_count_parameters(lambda sizes: torch.tensor(count_parameters(sizes)))


@pytest.mark.parametrize("wrong, hint", [
    (lambda s: sum(a * b for a, b in zip(s[:-1], s[1:])), "weights only"),
    (lambda s: sum(a * b + 1 for a, b in zip(s[:-1], s[1:])), "one bias; a layer has one bias per output"),
    (lambda s: sum(a * b + a for a, b in zip(s[:-1], s[1:])), r"per \*input\*"),
    (lambda s: sum((a + 1) * (b + 1) for a, b in zip(s[:-1], s[1:])), "both sides"),
    (lambda s: sum(s), "neurons, not the parameters"),
    (lambda s: 50890, "count n_in"),
    (lambda s: float(count_parameters(s)), "whole number"),
])
def test_wrong_counts_fail_with_a_hint(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        lesson04.check_count_parameters(wrong)


def test_count_parameters_is_tried_on_random_sizes():
    """A function that only knows the sizes the notebook shows cannot pass."""
    known = {(2, 1): 3, (3, 5, 2): 32, (784, 64, 10): 50890}
    with pytest.raises(AssertionError, match="returned"):
        lesson04.check_count_parameters(lambda s: known.get(tuple(s), 0))
