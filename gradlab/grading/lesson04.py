"""Hidden checks of lesson 4 (two inputs, a graph, and an optimiser).

The neuron is f(X) = X @ w + b with X of shape (N, 2), w of shape (2,) and b a scalar tensor; the loss is the
mean squared error L = mean((f(X) − y)²). The exercise walks the graph that autograd records for it, node by
node, from the loss down to the leaves:

    u = X @ w  (MvBackward0),  f = u + b  (AddBackward0),  e = f − y  (SubBackward0),
    q = e ** 2 (PowBackward0), L = mean(q)  (MeanBackward0)

and returns the gradient of L with respect to each node's output. Every expected value is autograd's gradient
with respect to that very tensor (``torch.autograd.grad`` with the intermediate tensors as inputs).

The same graph is declared once for the diagnosis (``GRAPH``, gradlab.variants): a wrong node is diagnosed on
its own, given the right gradients above it, over every case tried; the failure carries the graph drawn with
the first wrong node marked (``trace`` draws it for the lesson's own comparison cell too).
"""
import numbers
import random

import torch
from torch import nn

from gradlab import variants as V
from gradlab.check import compare, factor_by_case
from gradlab.grading import common
from gradlab.grading.lesson01 import fail_with_trace, judge

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
GRAPH = V.Graph(V.Linear("u", "X", "w"), V.Add("f", "u", "b"), V.Sub("e", "f", "y"),
                V.Square("q", "e", error=("f", "y")), V.Mean("L", "q"), data=("X",),
                grad_notation={key: f"dL/d{key}" for key in SHAPES})
NODE = {key: V.Exercise(GRAPH, key, name=f"dL/d{key}") for key in SHAPES}  # one node's gradient, on its own


def trace(X, y, w, b, grads, title=None):
    """The graph of L with every node's gradient in ``grads`` ({"q": dL/dq, ...}, e.g. what grads_by_graph returns)
    marked against autograd's: right, the first wrong one (diagnosed), wrong only because of it, wrong for another
    reason. A notebook shows it as a picture; ``.explain()`` says it in words."""
    given = {k: v for k, v in (grads or {}).items() if k in SHAPES and isinstance(v, torch.Tensor)}
    traced = V.locate(GRAPH, {"X": X, "y": y, "w": w, "b": b}, grads=given)
    traced.title = title or "the graph of L, node by node: your gradients against autograd's"
    return traced


def mse(X, y, w, b):
    return ((X @ w + b - y) ** 2).mean()


def _inputs(gen, n, dtype, device):
    X = common.randn(gen, n, 2, dtype=dtype, device=device)
    y = common.randn(gen, n, dtype=dtype, device=device, scale=2.0)
    w = common.randn(gen, 2, dtype=dtype, device=device)
    b = common.randn(gen, 1, dtype=dtype, device=device).reshape(())
    return X, y, w, b


def node_gradients(X, y, w, b):
    """{key: ∂L/∂(that node's output)} by autograd, for every node of the graph."""
    with torch.inference_mode(False), torch.enable_grad():
        w_, b_ = w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
        y_ = y.detach().clone()
        u = X.detach().clone() @ w_
        f = u + b_
        e = f - y_
        q = e ** 2
        L = q.mean()
        nodes = (q, e, f, u, w_, b_)
        grads = torch.autograd.grad(L, nodes, allow_unused=True)
    return {key: (torch.zeros_like(t) if g is None else g).detach() for (key, _, _), g, t in zip(NODES, grads, nodes)}


def _shape_slip(key, got, expected):
    """A sentence saying what a gradient of the wrong shape at node ``key`` shows, or None. (Formula slips, such as
    the prediction for the error or the two weights swapped, are named by the diagnosis: ``GRAPH``.)"""
    if not isinstance(got, torch.Tensor):
        return None
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
    """grads_by_graph(X, y, w, b) -> {"q", "e", "f", "u": (N,), "w": (2,), "b": ()}: ∂L/∂ each node's output.

    Every case first; then the first wrong node (from the loss down, in the first case that shows it) is diagnosed
    on its own over every case, and the graph is drawn with it marked."""
    runs = []
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
        runs.append((label, {"X": X, "y": y, "w": w, "b": b}, got, expected))
    wrong = [(i, position) for i, (_, _, got, expected) in enumerate(runs) for position, (key, _, _) in enumerate(NODES)
             if not compare("", got[key], expected[key]).ok]
    if not wrong:
        for label, _, got, expected in runs:
            for key, _, _ in NODES:
                common.check_tensor(f"dL/d{key}", got[key], expected[key], label)  # then the dtype and the device
        return
    position = min(p for _, p in wrong)  # the first wrong node from the loss down, in any case
    key = NODES[position][0]
    by_label = {label: (inputs, got) for label, inputs, got, _ in runs}

    def drawn(label):
        inputs, got = by_label[label.split(";")[0]]
        return trace(**inputs, grads=got, title=f"the graph of L, node by node ({label})")

    def strict(label, got, expected):  # the node's message as it always was, with the graph drawn
        inputs, _ = by_label[label.split(";")[0]]
        _fail_at_node(key, position, got, expected, label, drawn(label), batch=len(inputs["y"]))

    # A constant factor that changes with N (2/N lost): one case's message would name a constant that is not the slip.
    differs = factor_by_case([(got[key], expected[key], len(inputs["y"])) for _, inputs, got, expected in runs])
    if differs is not None:
        label, _, got, expected = next(run for run in runs if not compare("", run[2][key], run[3][key]).ok)
        _fail_at_node(key, position, got[key], expected[key], label, drawn(label), said=differs)
    judge(NODE[key], [(label, inputs, got[key], expected[key]) for label, inputs, got, expected in runs], strict,
          trace=lambda result, found: drawn(result.label), where=True, suffix=f"\n  {_where(key, position)}")


def _where(key, position):
    what, node = next((w, n) for k, w, n in NODES if k == key)
    name = f"dL/d{key}"
    return (f"({name} is the gradient of L with respect to {what}: {node}.) " +
            ("This is the first node below the loss: its upstream gradient is ∂L/∂L = 1." if position == 0
             else f"The gradients above it ({', '.join(f'dL/d{k}' for k in ABOVE[key])}) are right, so the "
                  "slip is in this node's local derivative."))


def _fail_at_node(key, position, got, expected, label, traced, batch=None, said=None):
    """The failure at one node in one case: the comparison (what a wrong shape shows, in its first line, or ``said``:
    a constant factor that differs between the cases), where the node is, and the graph drawn with it marked.
    batch: the case's N, so that a constant factor is called a missing 1/N only where it is N."""
    name = f"dL/d{key}"
    slip = said or _shape_slip(key, got, expected)
    try:
        common.check_tensor(name, got, expected, label, batch=batch)
    except common.CheckFailure as failure:
        lines = str(failure).split("\n")
        if slip:
            lines[0] = f"{name} is wrong ({label}): {slip.rstrip('.')}."
        fail_with_trace("\n".join(lines + [f"  {_where(key, position)}"]), "factor" if said else failure.kind, name,
                        traced, label)


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
