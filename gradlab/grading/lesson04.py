"""Hidden checks of lesson 4 (two inputs, a graph, and an optimiser).

The neuron is f(X) = X @ w + b with X of shape (N, 2), w of shape (2,) and b a scalar tensor; the loss is the
mean squared error L = mean((f(X) − y)²). The exercise walks the graph that autograd records for it, node by
node, from the loss down to the leaves:

    u = X @ w  (MvBackward0),  f = u + b  (AddBackward0),  e = f − y  (SubBackward0),
    q = e ** 2 (PowBackward0), L = mean(q)  (MeanBackward0)

and returns the gradient of L with respect to each node's output. Every expected value is autograd's gradient
with respect to that very tensor (``torch.autograd.grad`` with the intermediate tensors as inputs).
"""
import numbers
import random

import torch
from torch import nn

from gradlab.check import compare
from gradlab.grading import common

# (key, the node's output in words, the node of the autograd graph that receives this gradient), loss first.
NODES = (
    ("q", "the squared errors q = e²", "what MeanBackward0 passes down to PowBackward0"),
    ("e", "the errors e = f − y", "what PowBackward0 passes down to SubBackward0"),
    ("f", "the predictions f = u + b", "what SubBackward0 passes down to AddBackward0"),
    ("u", "the products u = X @ w", "what AddBackward0 passes down to MvBackward0"),
    ("w", "the weights w", "what MvBackward0 passes down to w's AccumulateGrad"),
    ("b", "the bias b", "what AddBackward0 passes down to b's AccumulateGrad"),
)
ABOVE = {"q": "", "e": "q", "f": "qe", "u": "qef", "w": "qefu", "b": "qef"}  # the nodes between it and the loss
SHAPES = {"q": "(N,)", "e": "(N,)", "f": "(N,)", "u": "(N,)", "w": "(2,)", "b": "()"}


def mse(X, y, w, b):
    return ((X @ w + b - y) ** 2).mean()


def _inputs(gen, n, dtype, device):
    X = common.randn(gen, n, 2, dtype=dtype, device=device)
    y = common.randn(gen, n, dtype=dtype, device=device, scale=2.0)
    w = common.randn(gen, 2, dtype=dtype, device=device)
    b = common.randn(gen, 1, dtype=dtype, device=device).reshape(())
    return X, y, w, b


def node_gradients(X, y, w, b, wrong_loss=None):
    """{key: ∂L/∂(that node's output)} by autograd, for every node of the graph.

    wrong_loss(e, y): a loss to use instead of mean(e²), to get what a typical slip gives (q is then unused)."""
    with torch.inference_mode(False), torch.enable_grad():
        w_, b_ = w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
        y_ = y.detach().clone()
        u = X.detach().clone() @ w_
        f = u + b_
        e = f - y_
        q = e ** 2
        L = q.mean() if wrong_loss is None else wrong_loss(e, y_)
        nodes = (q, e, f, u, w_, b_)
        grads = torch.autograd.grad(L, nodes, allow_unused=True)
    return {key: (torch.zeros_like(t) if g is None else g).detach() for (key, _, _), g, t in zip(NODES, grads, nodes)}


def _slips(X, y, w, b, key, got, expected):
    """A sentence naming a recognised slip at node ``key``, or None. Each wrong answer comes from autograd on a
    wrong computation (never from the formula the exercise asks for)."""
    if not isinstance(got, torch.Tensor):
        return None
    if key == "e":
        # e + y is the prediction f: this loss gives at e what squaring the prediction instead of the error gives
        prediction = node_gradients(X, y, w, b, wrong_loss=lambda e, y_: ((e + y_) ** 2).mean())["e"]
        if compare("", got, prediction).ok:
            return "it uses the prediction f where the error e = f − y belongs"
    if key == "w" and got.shape == expected.shape and compare("", got, expected.flip(0)).ok:
        return "its two entries are swapped: entry j belongs to w_j, which multiplies the column X[:, j]"
    if key == "w" and got.shape != expected.shape:
        return f"it should have one entry per weight, shape (2,), but has shape {tuple(got.shape)}"
    if key == "b" and got.shape != expected.shape:
        return (f"it should be one number, shape (), but has shape {tuple(got.shape)}: b is added to all N "
                "predictions, so the gradients that come back from all of them add up")
    if key in "qefu" and got.shape != expected.shape:
        return f"it should have one value per data point, shape {SHAPES[key]}, but has shape {tuple(got.shape)}"
    return None


@common.graded
def check_grads_by_graph(grads_by_graph):
    """grads_by_graph(X, y, w, b) -> {"q", "e", "f", "u": (N,), "w": (2,), "b": ()}: ∂L/∂ each node's output."""
    for label, gen, n, dtype, device in common.cases(401):
        X, y, w, b = _inputs(gen, n, dtype, device)
        expected = node_gradients(X, y, w, b)
        got = common.call_student(grads_by_graph, "grads_by_graph", X, y, w, b, case=label)
        if not isinstance(got, dict):
            common.fail(f"`grads_by_graph` should return a dict with the keys {', '.join(SHAPES)}, but returned "
                        f"{type(got).__name__} ({label}).", kind="not a dict")
        missing = [key for key in SHAPES if key not in got]
        if missing:
            common.fail(f"the dict that `grads_by_graph` returns has no {' and no '.join(map(repr, missing))} "
                        f"({label}); it needs one entry per node: {', '.join(map(repr, SHAPES))}.",
                        kind="missing node")
        for position, (key, what, node) in enumerate(NODES):
            name = f"dL/d{key}"
            if compare(name, got[key], expected[key]).ok:
                common.check_tensor(name, got[key], expected[key], label)  # then the dtype and the device
                continue
            slip = _slips(X, y, w, b, key, got[key], expected[key])
            where = (f"({name} is the gradient of L with respect to {what}: {node}.) " +
                     ("This is the first node below the loss: its upstream gradient is ∂L/∂L = 1." if position == 0
                      else f"The gradients above it ({', '.join(f'dL/d{k}' for k in ABOVE[key])}) are right, so the "
                           "slip is in this node's local derivative."))
            try:
                common.check_tensor(name, got[key], expected[key], label)
            except common.CheckFailure as failure:
                lines = str(failure).split("\n")
                if slip:
                    lines[0] = f"{name} is wrong ({label}): {slip}."
                common.fail("\n".join(lines + [f"  {where}"]), gradient=name,
                            kind="recognised slip" if slip and failure.kind in ("values", "close") else failure.kind)


def _pytorch_count(sizes):
    layers = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    return sum(p.numel() for p in nn.Sequential(*layers).parameters())


def _count_hint(got, sizes):
    pairs = list(zip(sizes[:-1], sizes[1:]))
    weights = sum(a * b for a, b in pairs)
    hints = {
        weights: ("weights only", "that counts the weights only: each layer also has one bias per output neuron"),
        weights + len(pairs): ("one bias per layer", "that gives each layer one bias; a layer has one bias per "
                                                     "output neuron"),
        weights + sum(a for a, _ in pairs): ("bias per input", "that gives each layer one bias per *input*; it has "
                                                               "one per output neuron"),
        sum((a + 1) * (b + 1) for a, b in pairs): ("bias both sides", "that adds a bias to both sides of every layer"),
        sum(sizes): ("neurons", "that counts the neurons, not the parameters"),
    }
    return hints.get(got, ("count", "count n_in · n_out weights plus n_out biases for every pair of neighbouring "
                                    "layers"))


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
            if isinstance(got, torch.Tensor) and got.numel() == 1 and not got.is_floating_point():
                got = got.item()
            if isinstance(got, bool) or not isinstance(got, numbers.Integral):
                common.fail(
                    f"count_parameters should return a whole number (int), but returned {type(got).__name__} "
                    f"{got!r:.60} for layer_sizes={given}.", kind="not an int"
                )
            if got != expected:
                kind, hint = _count_hint(got, sizes)
                common.fail(
                    f"count_parameters({given}) returned {got}, but nn.Sequential of those nn.Linear layers has "
                    f"{expected} parameters: {hint}.", kind=kind
                )
