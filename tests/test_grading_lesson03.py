"""The hidden checks of lesson 3 pass the lesson's own solutions and fail typical mistakes with a useful message."""
import pytest
import torch

from course import solution_namespace
from gradlab.grading import lesson03


SOLUTIONS = solution_namespace("03-backprop-by-hand/backprop-by-hand.ipynb")
forward, backward, train_by_hand = SOLUTIONS["forward"], SOLUTIONS["backward"], SOLUTIONS["train_by_hand"]
dJ_dsigma, dsigma_dz, dz_dw, dz_db = (SOLUTIONS[n] for n in ("dJ_dsigma", "dsigma_dz", "dz_dw", "dz_db"))


def test_the_lesson_solutions_pass():
    lesson03.check_forward(forward)
    lesson03.check_dJ_dsigma(dJ_dsigma)
    lesson03.check_dsigma_dz(dsigma_dz)
    lesson03.check_dz_dw(dz_dw)
    lesson03.check_dz_db(dz_db)
    lesson03.check_backward(backward)
    lesson03.check_train_by_hand(train_by_hand)


def test_an_unwritten_exercise_says_so():
    def stub(*args):
        raise NotImplementedError("Replace this line with your solution, then run the check below.")
    for check in (lesson03.check_forward, lesson03.check_dJ_dsigma, lesson03.check_backward, lesson03.check_train_by_hand):
        with pytest.raises(AssertionError, match="not written yet"):
            check(stub)


def test_a_crash_is_reported_with_the_shapes_it_was_called_with():
    with pytest.raises(AssertionError, match=r"(?s)raised IndexError.*\(1,\) float32 \(n=1"):
        lesson03.check_dz_dw(lambda x: x[x.shape[0] + 1])


# ---------------------------------------------------------------- forward
def test_a_sum_instead_of_the_mean_is_named_as_a_missing_division_by_n():
    def summed(x, y, w, b):
        J, cache = forward(x, y, w, b)
        return J * x.shape[0], cache
    with pytest.raises(AssertionError, match=r"J is wrong \(n=7.*divide by N \(N = 7"):
        lesson03.check_forward(summed)


def test_a_cache_in_another_order_fails():
    def shuffled(x, y, w, b):
        J, (x_, y_, z, s) = forward(x, y, w, b)
        return J, (x_, y_, s, z)
    with pytest.raises(AssertionError, match="z in the cache"):
        lesson03.check_forward(shuffled)


def test_forward_must_return_the_cost_and_the_cache():
    with pytest.raises(AssertionError, match=r"should return a pair \(J, cache\)"):
        lesson03.check_forward(lambda x, y, w, b: forward(x, y, w, b)[0])


# ---------------------------------------------------------------- local derivatives
@pytest.mark.parametrize("wrong, diagnosis", [
    (lambda s, y: 2 * (s - y), r"n=7.*divide by N \(N = 7"),       # the 1/N of the mean is missing
    (lambda s, y: 2 * (y - s) / s.shape[0], "wrong sign"),
    (lambda s, y: (s - y) / s.shape[0], "missing factor 2"),
    (lambda s, y: 2 * (s - y).mean() * torch.ones_like(s), "dJ/dσ is wrong"),
])
def test_wrong_dJ_dsigma_fails_with_its_diagnosis(wrong, diagnosis):
    with pytest.raises(AssertionError, match=diagnosis):
        lesson03.check_dJ_dsigma(wrong)


def test_a_hard_coded_dJ_dsigma_fails():
    with pytest.raises(AssertionError, match="dJ/dσ"):
        lesson03.check_dJ_dsigma(lambda s, y: torch.tensor([-0.5, 0.9]))


@pytest.mark.parametrize("wrong", [
    lambda z: z * (1 - z),                                   # σ(1 − σ) with z put in for σ
    lambda z: torch.sigmoid(z) * (1 + torch.sigmoid(z)),
    lambda z: torch.sigmoid(z),
])
def test_wrong_sigmoid_derivatives_fail(wrong):
    with pytest.raises(AssertionError, match="dσ/dz is wrong"):
        lesson03.check_dsigma_dz(wrong)


def test_dz_dw_of_ones_fails_and_dz_db_of_x_fails():
    with pytest.raises(AssertionError, match="dz/dw is wrong"):
        lesson03.check_dz_dw(torch.ones_like)
    with pytest.raises(AssertionError, match="dz/db is wrong"):
        lesson03.check_dz_db(lambda x: x)


def test_dz_db_in_the_default_dtype_fails_on_float64_inputs():
    with pytest.raises(AssertionError, match=r"right values but is float32.*should follow the inputs: float64"):
        lesson03.check_dz_db(lambda x: torch.ones(x.shape[0], device=x.device))


def test_dz_db_as_a_plain_number_fails():
    with pytest.raises(AssertionError, match="dz/db"):
        lesson03.check_dz_db(lambda x: 1.0)


# ---------------------------------------------------------------- backward
def _backward_from(dJ_ds, reduce=torch.sum):
    """A backward pass built from another ∂J/∂σ or another batch reduction: the usual slips."""
    def wrong(cache):
        x, y, z, s = cache
        dJ_dz = s * (1 - s) * dJ_ds(s, y)
        return reduce(x * dJ_dz), reduce(dJ_dz)
    return wrong


@pytest.mark.parametrize("wrong, diagnosis", [
    (_backward_from(lambda s, y: 2 * (s - y)), r"dJ/dw is wrong \(n=7.*divide by N \(N = 7"),
    (_backward_from(lambda s, y: 2 * (y - s) / len(s)), "dJ/dw is wrong.*wrong sign"),
    (_backward_from(lambda s, y: 2 * (s - y) / len(s), reduce=torch.mean), r"extra division by N \(N = 7"),
])
def test_wrong_backward_passes_fail_with_their_diagnosis(wrong, diagnosis):
    with pytest.raises(AssertionError, match=diagnosis):
        lesson03.check_backward(wrong)


def test_backward_that_forgets_dz_db_times_x_on_b_fails_only_on_b():
    def b_with_x(cache):
        dw, _ = backward(cache)
        x, y, z, s = cache
        return dw, (x * s * (1 - s) * 2 * (s - y) / len(x)).sum()
    with pytest.raises(AssertionError, match="dJ/db is wrong"):
        lesson03.check_backward(b_with_x)


def test_backward_that_changes_the_cache_in_place_is_told_so():
    def in_place(cache):
        result = backward(cache)
        cache[3].mul_(2)
        return result
    with pytest.raises(AssertionError, match=r"changed its input `cache\[3\]` in place"):
        lesson03.check_backward(in_place)


def test_backward_must_return_two_gradients():
    with pytest.raises(AssertionError, match="should return a pair"):
        lesson03.check_backward(lambda cache: (*backward(cache), None))


# ---------------------------------------------------------------- training loop
def _loop(x_for_w=None, sign=1.0, passes=None, full_batch=False):
    """train_by_hand with one deliberate slip."""
    def train(x, y, w, b, lr, n_passes):
        for _ in range(n_passes if passes is None else passes):
            if full_batch:
                dw, db = backward(forward(x, y, w, b)[1])
                w, b = w - sign * lr * dw, b - sign * lr * db
                continue
            for i in range(len(x)):
                x_, y_ = x[i:i + 1], y[i:i + 1]
                _, (_, _, z, s) = forward(x_, y_, w, b)
                dJ_dz = s * (1 - s) * 2 * (s - y_)
                dw = ((x[:1] if x_for_w == "first" else x_) * dJ_dz).sum()
                w, b = w - sign * lr * dw, b - sign * lr * dJ_dz.sum()
        return float(w), float(b)
    return train


@pytest.mark.parametrize("wrong, diagnosis", [
    (_loop(x_for_w="first"), "first observation's x"),
    (_loop(sign=-1.0), "steps uphill"),
    (_loop(passes=1), "only one pass"),
    (_loop(full_batch=True), "full-batch gradient descent"),
])
def test_known_training_mistakes_get_named(wrong, diagnosis):
    assert _loop()(torch.tensor([0.5, 1.5]), torch.tensor([0.0, 1.0]), 1.0, 0.0, 0.5, 2) == pytest.approx(
        train_by_hand(torch.tensor([0.5, 1.5]), torch.tensor([0.0, 1.0]), 1.0, 0.0, 0.5, 2), rel=1e-6
    ), "the slip-free version of the helper must be the right loop"
    with pytest.raises(AssertionError, match=diagnosis):
        lesson03.check_train_by_hand(wrong)


def test_a_hard_coded_training_result_fails():
    with pytest.raises(AssertionError, match="(?s)should end at.*side by side"):
        lesson03.check_train_by_hand(lambda x, y, w, b, lr, passes: (2.047933, -1.975406))


def test_a_loop_that_ignores_the_learning_rate_fails():
    with pytest.raises(AssertionError, match="should end at"):
        lesson03.check_train_by_hand(lambda x, y, w, b, lr, passes: train_by_hand(x, y, w, b, 1e-4, passes))


def test_training_results_may_be_tensors_but_not_lists():
    def as_tensors(x, *args):  # a loop that never calls float(): 0-dim tensors in the inputs' dtype
        return tuple(torch.tensor(v, dtype=x.dtype, device=x.device) for v in train_by_hand(x, *args))
    lesson03.check_train_by_hand(as_tensors)
    with pytest.raises(AssertionError, match="as one number"):
        lesson03.check_train_by_hand(lambda *args: tuple(torch.tensor([v, v]) for v in train_by_hand(*args)))


def test_a_diverging_loop_is_told_so():
    with pytest.raises(AssertionError, match="diverged"):
        lesson03.check_train_by_hand(lambda *args: (float("nan"), 0.0))


def test_training_must_not_change_the_data_in_place():
    def shuffles(x, y, w, b, lr, passes):
        result = train_by_hand(x, y, w, b, lr, passes)
        y.zero_()
        return result
    with pytest.raises(AssertionError, match="changed its input `y` in place"):
        lesson03.check_train_by_hand(shuffles)


def test_the_reference_loop_is_torch_sgd():
    """The grader's plain-update reference takes the same steps as torch.optim.SGD (the lesson's loop)."""
    x, y = torch.tensor([0.3, 1.2, 0.8], dtype=torch.float64), torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
    w = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(-0.4, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([w, b], lr=0.5)
    for _ in range(3):
        for i in range(3):
            optimizer.zero_grad()
            ((torch.sigmoid(w * x[i] + b) - y[i]) ** 2).backward()
            optimizer.step()
    assert lesson03.reference_training(x, y, 0.7, -0.4, 0.5, 3) == pytest.approx((w.item(), b.item()), abs=1e-12)
