"""Hidden checks of lesson 4 (two inputs, a graph, and an optimiser).

The neuron is f(X) = X @ w + b with X of shape (N, 2), w of shape (2,) and b a scalar tensor; the loss is the
mean squared error L = mean((f(X) − y)²). Each hand gradient is compared with autograd on fresh random inputs.
"""
import numbers
import random

import torch
from torch import nn

from gradlab.check import autograd_grads, compare
from gradlab.grading import common


def mse(X, y, w, b):
    return ((X @ w + b - y) ** 2).mean()


def _inputs(gen, n, dtype, device):
    X = common.randn(gen, n, 2, dtype=dtype, device=device)
    y = common.randn(gen, n, dtype=dtype, device=device, scale=2.0)
    w = common.randn(gen, 2, dtype=dtype, device=device)
    b = common.randn(gen, 1, dtype=dtype, device=device).reshape(())
    return X, y, w, b


def _mistakes(X, y, w, b, which):
    """What typical slips give, so that the feedback can name the slip. which: 0 = w1, 1 = w2, 2 = b."""
    x = X[:, which] if which < 2 else torch.ones_like(y)
    n = len(y)
    f = X @ w + b
    return {
        "it uses the prediction f(X) where the error f(X) − y belongs": 2 * (f * x).sum() / n,
        "it uses y − f(X) instead of f(X) − y (that flips the sign)": 2 * ((y - f) * x).sum() / n,
        "it multiplies the error by the other input (x1 and x2 swapped)": 2 * ((f - y) * X[:, 1 - which]).sum() / n
        if which < 2 else None,
        "it forgets to multiply the error by the input x": 2 * (f - y).sum() / n if which < 2 else None,
    }


def _check_gradient(fn, name, which, seed):
    for label, gen, n, dtype, device in common.cases(seed):
        X, y, w, b = _inputs(gen, n, dtype, device)
        dw, db = autograd_grads(mse, X, y, w, b)[2:]
        expected = (dw[0], dw[1], db)[which]
        got = common.call_student(fn, name, X.clone(), y.clone(), w.clone(), b.clone(), case=label)
        if isinstance(got, torch.Tensor) and got.shape != expected.shape and got.numel() == 1:
            raise AssertionError(
                f"`{name}` should return a scalar tensor (shape ()), but returned shape {tuple(got.shape)} "
                f"({label}). Sum over the data points; `.sum()` and `.mean()` give shape ()."
            )
        if not compare(name, got, expected).ok:
            for slip, value in _mistakes(X, y, w, b, which).items():
                if value is not None and compare(name, got, value).ok:
                    raise AssertionError(f"{name} is wrong ({label}): {slip}. Expected {expected.item():.6g}, "
                                         f"got {float(got):.6g}.")
        common.check_tensor(name, got, expected, label)


@common.graded
def check_dL_dw1(dL_dw1):
    """dL_dw1(X, y, w, b) = ∂L/∂w1 = (2/N) Σ (f(x_i) − y_i) x_i1."""
    _check_gradient(dL_dw1, "dL_dw1", 0, 401)


@common.graded
def check_dL_dw2(dL_dw2):
    """dL_dw2(X, y, w, b) = ∂L/∂w2 = (2/N) Σ (f(x_i) − y_i) x_i2."""
    _check_gradient(dL_dw2, "dL_dw2", 1, 402)


@common.graded
def check_dL_db(dL_db):
    """dL_db(X, y, w, b) = ∂L/∂b = (2/N) Σ (f(x_i) − y_i)."""
    _check_gradient(dL_db, "dL_db", 2, 403)


def _pytorch_count(sizes):
    layers = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    return sum(p.numel() for p in nn.Sequential(*layers).parameters())


def _count_hint(got, sizes):
    pairs = list(zip(sizes[:-1], sizes[1:]))
    weights = sum(a * b for a, b in pairs)
    hints = {
        weights: "that counts the weights only: each layer also has one bias per output neuron",
        weights + len(pairs): "that gives each layer one bias; a layer has one bias per output neuron",
        weights + sum(a for a, _ in pairs): "that gives each layer one bias per *input*; it has one per output neuron",
        sum((a + 1) * (b + 1) for a, b in pairs): "that adds a bias to both sides of every layer",
        sum(sizes): "that counts the neurons, not the parameters",
    }
    return hints.get(got, "count n_in · n_out weights plus n_out biases for every pair of neighbouring layers")


@common.graded
def check_count_parameters(count_parameters):
    """count_parameters(layer_sizes) equals the number of parameters of nn.Sequential(nn.Linear, ...)."""
    rng = random.Random(404)
    size_lists = [[784, 64, 10], [3, 1], [1, 1]] + [
        [rng.randint(1, 300) for _ in range(rng.randint(2, 6))] for _ in range(12)
    ]
    for sizes in size_lists:
        for given in (list(sizes), tuple(sizes)):
            expected = _pytorch_count(sizes)
            got = common.call_student(count_parameters, "count_parameters", given, case=f"layer_sizes={given}")
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            if isinstance(got, bool) or not isinstance(got, numbers.Integral):
                raise AssertionError(
                    f"count_parameters should return a whole number (int), but returned {type(got).__name__} "
                    f"{got!r} for layer_sizes={given}."
                )
            if got != expected:
                raise AssertionError(
                    f"count_parameters({given}) returned {got}, but nn.Sequential of those nn.Linear layers has "
                    f"{expected} parameters: {_count_hint(got, sizes)}."
                )
