"""Hidden checks of lesson 2 (gradient descent on the sigmoid neuron's mean squared error).

J(w, b) = (1/N) Σ_i (σ(w·x_i + b) − y_i)², with x and y of shape (N,) and w, b 0-dim tensors.
Gradients and steps are compared with torch autograd on fresh random batches. The descent loop runs on
fresh data shaped like the cell data (areas in thousands, labels 0/1), from starts the lesson does not
use, and must bring J under the threshold that ``threshold_for`` computes for that data by the rule the
lesson states.
"""
import math
import signal
import threading
import time
from contextlib import contextmanager

import torch

from gradlab.check import autograd_grads
from gradlab.grading import common

# The loop must close all but this fraction of the gap between the best constant guess and the best neuron.
GAP_LEFT = 0.05
# Seconds the student's loop may take on one data set (the lesson's own loop needs well under 0.1 s).
FIT_SECONDS = 3.0
# Starts the hidden test descends from; the lesson itself starts at (1, 0).
FIT_STARTS = ((0.0, 0.0), (4.0, -2.0), (-1.0, 1.0))


def cost(x, y, w, b):
    """The reference computation: mean squared error of the sigmoid neuron over the batch."""
    return ((torch.sigmoid(w * x + b) - y) ** 2).mean()


# --------------------------------------------------------------------------- the threshold rule
def best_cost(x, y):
    """The smallest J(w, b) this neuron can reach on (x, y), in float64 on the CPU: a grid, then Newton.

    The grid runs over standardised coordinates (z = a·u + c with u = (x − mean)/std), so it fits any
    scale of x; Newton's method then polishes the best grid point, halving a step that does not lower J.
    """
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    mean, std = x.mean(), x.std(unbiased=False).clamp_min(1e-12)
    u = (x - mean) / std
    a, c = torch.meshgrid(torch.linspace(-30, 30, 61, dtype=torch.float64),
                          torch.linspace(-15, 15, 31, dtype=torch.float64), indexing="ij")
    grid = ((torch.sigmoid(a[..., None] * u + c[..., None]) - y) ** 2).mean(dim=-1)
    best = int(grid.argmin())
    p = torch.stack([a.flatten()[best], c.flatten()[best]])

    def J(q):
        return cost(u, y, q[0], q[1])

    for _ in range(100):
        g, H = _grad_hessian(u, y, p)
        step = -torch.linalg.solve(H, g) if torch.linalg.eigvalsh(H).min() > 0 else -g
        t, now = 1.0, J(p)
        while t > 1e-10 and J(p + t * step) >= now:
            t /= 2
        if t <= 1e-10:  # no step lowers J any more: this is the minimum to float64 precision
            break
        p = p + t * step
    return float(J(p))


def _grad_hessian(u, y, p):
    """Gradient and Hessian of J(a, c) = mean((σ(a·u + c) − y)²), by the chain rule (checked in the tests)."""
    s = torch.sigmoid(p[0] * u + p[1])
    ds = s * (1 - s)
    d1 = 2 * (s - y) * ds / len(u)  # ∂J/∂z_i
    d2 = 2 * (ds * ds + (s - y) * ds * (1 - 2 * s)) / len(u)  # ∂²J/∂z_i²
    g = torch.stack([(d1 * u).sum(), d1.sum()])
    H = torch.stack([torch.stack([(d2 * u * u).sum(), (d2 * u).sum()]),
                     torch.stack([(d2 * u).sum(), d2.sum()])])
    return g, H


def threshold_for(x, y):
    """The cost a descent must get under on (x, y): the best neuron's J plus GAP_LEFT of the gap to the
    best constant prediction (predicting the mean of y everywhere, whose J is the variance of y)."""
    y64 = y.detach().double().cpu()
    constant = float(((y64 - y64.mean()) ** 2).mean())
    best = best_cost(x, y)
    return best + GAP_LEFT * (constant - best)


# --------------------------------------------------------------------------- inputs
def cell_like(gen, n, dtype=torch.float64, device="cpu"):
    """n samples shaped like the cell data: log-normal areas (mean about 0.65, in thousands) and labels
    drawn from a sigmoid boundary whose position and steepness change from one data set to the next."""
    area = torch.exp(-0.55 + 0.5 * torch.randn(n, generator=gen, dtype=torch.float64))
    steep = 9.0 + 6.0 * float(torch.rand((), generator=gen, dtype=torch.float64))
    edge = 0.45 + 0.45 * float(torch.rand((), generator=gen, dtype=torch.float64))
    p = torch.sigmoid(steep * (area - edge))
    y = (torch.rand(n, generator=gen, dtype=torch.float64) < p).double()
    return area.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device)


# --------------------------------------------------------------------------- helpers
def _pair(result, name, what, case):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise AssertionError(f"`{name}` should return a pair ({what}), but returned {type(result).__name__} ({case}).")
    return result


def _near(got, expected, dtype):
    """got ≈ expected to within float rounding of the dtype, for spotting a known mistake."""
    return abs(float(got) - float(expected)) <= 1e3 * torch.finfo(dtype).eps * max(1.0, abs(float(expected)))


# --------------------------------------------------------------------------- the checks
@common.graded
def check_dJ_dw(dJ_dw):
    """dJ_dw(x, y, w, b) -> 0-dim ∂J/∂w, against autograd."""
    _check_partial(dJ_dw, "dJ_dw", "∂J/∂w", 0, seed=201)


@common.graded
def check_dJ_db(dJ_db):
    """dJ_db(x, y, w, b) -> 0-dim ∂J/∂b, against autograd."""
    _check_partial(dJ_db, "dJ_db", "∂J/∂b", 1, seed=202)


def _check_partial(fn, name, what, which, seed):
    for label, gen, n, dtype, device in common.cases(seed, sizes=(1, 7, 64, 569)):
        x, y, w, b = common.neuron_batch(gen, n, dtype, device)
        expected = autograd_grads(lambda w_, b_: cost(x, y, w_, b_), w, b)[which]
        got = common.call_student(fn, name, x, y, w, b, case=label)
        common.check_tensor(what, got, expected, label)


@common.graded
def check_gd_step(gd_step):
    """gd_step(x, y, w, b, lr) -> (w_new, b_new): one step of w ← w − η·∂J/∂w, b ← b − η·∂J/∂b."""
    for label, gen, n, dtype, device in common.cases(203, sizes=(1, 7, 64, 569)):
        x, y, w, b = common.neuron_batch(gen, n, dtype, device)
        lr = round(0.3 + 4.0 * float(torch.rand((), generator=gen)), 2)  # never 1, so a missing η shows
        case = f"{label}, lr = {lr}"
        gw, gb = autograd_grads(lambda w_, b_: cost(x, y, w_, b_), w, b)
        args = [t.clone() for t in (x, y, w, b)]  # the student's function may change its own copies
        w_new, b_new = _pair(common.call_student(gd_step, "gd_step", *args, lr, case=case, mutable=(2, 3)),
                             "gd_step", "w_new, b_new", case)
        for got, old, grad, p in ((w_new, w, gw, "w"), (b_new, b, gb, "b")):
            if not isinstance(got, torch.Tensor):
                raise AssertionError(f"{p}_new should be a tensor, but it is a {type(got).__name__} ({case}).")
            step = got.detach() - old
            _diagnose_step(p, step, grad, lr, x, y, w, b, w_new, dtype, case)
            # The step is a difference of two numbers of size |w|: allow for their rounding, not the step's.
            atol = 8 * torch.finfo(dtype).eps * (1 + abs(float(old)))
            common.check_tensor(f"the step in {p} ({p}_new − {p})", step, -lr * grad, case, atol=atol)
            common.check_tensor(f"{p}_new", got, old - lr * grad, case)


def _diagnose_step(p, step, grad, lr, x, y, w, b, w_new, dtype, case):
    """Name the classic mistakes of a descent step before the generic comparison does."""
    if float(grad) == 0 or _near(step, -lr * grad, dtype):
        return
    if _near(step, lr * grad, dtype):
        raise AssertionError(
            f"{p}_new moved uphill ({case}): it is {p} + η·∂J/∂{p}. Gradient descent subtracts: "
            f"{p} ← {p} − η·∂J/∂{p}, because the gradient points the way J grows."
        )
    if _near(step, -grad, dtype):
        raise AssertionError(
            f"{p}_new is {p} − ∂J/∂{p}: the learning rate is missing ({case}). Multiply the gradient by lr."
        )
    if p == "b" and isinstance(w_new, torch.Tensor):
        stale = autograd_grads(lambda b_: cost(x, y, w_new.detach().to(w.dtype), b_), b)[0]
        if _near(step, -lr * stale, dtype):
            raise AssertionError(
                f"b_new used ∂J/∂b at the NEW w ({case}). Compute both gradients at the old (w, b) first, "
                f"then update both: one step moves both parameters from the same point."
            )


class _OutOfTime(BaseException):
    """Raised inside the student's loop when its time is up (a BaseException, so no `except Exception` eats it)."""


@contextmanager
def _time_limit(seconds):
    """Interrupt the block after ``seconds`` where the platform allows it (SIGALRM, main thread only;
    elsewhere, e.g. on Windows, the caller's elapsed-time check still fails a slow loop afterwards)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_fit(fit, x, y, w0, b0, threshold, case, seconds=FIT_SECONDS):
    """Run the student's fit from (w0, b0) under the time limit; check and return (w, b, costs, seconds)."""
    dtype, device = x.dtype, x.device
    w = torch.tensor(w0, dtype=dtype, device=device)
    b = torch.tensor(b0, dtype=dtype, device=device)
    started = time.perf_counter()
    try:
        with _time_limit(seconds):
            result = common.call_student(fit, "fit", x, y, w, b, threshold, case=case)
    except _OutOfTime:
        raise AssertionError(
            f"`fit` was still running after {seconds:g} s ({case}). Does the loop stop as soon as J < threshold, "
            f"and give up after max_steps? Is the learning rate large enough to get there?"
        ) from None
    elapsed = time.perf_counter() - started
    if elapsed > seconds:
        raise AssertionError(f"`fit` took {elapsed:.1f} s; it has {seconds:g} s ({case}).")
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise AssertionError(f"`fit` should return (w, b, costs), but returned {type(result).__name__} ({case}).")
    w_end, b_end, costs = result
    costs = _numbers(costs, case)
    J_start = float(cost(x, y, w0, b0))
    J_end = _final_cost(x, y, w_end, b_end, case)
    if not J_end < threshold:
        raise AssertionError(
            f"after {len(costs) - 1} steps J = {J_end:.5f}, not under the threshold {threshold:.5f} ({case}, "
            f"start (w, b) = ({w0:g}, {b0:g})). Too small a learning rate crawls, too large a one bounces; "
            f"does your loop stop only when J < threshold (or after max_steps)?"
        )
    if not math.isclose(costs[0], J_start, rel_tol=1e-3, abs_tol=1e-6):
        raise AssertionError(
            f"costs[0] is {costs[0]:.6g}, but J at the start (w, b) = ({w0:g}, {b0:g}) is {J_start:.6g} ({case}). "
            f"Start from the w and b that fit is given, and record J before the first step."
        )
    if not math.isclose(costs[-1], J_end, rel_tol=1e-3, abs_tol=1e-6):
        raise AssertionError(
            f"costs[-1] is {costs[-1]:.6g}, but J at the (w, b) you returned is {J_end:.6g} ({case}). "
            f"The last entry should be J at the returned parameters."
        )
    return w_end, b_end, costs, elapsed


def _numbers(costs, case):
    try:
        values = [float(c) for c in costs]
    except (TypeError, ValueError):
        raise AssertionError(f"costs should be a list of numbers, one J per point of the path ({case}).") from None
    if not values:
        raise AssertionError(f"costs is empty; it should start with J at the starting point ({case}).")
    return values


def _final_cost(x, y, w, b, case):
    for p, v in (("w", w), ("b", b)):
        if not isinstance(v, torch.Tensor) or v.numel() != 1:
            raise AssertionError(f"`fit` should return {p} as a 0-dim tensor, not {v!r:.60} ({case}).")
    # In the data's dtype, as the student's loop measured it when it decided to stop.
    return float(cost(x, y, w.detach().to(x.dtype).reshape(()).to(x.device), b.detach().to(x.dtype).reshape(()).to(x.device)))


@common.graded
def check_fit(fit):
    """fit(x, y, w, b, threshold) -> (w, b, costs) gets J under threshold_for(x, y) on fresh data, in time."""
    for i, (label, gen, n, dtype, device) in enumerate(common.cases(204, sizes=(200, 569, 1500))):
        x, y = cell_like(gen, n, dtype, device)
        threshold = threshold_for(x, y)
        w0, b0 = FIT_STARTS[i % len(FIT_STARTS)]
        run_fit(fit, x, y, w0, b0, threshold, f"{label}, fresh data")
