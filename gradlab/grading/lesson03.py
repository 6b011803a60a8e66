"""Hidden checks of lesson 3 (backpropagation by hand through z = w·x + b → σ(z) → J).

J is the mean squared error over a batch: J = (1/N) Σ_i (σ(w·x_i + b) − y_i)², with x and y of shape (N,)
and w, b scalars. The forward cache is the tuple (x, y, z, s) with s = σ(z), as the lesson prescribes.
Every expected value comes from torch autograd on the same inputs.
"""
import math

import torch

from gradlab.check import autograd_grads
from gradlab.grading import common


def cost(x, y, w, b):
    """The reference computation: mean squared error of the sigmoid neuron over the batch."""
    return ((torch.sigmoid(w * x + b) - y) ** 2).mean()


def _pair(result, name, what, case):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise AssertionError(f"`{name}` should return a pair ({what}), but returned {type(result).__name__} ({case}).")
    return result


def _unchanged(name, before, after, case):
    for what, old, new in zip(("x", "y", "z", "s"), before, after):
        if not torch.equal(old, new):
            raise AssertionError(
                f"`{name}` changed its input `{what}` in place ({case}). Compute new tensors instead "
                f"(e.g. `a = a * 2`, not `a *= 2`): the caller still needs the originals."
            )


@common.graded
def check_forward(forward):
    """forward(x, y, w, b) -> (J, (x, y, z, s)): the cost and every intermediate."""
    for label, gen, n, dtype, device in common.cases(301):
        x, y, w, b = common.neuron_batch(gen, n, dtype, device)
        J, cache = _pair(common.call_student(forward, "forward", x, y, w, b, case=label), "forward", "J, cache", label)
        common.check_tensor("J", J, cost(x, y, w, b), label)
        if not isinstance(cache, (tuple, list)) or len(cache) != 4:
            raise AssertionError(f"the cache should be the tuple (x, y, z, s), but it is {cache!r:.80} ({label}).")
        z = w * x + b
        common.check_tensor("z in the cache", cache[2], z, label)
        common.check_tensor("s = σ(z) in the cache", cache[3], torch.sigmoid(z), label)


@common.graded
def check_dJ_dsigma(dJ_dsigma):
    """dJ_dsigma(s, y) -> (N,): ∂J/∂s_i for J = mean((s − y)²)."""
    for label, gen, n, dtype, device in common.cases(302):
        s = torch.sigmoid(common.randn(gen, n, dtype=dtype, device=device, scale=2.0))
        y = common.labels(gen, n, dtype, device)
        (expected,) = autograd_grads(lambda s_: ((s_ - y) ** 2).mean(), s)
        got = common.call_student(dJ_dsigma, "dJ_dsigma", s, y, case=label)
        common.check_tensor("dJ/dσ", got, expected, label)


@common.graded
def check_dsigma_dz(dsigma_dz):
    """dsigma_dz(z) -> (N,): σ'(z_i), elementwise."""
    for label, gen, n, dtype, device in common.cases(303):
        z = common.randn(gen, n, dtype=dtype, device=device, scale=3.0)
        # Each σ(z_i) depends on z_i alone, so the gradient of the sum is the elementwise derivative.
        (expected,) = autograd_grads(lambda z_: torch.sigmoid(z_).sum(), z)
        got = common.call_student(dsigma_dz, "dsigma_dz", z, case=label)
        common.check_tensor("dσ/dz", got, expected, label)


@common.graded
def check_dz_dw(dz_dw):
    """dz_dw(x) -> (N,): ∂z_i/∂w for z_i = w·x_i + b."""
    for label, gen, n, dtype, device in common.cases(304):
        x, _, w, b = common.neuron_batch(gen, n, dtype, device)
        # Give every observation its own copy of w, so autograd returns ∂z_i/∂w one by one.
        (expected,) = autograd_grads(lambda w_: (w_ * x + b).sum(), w * torch.ones_like(x))
        got = common.call_student(dz_dw, "dz_dw", x, case=label)
        common.check_tensor("dz/dw", got, expected, label)


@common.graded
def check_dz_db(dz_db):
    """dz_db(x) -> (N,): ∂z_i/∂b for z_i = w·x_i + b (the same dtype and device as x)."""
    for label, gen, n, dtype, device in common.cases(305):
        x, _, w, b = common.neuron_batch(gen, n, dtype, device)
        (expected,) = autograd_grads(lambda b_: (w * x + b_).sum(), b * torch.ones_like(x))
        got = common.call_student(dz_db, "dz_db", x, case=label)
        common.check_tensor("dz/db", got, expected, label)


@common.graded
def check_backward(backward):
    """backward((x, y, z, s)) -> (dJ/dw, dJ/db), both 0-dim, against autograd of the mean squared error."""
    for label, gen, n, dtype, device in common.cases(306):
        x, y, w, b = common.neuron_batch(gen, n, dtype, device)
        z = w * x + b
        cache = (x, y, z, torch.sigmoid(z))
        before = tuple(t.clone() for t in cache)
        dw, db = _pair(common.call_student(backward, "backward", cache, case=label), "backward", "dJ/dw, dJ/db", label)
        _unchanged("backward", before, cache, label)
        expected_dw, expected_db = autograd_grads(lambda w_, b_: cost(x, y, w_, b_), w, b)
        common.check_tensor("dJ/dw", dw, expected_dw, label)
        common.check_tensor("dJ/db", db, expected_db, label)


def reference_training(x, y, w, b, lr, passes, x_for_w=None):
    """Stochastic gradient descent, one observation at a time, each gradient from autograd (float64, CPU).

    ``x_for_w`` replays a known mistake: ∂J/∂w computed with that x in every step instead of the current x_i.
    Returns (w, b) as Python floats. (Plain updates rather than torch.optim.SGD, which computes the same
    step but imports torch._dynamo on its first call: seconds of a grading run.)
    """
    w = torch.tensor(float(w), dtype=torch.float64)
    b = torch.tensor(float(b), dtype=torch.float64)
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    for _ in range(passes):
        for i in range(len(x)):
            dw, db = autograd_grads(lambda w_, b_: (torch.sigmoid(w_ * x[i] + b_) - y[i]) ** 2, w, b)
            if x_for_w is not None:  # ∂J/∂w = x_i · ∂J/∂z, so rescaling swaps x_i for the stale x (x_i ≠ 0)
                dw = dw * float(x_for_w) / float(x[i])
            w, b = w - lr * dw, b - lr * db
    return w.item(), b.item()


def _as_float(value, name, what, case):
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise AssertionError(f"`{name}` should return {what} as one number, not a tensor of shape {tuple(value.shape)} ({case}).")
        value = value.item()
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise AssertionError(f"`{name}` should return {what} as a number, but returned {type(value).__name__} ({case}).") from None
    if not math.isfinite(value):
        raise AssertionError(f"`{name}` returned {what} = {value} ({case}): the training diverged or divided by zero.")
    return value


@common.graded
def check_train_by_hand(train_by_hand):
    """train_by_hand(x, y, w, b, lr, passes) -> (w, b): per-observation SGD with hand gradients."""
    for label, gen, n, dtype, device in common.cases(307, sizes=(1, 6, 15)):
        x, y, w0, b0 = common.neuron_batch(gen, n, dtype, device)
        x = x.abs() + 0.1  # positive like the lesson's mean_area, and never 0 (the stale-x replay divides by x_i)
        w0, b0, lr, passes = w0.item(), b0.item(), 0.5, 3
        case = f"{label}, {passes} passes, lr={lr}, start w={w0:.4f}, b={b0:.4f}"
        before = (x.clone(), y.clone())
        result = _pair(common.call_student(train_by_hand, "train_by_hand", x, y, w0, b0, lr, passes, case=case),
                       "train_by_hand", "w, b", case)
        _unchanged("train_by_hand", before, (x, y), case)
        got = tuple(_as_float(v, "train_by_hand", what, case) for v, what in zip(result, ("w", "b")))
        expected = reference_training(x, y, w0, b0, lr, passes)
        tol = 1e-4 if dtype == torch.float32 else 1e-8
        if _close(got, expected, tol):
            continue
        advice = next(
            (mistake for mistake, params in _known_mistakes(x, y, w0, b0, lr, passes).items() if _close(got, params, tol)),
            "Run your loop and the lesson's PyTorch loop side by side on two observations and one pass, and "
            "print w and b after every step: the first step where they differ holds the bug.",
        )
        raise AssertionError(
            f"train_by_hand ended at w={got[0]:.6f}, b={got[1]:.6f}, but should end at "
            f"w={expected[0]:.6f}, b={expected[1]:.6f} ({case}).\n  {advice}"
        )


def _close(got, expected, tol):
    return all(abs(g - e) <= tol * (1 + abs(e)) for g, e in zip(got, expected))


def _known_mistakes(x, y, w0, b0, lr, passes):
    """Final parameters of typical wrong loops, keyed by the advice that fixes each."""
    return {
        "It matches a loop that uses the first observation's x in every step's ∂J/∂w: "
        "use the current observation x[i] inside the loop.": reference_training(x, y, w0, b0, lr, passes, x_for_w=x[0]),
        "It matches a loop that steps uphill (θ + lr·gradient): subtract the gradient.":
            reference_training(x, y, w0, b0, -lr, passes),
        "It matches a loop that makes only one pass: repeat the pass over the observations `passes` times.":
            reference_training(x, y, w0, b0, lr, 1),
        "It matches full-batch gradient descent (one step per pass on the mean cost): "
        "this loop updates w and b after every single observation.": _full_batch(x, y, w0, b0, lr, passes),
    }


def _full_batch(x, y, w0, b0, lr, passes):
    w, b = torch.tensor(w0, dtype=torch.float64), torch.tensor(b0, dtype=torch.float64)
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    for _ in range(passes):
        dw, db = autograd_grads(lambda w_, b_: cost(x, y, w_, b_), w, b)
        w, b = w - lr * dw, b - lr * db
    return w.item(), b.item()
