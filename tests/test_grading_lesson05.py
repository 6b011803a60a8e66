"""The hidden checks of lesson 5 pass the reference layers and fail typical mistakes with a useful message."""
import pytest
import torch

from gradlab.grading import lesson05


# Reference solutions, as in the lesson's solution cells.
def linear_forward(x, W, b):
    return x @ W + b, (x, W, b)


def linear_backward(dout, cache):
    x, W, b = cache
    return dout @ W.T, x.T @ dout, dout.sum(dim=0)


def relu_forward(x):
    return x.clamp(min=0), x


def relu_backward(dout, cache):
    return dout * (cache > 0)


def sigmoid_forward(x):
    out = 1 / (1 + torch.exp(-x))
    return out, out


def sigmoid_backward(dout, cache):
    return dout * cache * (1 - cache)


def two_layer_loss_and_grads(X, y, params, backward=linear_backward):
    z1, c1 = linear_forward(X, params["W1"], params["b1"])
    a1, c2 = relu_forward(z1)
    z2, c3 = linear_forward(a1, params["W2"], params["b2"])
    p, c4 = sigmoid_forward(z2)
    loss = ((p - y) ** 2).mean()
    dz2 = sigmoid_backward(2 * (p - y) / len(y), c4)
    da1, dW2, db2 = backward(dz2, c3)
    _, dW1, db1 = backward(relu_backward(da1, c2), c1)
    return loss, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def test_reference_solutions_pass():
    lesson05.check_linear_forward(linear_forward)
    lesson05.check_relu_forward(relu_forward)
    lesson05.check_sigmoid_forward(sigmoid_forward)
    lesson05.check_linear_backward(linear_forward, linear_backward)
    for which in ("dx", "dW", "db"):
        lesson05.check_linear_backward(linear_forward, linear_backward, which)
    lesson05.check_relu_backward(relu_forward, relu_backward)
    lesson05.check_sigmoid_backward(sigmoid_forward, sigmoid_backward)
    lesson05.check_two_layer_loss_and_grads(two_layer_loss_and_grads)


def test_a_backward_that_caches_differently_passes_too():
    """The cache is the student's business: backward only has to agree with their own forward."""
    def sigmoid_forward_x(x):
        return torch.sigmoid(x), x

    def sigmoid_backward_x(dout, x):
        s = torch.sigmoid(x)
        return dout * s * (1 - s)
    lesson05.check_sigmoid_backward(sigmoid_forward_x, sigmoid_backward_x)


def test_an_unwritten_exercise_says_so():
    def stub(*args):
        raise NotImplementedError
    with pytest.raises(AssertionError, match="`linear_forward` is not written yet"):
        lesson05.check_linear_backward(stub, linear_backward)
    with pytest.raises(AssertionError, match="`relu_backward` is not written yet"):
        lesson05.check_relu_backward(relu_forward, stub)


def test_forward_must_return_out_and_cache():
    with pytest.raises(AssertionError, match=r"should return a pair \(out, cache\)"):
        lesson05.check_linear_forward(lambda x, W, b: x @ W + b)


def test_a_forward_without_bias_fails():
    with pytest.raises(AssertionError, match="linear_forward output is wrong"):
        lesson05.check_linear_forward(lambda x, W, b: (x @ W, None))


@pytest.mark.parametrize("which, wrong, hint", [
    ("dW", lambda d, c: (d @ c[1].T, d.T @ c[0], d.sum(0)), "transpose"),
    ("db", lambda d, c: (d @ c[1].T, c[0].T @ d, d.mean(0)), "division by N"),
    ("dx", lambda d, c: (-(d @ c[1].T), c[0].T @ d, d.sum(0)), "wrong sign"),
    ("db", lambda d, c: (d @ c[1].T, c[0].T @ d, d.sum(1)), "db"),
    ("dx", lambda d, c: (d @ c[1], c[0].T @ d, d.sum(0)), "raised RuntimeError"),
])
def test_wrong_linear_gradients_fail_with_a_diagnosis(which, wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        lesson05.check_linear_backward(linear_forward, wrong, which)


def test_each_linear_gradient_is_graded_on_its_own():
    right_dx_wrong_dW = lambda d, c: (d @ c[1].T, 2 * c[0].T @ d, d.sum(0))  # noqa: E731
    lesson05.check_linear_backward(linear_forward, right_dx_wrong_dW, "dx")
    lesson05.check_linear_backward(linear_forward, right_dx_wrong_dW, "db")
    with pytest.raises(AssertionError, match="dW is wrong"):
        lesson05.check_linear_backward(linear_forward, right_dx_wrong_dW, "dW")


def test_linear_backward_must_return_three_gradients():
    with pytest.raises(AssertionError, match=r"three gradients \(dx, dW, db\).*length 2"):
        lesson05.check_linear_backward(linear_forward, lambda d, c: (d @ c[1].T, c[0].T @ d), "dx")


def test_relu_mask_at_zero_follows_pytorch():
    with pytest.raises(AssertionError, match="exact zeros"):
        lesson05.check_relu_backward(relu_forward, lambda d, x: d * (x >= 0))


def test_a_missing_upstream_gradient_is_named():
    with pytest.raises(AssertionError, match="local derivative alone"):
        lesson05.check_relu_backward(relu_forward, lambda d, x: (x > 0).to(d.dtype))
    with pytest.raises(AssertionError, match="local derivative alone"):
        lesson05.check_sigmoid_backward(sigmoid_forward, lambda d, s: s * (1 - s))


def test_sigma_instead_of_its_derivative_is_named():
    with pytest.raises(AssertionError, match=r"σ\(x\)·\(1 − σ\(x\)\)"):
        lesson05.check_sigmoid_backward(sigmoid_forward, lambda d, s: d * s)


def test_a_hard_coded_gradient_fails():
    # the visible test's answer for relu, whatever the input
    with pytest.raises(AssertionError, match="dx"):
        lesson05.check_relu_backward(relu_forward, lambda d, x: torch.tensor([[0.0, 0.0, 30.0]]))


def test_a_gradient_in_another_dtype_fails_even_with_right_values():
    with pytest.raises(AssertionError, match="right values.*float32"):
        lesson05.check_sigmoid_backward(sigmoid_forward, lambda d, s: (d * s * (1 - s)).float())


def test_finite_differences_catch_what_autograd_comparison_is_given():
    """The float64 third opinion runs: a gradient that matches autograd must also match finite differences."""
    calls = []
    real = lesson05.numerical_grads

    def spy(fn, *inputs):
        calls.append(tuple(x.dtype for x in inputs))
        return real(fn, *inputs)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(lesson05, "numerical_grads", spy)
        lesson05.check_linear_backward(linear_forward, linear_backward, "dW")
    assert calls and all(d == torch.float64 for dtypes in calls for d in dtypes)


def test_two_layer_gradients_are_each_checked():
    def double_W1(X, y, params):
        loss, grads = two_layer_loss_and_grads(X, y, params)
        return loss, {**grads, "W1": 2 * grads["W1"]}
    with pytest.raises(AssertionError, match="dJ/dW1 is wrong.*2 ×"):
        lesson05.check_two_layer_loss_and_grads(double_W1)

    def no_b2(X, y, params):
        loss, grads = two_layer_loss_and_grads(X, y, params)
        del grads["b2"]
        return loss, grads
    with pytest.raises(AssertionError, match=r"no entry for \['b2'\]"):
        lesson05.check_two_layer_loss_and_grads(no_b2)


def test_two_layer_forgetting_the_mean_in_the_loss_fails():
    def sum_loss(X, y, params):
        loss, grads = two_layer_loss_and_grads(X, y, params)
        return loss * len(y), grads
    with pytest.raises(AssertionError, match="loss is wrong"):
        lesson05.check_two_layer_loss_and_grads(sum_loss)


def test_two_layer_with_a_wrong_layer_inside_fails():
    def transposed_dW(dout, cache):
        x, W, b = cache
        return dout @ W.T, (x.T @ dout).T.reshape(x.shape[1], -1), dout.sum(dim=0)
    with pytest.raises(AssertionError, match="dJ/dW"):
        lesson05.check_two_layer_loss_and_grads(
            lambda X, y, p: two_layer_loss_and_grads(X, y, p, backward=transposed_dW))


def test_two_layer_must_return_loss_and_a_dict():
    with pytest.raises(AssertionError, match=r"\(loss, grads\) with grads a dict"):
        lesson05.check_two_layer_loss_and_grads(lambda X, y, p: two_layer_loss_and_grads(X, y, p)[1])


def test_a_loss_as_a_python_float_is_accepted():
    def float_loss(X, y, params):
        loss, grads = two_layer_loss_and_grads(X, y, params)
        return loss.item(), grads
    lesson05.check_two_layer_loss_and_grads(float_loss)
