"""Gradient descent as the explorer widgets run it: slopes from torch autograd, divergence caught.

A cost takes n 0-d float64 tensors (θ, or w and b) and returns a 0-d tensor J. Numbers blowing up is
what a too-large learning rate is meant to show, so :func:`descend` never raises on inf or nan: it
stops the path and says why. A cost that is not usable at all (wrong return type, detached from its
parameters) raises a clear error instead.
"""
from dataclasses import dataclass

import numpy as np
import torch

# A path counts as diverged once a parameter is this many plot widths beyond the plotted range.
ESCAPE_SPANS = 10.0


@dataclass(frozen=True)
class Descent:
    """A descent path of m+1 usable points.

    points: (m+1, n) parameter values θ_0..θ_m, all finite and inside the sane box.
    costs: (m+1,) J at each point.  grads: (m+1, n) ∇J at each point.
    diverged_at: index of the first step that left the sane box or made J or ∇J inf/nan (so it
    equals m+1), None when every step was fine.  reason: why it diverged, in words.
    """

    points: np.ndarray
    costs: np.ndarray
    grads: np.ndarray
    diverged_at: int | None
    reason: str | None


def value_and_grad(cost, point):
    """J and ∇J at ``point`` (n floats), the gradient by torch autograd. Returns (float, (n,) array)."""
    params = [torch.tensor(float(v), dtype=torch.float64, requires_grad=True) for v in point]
    J = _checked_scalar(cost(*params))
    grads = torch.autograd.grad(J, params, allow_unused=True)
    # A parameter the cost ignores has slope 0, which autograd reports as None.
    return float(J.detach()), np.array([0.0 if g is None else float(g) for g in grads])


def _checked_scalar(J):
    if not isinstance(J, torch.Tensor):
        raise TypeError(f"the cost must return a torch tensor J; it returned {type(J).__name__}")
    if J.numel() != 1:
        raise ValueError(f"the cost must return one number (a 0-d tensor); it returned shape {tuple(J.shape)}")
    if not J.requires_grad:
        raise TypeError(
            "the cost's result is not connected to its parameters, so autograd cannot give the slope: "
            "compute J from the tensors it is given with torch operations (no .item(), float() or NumPy)"
        )
    return J.reshape(())


def descend(cost, start, lr, max_steps, low, high, names=("θ",)):
    """Run ``max_steps`` steps of p ← p − lr·∇J(p) from ``start``; returns a :class:`Descent`.

    low, high: (n,) bounds of the plotted box; the path stops when a point lands more than
    ESCAPE_SPANS box widths outside it, or when p, J or ∇J stops being finite.
    """
    low, high = np.asarray(low, float), np.asarray(high, float)
    span = high - low
    box_lo, box_hi = low - ESCAPE_SPANS * span, high + ESCAPE_SPANS * span
    point = np.asarray(start, float)
    points, costs, grads = [], [], []
    reason = None
    for _ in range(max_steps + 1):
        if not np.all(np.isfinite(point)):
            reason = f"{_label(names)} became inf or nan"
        elif np.any(point < box_lo) or np.any(point > box_hi):
            reason = f"{_label(names)} = {_fmt(point)} ran far outside the plot"
        else:
            J, g = value_and_grad(cost, point)
            if not np.isfinite(J):
                reason = f"J became {J} at {_label(names)} = {_fmt(point)}"
            elif not np.all(np.isfinite(g)):
                reason = f"the slope became inf or nan at {_label(names)} = {_fmt(point)}"
        if reason is not None:
            break
        points.append(point)
        costs.append(J)
        grads.append(g)
        with np.errstate(over="ignore", invalid="ignore"):
            point = point - lr * g
    n = len(point)
    return Descent(
        points=np.array(points, dtype=float).reshape(-1, n),
        costs=np.array(costs, dtype=float),
        grads=np.array(grads, dtype=float).reshape(-1, n),
        diverged_at=len(points) if reason is not None else None,
        reason=reason,
    )


def _label(names):
    return names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"


def _fmt(point):
    values = [f"{v:.3g}" for v in point]
    return values[0] if len(values) == 1 else "(" + ", ".join(values) + ")"


def evaluate_grid(cost, *grids):
    """J at every point of a grid: ``grids`` are n arrays of one shape; returns a float array of it.

    One vectorised call is tried first (a cost written with broadcasting torch operations), checked
    against pointwise calls at a few grid points; if it fails or disagrees, the cost is called once
    per point. inf becomes nan so the plot leaves a gap instead of breaking its scale.
    """
    shape = np.shape(grids[0])
    flat = [np.asarray(g, dtype=float).ravel() for g in grids]
    probe = np.unique(np.linspace(0, flat[0].size - 1, 5).astype(int))
    with torch.no_grad():
        values = _vectorised(cost, flat)
        expected = _pointwise(cost, [f[probe] for f in flat])
        if values is None or not np.allclose(values[probe], expected, rtol=1e-5, atol=1e-9, equal_nan=True):
            values = _pointwise(cost, flat)
    values = values.reshape(shape).copy()
    values[~np.isfinite(values)] = np.nan
    return values


def _vectorised(cost, flat):
    try:
        out = cost(*[torch.as_tensor(f, dtype=torch.float64) for f in flat])
    except (RuntimeError, TypeError, ValueError, IndexError):
        return None  # the cost does not broadcast (e.g. it multiplies by a data vector): go pointwise
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != flat[0].shape:
        return None
    return out.detach().to("cpu", torch.float64).numpy()


def _pointwise(cost, flat):
    values = [cost(*[torch.tensor(float(f[i]), dtype=torch.float64) for f in flat]).reshape(()) for i in range(flat[0].size)]
    # One stack and one copy, so a cost on the GPU synchronises once, not once per point.
    return torch.stack(values).detach().to("cpu", torch.float64).numpy()
