"""Hidden checks of lesson 1 (one neuron: the linear layer, the sigmoid, SSE and MSE, dSSE/dw by hand).

Inputs follow the lesson's shapes: X of shape (N, 1), labels y of shape (N,), predictions h of shape (N, 1),
scalar parameters w and b. Expected values come from torch (autograd for the derivative) on the same inputs.
"""
import torch

from gradlab.check import autograd_grads
from gradlab.grading import common


def _column(gen, n, dtype, device):
    """X of shape (n, 1), positive like mean_area."""
    return common.randn(gen, n, 1, dtype=dtype, device=device).abs() + 0.1


def _trap_hint(name, got, trapped, expected, case):
    """Name the broadcasting trap when ``got`` is what (N, 1) − (N,) → (N, N) gives instead of ``expected``."""
    if not isinstance(got, torch.Tensor) or got.numel() != 1 or torch.allclose(trapped, expected, rtol=1e-3):
        return
    if torch.allclose(got.detach().reshape(()).to(trapped), trapped, rtol=1e-4):
        raise AssertionError(
            f"{name} is wrong ({case}): it equals what the broadcasting trap gives. h has shape (N, 1) and y has "
            f"shape (N,), so h − y broadcasts to an (N, N) matrix of every prediction minus every label. "
            f"Subtract y.reshape(-1, 1) (shape (N, 1)) instead."
        )


@common.graded
def check_linear(linear):
    """linear(X, w, b=0.0) -> X·w + b, shape (N, 1)."""
    for label, gen, n, dtype, device in common.cases(101):
        X = _column(gen, n, dtype, device)
        w, b = common.scalar(gen, dtype, device, scale=2.0), common.scalar(gen, dtype, device)
        common.check_tensor("z = X·w + b", common.call_student(linear, "linear", X, w, b, case=label), X * w + b, label)
        without_bias = common.call_student(linear, "linear", X, w, case=label + ", b left out")
        common.check_tensor("z = X·w (b left out, so 0)", without_bias, X * w, label + ", b left out")


@common.graded
def check_sigmoid(sigmoid):
    """sigmoid(z) -> 1 / (1 + e^(−z)) elementwise, any shape, against torch.sigmoid."""
    for label, gen, n, dtype, device in common.cases(102):
        for shape in ((n,), (n, 1)):
            z = common.randn(gen, *shape, dtype=dtype, device=device, scale=4.0)
            got = common.call_student(sigmoid, "sigmoid", z, case=f"{label}, shape {shape}")
            common.check_tensor("σ(z)", got, torch.sigmoid(z), f"{label}, shape {shape}")


def _predictions_and_labels(gen, n, dtype, device):
    h = torch.sigmoid(common.randn(gen, n, 1, dtype=dtype, device=device, scale=2.0))
    return h, common.labels(gen, n, dtype, device)


@common.graded
def check_sse(sse):
    """sse(h, y) -> Σ_i (h_i − y_i)², a 0-dim tensor, with h of shape (N, 1) and y of shape (N,)."""
    for label, gen, n, dtype, device in common.cases(103):
        h, y = _predictions_and_labels(gen, n, dtype, device)
        expected = ((h - y.reshape(-1, 1)) ** 2).sum()
        got = common.call_student(sse, "sse", h, y, case=label)
        _trap_hint("SSE", got, ((h - y) ** 2).sum(), expected, label)
        common.check_tensor("SSE", got, expected, label)


@common.graded
def check_mse(mse):
    """mse(h, y) -> (1/N) Σ_i (h_i − y_i)², a 0-dim tensor, with h of shape (N, 1) and y of shape (N,)."""
    for label, gen, n, dtype, device in common.cases(104):
        h, y = _predictions_and_labels(gen, n, dtype, device)
        expected = ((h - y.reshape(-1, 1)) ** 2).mean()
        got = common.call_student(mse, "mse", h, y, case=label)
        _trap_hint("MSE", got, ((h - y) ** 2).mean(), expected, label)
        common.check_tensor("MSE", got, expected, label)


@common.graded
def check_dsse_dw(dsse_dw):
    """dsse_dw(X, y, w) -> dSSE/dw for SSE(w) = Σ_i (σ(x_i·w) − y_i)², a 0-dim tensor, against autograd."""
    for label, gen, n, dtype, device in common.cases(105):
        X = _column(gen, n, dtype, device)
        y = common.labels(gen, n, dtype, device)
        w = common.scalar(gen, dtype, device)
        (expected,) = autograd_grads(lambda w_: ((torch.sigmoid(X * w_) - y.reshape(-1, 1)) ** 2).sum(), w)
        got = common.call_student(dsse_dw, "dsse_dw", X, y, w, case=label)
        (trapped,) = autograd_grads(lambda w_: ((torch.sigmoid(X * w_) - y) ** 2).sum(), w)
        _trap_hint("dSSE/dw", got, trapped, expected, label)
        common.check_tensor("dSSE/dw", got, expected, label)
