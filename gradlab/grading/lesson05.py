"""Hidden checks of lesson 5 (backprop for whole layers, in matrix form).

Layers follow the API ``X_forward(...) -> (out, cache)`` and ``X_backward(dout, cache) -> gradients``, with the
linear layer's W of shape (D_in, D_out). A backward function is tested on the cache made by the student's own
forward function, against autograd and, in float64, against finite differences.
"""
import torch

from gradlab.check import autograd_grads, compare, numerical_grads
from gradlab.grading import common

LAYER_NAMES = ("W1", "b1", "W2", "b2")


def _pair(result, name, case):
    if not isinstance(result, tuple) or len(result) != 2:
        raise AssertionError(
            f"`{name}` should return a pair (out, cache), but returned {type(result).__name__} ({case})."
        )
    return result


def _forward(forward, name, args, expected, case):
    """Run the student's forward, check its output, and return its cache."""
    out, cache = _pair(common.call_student(forward, name, *args, case=case), name, case)
    common.check_tensor(f"{name} output", out, expected, case)
    return cache


def _against_finite_differences(names, got, fn, inputs, case, positions=None):
    """A third opinion in float64, on small inputs only (each entry costs two evaluations of fn).

    positions: which of fn's gradients ``got`` holds (all of them when None)."""
    if inputs[0].dtype != torch.float64 or inputs[0].numel() > 64:
        return
    numerical = numerical_grads(fn, *inputs)
    numerical = numerical if positions is None else [numerical[k] for k in positions]
    for name, g, expected in zip(names, got, numerical):
        common.check_tensor(f"{name} (vs finite differences)", g, expected, case, atol=1e-6, rtol=1e-5)


def _linear_inputs(gen, n, dtype, device):
    d_in, d_out = 2 + n % 5, 1 + n % 4
    x = common.randn(gen, n, d_in, dtype=dtype, device=device)
    W = common.randn(gen, d_in, d_out, dtype=dtype, device=device)
    b = common.randn(gen, d_out, dtype=dtype, device=device)
    return x, W, b, f"x {tuple(x.shape)}, W {tuple(W.shape)}, b {tuple(b.shape)}"


@common.graded
def check_linear_forward(linear_forward):
    """linear_forward(x, W, b) returns (x @ W + b, cache)."""
    for label, gen, n, dtype, device in common.cases(501):
        x, W, b, shapes = _linear_inputs(gen, n, dtype, device)
        _forward(linear_forward, "linear_forward", (x, W, b), x @ W + b, f"{shapes}, {label}")


@common.graded
def check_relu_forward(relu_forward):
    for label, gen, n, dtype, device in common.cases(502):
        x = common.randn(gen, n, 5, dtype=dtype, device=device)
        _forward(relu_forward, "relu_forward", (x,), torch.relu(x), label)


@common.graded
def check_sigmoid_forward(sigmoid_forward):
    for label, gen, n, dtype, device in common.cases(503):
        x = common.randn(gen, n, 5, dtype=dtype, device=device, scale=3.0)
        _forward(sigmoid_forward, "sigmoid_forward", (x,), torch.sigmoid(x), label)


@common.graded
def check_linear_backward(linear_forward, linear_backward, which=("dx", "dW", "db")):
    """linear_backward(dout, cache) returns (dx, dW, db) = (dout @ Wᵀ, xᵀ @ dout, column sums of dout).

    which: the gradient(s) to check, e.g. "dW", so that each has its own test cell and its own points.
    """
    which = (which,) if isinstance(which, str) else tuple(which)
    names = ("dx", "dW", "db")
    for label, gen, n, dtype, device in common.cases(504):
        x, W, b, shapes = _linear_inputs(gen, n, dtype, device)
        case = f"{shapes}, {label}"
        dout = common.randn(gen, n, W.shape[1], dtype=dtype, device=device)
        cache = _forward(linear_forward, "linear_forward", (x, W, b), x @ W + b, case)
        result = common.call_student(linear_backward, "linear_backward", dout, cache, case=case)
        if not isinstance(result, tuple) or len(result) != 3:
            length = f" of length {len(result)}" if isinstance(result, tuple) else ""
            raise AssertionError(
                f"`linear_backward` should return three gradients (dx, dW, db), but returned "
                f"{type(result).__name__}{length} ({case})."
            )

        def fn(x_, W_, b_):  # the scalar whose gradients backward computes: Σ out · dout
            return ((x_ @ W_ + b_) * dout).sum()

        picked = [k for k, name in enumerate(names) if name in which]
        expected = autograd_grads(fn, x, W, b)
        for k in picked:
            common.check_tensor(names[k], result[k], expected[k], case)
        _against_finite_differences([names[k] for k in picked], [result[k] for k in picked], fn, (x, W, b), case,
                                    picked)


@common.graded
def check_relu_backward(relu_forward, relu_backward):
    """relu_backward(dout, cache) = dout where x > 0, else 0 (also 0 at x = 0, as in PyTorch)."""
    for label, gen, n, dtype, device in common.cases(505):
        x = common.randn(gen, n, 6, dtype=dtype, device=device)
        dout = common.randn(gen, n, 6, dtype=dtype, device=device)
        _run_elementwise("relu", relu_forward, relu_backward, torch.relu, x, dout, label)
    x = torch.tensor([[-1.0, 0.0, 2.0], [0.0, 3.0, -0.5]], dtype=torch.float64)
    dout = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
    _run_elementwise("relu", relu_forward, relu_backward, torch.relu, x, dout,
                     "x holds exact zeros, where ReLU's slope is taken as 0 (as PyTorch does)", numerical=False)


@common.graded
def check_sigmoid_backward(sigmoid_forward, sigmoid_backward):
    """sigmoid_backward(dout, cache) = dout · σ(x)(1 − σ(x))."""
    for label, gen, n, dtype, device in common.cases(506):
        x = common.randn(gen, n, 6, dtype=dtype, device=device, scale=3.0)
        dout = common.randn(gen, n, 6, dtype=dtype, device=device)
        _run_elementwise("sigmoid", sigmoid_forward, sigmoid_backward, torch.sigmoid, x, dout, label)


def _run_elementwise(layer, forward, backward, reference, x, dout, case, numerical=True):
    cache = _forward(forward, f"{layer}_forward", (x,), reference(x), case)
    got = common.call_student(backward, f"{layer}_backward", dout, cache, case=case)
    (expected,) = autograd_grads(lambda x_: (reference(x_) * dout).sum(), x)
    local = expected / dout  # dout has no zeros: it is drawn from a normal distribution
    slips = {
        "it is the local derivative alone: multiply it by the upstream gradient dout (chain rule)": local,
        "it multiplies dout by σ(x), but the sigmoid's derivative is σ(x)·(1 − σ(x))": dout * torch.sigmoid(x),
    }
    if not compare("dx", got, expected).ok:
        for slip, value in slips.items():
            if compare("dx", got, value).ok:
                raise AssertionError(f"{layer}_backward is wrong ({case}): {slip}.")
    common.check_tensor("dx", got, expected, case)
    if numerical:
        _against_finite_differences(("dx",), (got,), lambda x_: (reference(x_) * dout).sum(), (x,), case)


def two_layer_loss(X, y, params):
    """The lesson's network: sigmoid(relu(X W1 + b1) W2 + b2), mean squared error against y of shape (N, 1)."""
    hidden = torch.relu(X @ params["W1"] + params["b1"])
    p = torch.sigmoid(hidden @ params["W2"] + params["b2"])
    return ((p - y) ** 2).mean()


@common.graded
def check_two_layer_loss_and_grads(two_layer_loss_and_grads):
    """two_layer_loss_and_grads(X, y, params) -> (loss, grads) with grads[name] = ∂J/∂params[name]."""
    for label, gen, n, dtype, device in common.cases(507):
        d, h = 3 + n % 6, 2 + n % 5
        X = common.randn(gen, n, d, dtype=dtype, device=device)
        y = (torch.rand(n, 1, generator=gen) < 0.5).to(dtype=dtype, device=device)
        params = {
            "W1": common.randn(gen, d, h, dtype=dtype, device=device),
            "b1": common.randn(gen, h, dtype=dtype, device=device, scale=0.5),
            "W2": common.randn(gen, h, 1, dtype=dtype, device=device),
            "b2": common.randn(gen, 1, dtype=dtype, device=device, scale=0.5),
        }
        case = f"X {tuple(X.shape)}, hidden width {h}, {label}"
        result = common.call_student(
            two_layer_loss_and_grads, "two_layer_loss_and_grads", X, y, dict(params), case=case
        )
        if not isinstance(result, tuple) or len(result) != 2 or not isinstance(result[1], dict):
            raise AssertionError(
                f"`two_layer_loss_and_grads` should return (loss, grads) with grads a dict, but returned "
                f"{type(result).__name__} ({case})."
            )
        loss, grads = result
        if isinstance(loss, (int, float)):  # a loss returned with .item() is fine too
            loss = torch.tensor(loss, dtype=dtype, device=device)
        expected = autograd_grads(lambda *p: two_layer_loss(X, y, dict(zip(LAYER_NAMES, p))),
                                  *(params[k] for k in LAYER_NAMES))
        common.check_tensor("loss", loss, two_layer_loss(X, y, params), case)
        missing = [k for k in LAYER_NAMES if k not in grads]
        if missing:
            raise AssertionError(f"grads has no entry for {missing}; it should have the keys {list(LAYER_NAMES)} ({case}).")
        for name, g in zip(LAYER_NAMES, expected):
            common.check_tensor(f"dJ/d{name}", grads[name], g, case)
