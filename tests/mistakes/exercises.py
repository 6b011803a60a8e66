"""The course's graded gradients as declared computations (gradlab.variants), with inputs like the hidden checks'.

Each Spec holds: the Exercise (the computation and the graded gradient), the cases (label, inputs) it is tried
on, how a student's functions answer for given inputs, and how to run the lesson's own hidden check on them.
The student's functions come as a dict; any the corpus case does not replace are the right ones below.
"""
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from gradlab.variants import (Add, CrossEntropy, Dot, Exercise, Graph, L2, Linear, LogSoftmax, Mean, MSE, ReLU, Scale,
                              Sigmoid, Square, Sub, Sum)

FLOATS = (torch.float32, torch.float64)
SIZES = (1, 7, 64)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(gen, *shape, dtype=torch.float64, scale=1.0):
    return (scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype)


def _labels01(gen, n, dtype):
    y = (torch.rand(n, generator=gen) < 0.5).double()
    if n > 1:
        y[0], y[1] = 0.0, 1.0
    return y.to(dtype)


def _cases(seed, make, sizes=SIZES):
    out = []
    for dtype in FLOATS:
        for i, n in enumerate(sizes):
            gen = _gen(seed * 100 + i)
            out.append((f"n={n}, {str(dtype).replace('torch.', '')}", make(gen, n, dtype)))
    return out


@dataclass
class Spec:
    key: str
    exercise: Exercise
    cases: list
    answer: object  # answer(student) -> (lambda **inputs: got)
    hidden: object = None  # hidden(student) -> runs the lesson's hidden check
    right: dict = field(default_factory=dict)  # the right functions, by name


# --------------------------------------------------------------------------- the right functions
def sigmoid(z):
    return torch.sigmoid(z)


def l5_linear_forward(x, W, b):
    return x @ W + b, (x, W, b)


def l5_linear_backward(dout, cache):
    x, W, b = cache
    return dout @ W.T, x.T @ dout, dout.sum(dim=0)


def l5_relu_forward(x):
    return x.clamp(min=0), x


def l5_relu_backward(dout, cache):
    return dout * (cache > 0)


def l5_sigmoid_forward(x):
    out = torch.sigmoid(x)
    return out, out


def l5_sigmoid_backward(dout, cache):
    return dout * cache * (1 - cache)


def l5_two_layer(X, y, params, *, dz2_of=None, da1_of=None, dz1_of=None):
    """The two-layer network of lesson 5, with hooks where a corpus case puts its mistake."""
    z1, c1 = l5_linear_forward(X, params["W1"], params["b1"])
    a1, c2 = l5_relu_forward(z1)
    z2, c3 = l5_linear_forward(a1, params["W2"], params["b2"])
    p, c4 = l5_sigmoid_forward(z2)
    loss = ((p - y) ** 2).mean()
    dp = 2 * (p - y) / len(y)
    dz2 = l5_sigmoid_backward(dp, c4) if dz2_of is None else dz2_of(dp=dp, p=p, z2=z2)
    da1, dW2, db2 = l5_linear_backward(dz2, c3)
    if da1_of is not None:
        da1 = da1_of(dz2=dz2, W2=params["W2"], dW2=dW2, a1=a1)
    dz1 = l5_relu_backward(da1, c2) if dz1_of is None else dz1_of(da1=da1, z1=z1)
    _, dW1, db1 = l5_linear_backward(dz1, c1)
    return loss, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def l7_linear_forward(x, W, b):
    return x @ W + b, (x, W)


def l7_linear_backward(dout, cache):
    x, W = cache
    return dout @ W.T, x.T @ dout, dout.sum(dim=0)


def l7_relu_forward(x):
    out = x.clamp(min=0)
    return out, out > 0


def l7_relu_backward(dout, cache):
    return dout * cache


def l7_softmax_cross_entropy(logits, labels):
    n, c = logits.shape
    shifted = logits - logits.max(dim=1, keepdim=True).values
    log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
    one_hot = F.one_hot(labels, c).to(logits.dtype)
    return -(one_hot * log_probs).sum() / n, (log_probs.exp() - one_hot) / n


def l7_log_softmax_backward(dlogp, logp):
    return dlogp - logp.exp() * dlogp.sum(dim=1, keepdim=True)


def l7_backward_and_step(params, X, y, lr, *, stale=()):
    """Lesson 7's backward_and_step: one plain SGD step during the backward pass, every gradient at the parameters
    as they were on entry. stale: the layers ("3", "2") whose weights are updated before the gradient is passed
    through them (the lesson's planted bug, and real reports of it)."""
    W1, b1, W2, b2, W3, b3 = (params[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
    z1 = X @ W1 + b1
    a1 = z1.clamp(min=0)
    z2 = a1 @ W2 + b2
    a2 = z2.clamp(min=0)
    z3 = a2 @ W3 + b3
    g = {"z3": (torch.softmax(z3, dim=1) - F.one_hot(y, z3.shape[1]).to(z3.dtype)) / len(X)}
    g["W3"], g["b3"] = a2.T @ g["z3"], g["z3"].sum(dim=0)
    for W, b, k in ((W3, b3, "3"), (W2, b2, "2")):
        below = {"3": "a2", "2": "a1"}[k]
        if k in stale:
            W.sub_(lr * g[f"W{k}"])
            b.sub_(lr * g[f"b{k}"])
        g[below] = g[f"z{k}"] @ W.T
        if k not in stale:
            W.sub_(lr * g[f"W{k}"])
            b.sub_(lr * g[f"b{k}"])
        z = {"3": z2, "2": z1}[k]
        g[f"z{int(k) - 1}"] = g[below] * (z > 0)
        a = {"3": a1, "2": X}[k]
        g[f"W{int(k) - 1}"], g[f"b{int(k) - 1}"] = a.T @ g[f"z{int(k) - 1}"], g[f"z{int(k) - 1}"].sum(dim=0)
    W1.sub_(lr * g["W1"])
    b1.sub_(lr * g["b1"])
    return g


def l7_forward(params, X):
    z1, c1 = l7_linear_forward(X, params["W1"], params["b1"])
    a1, r1 = l7_relu_forward(z1)
    z2, c2 = l7_linear_forward(a1, params["W2"], params["b2"])
    a2, r2 = l7_relu_forward(z2)
    logits, c3 = l7_linear_forward(a2, params["W3"], params["b3"])
    return logits, (c1, r1, c2, r2, c3)


def l7_backward(dlogits, caches, *, scale_w=1.0):
    c1, r1, c2, r2, c3 = caches
    grads = {}
    da2, grads["W3"], grads["b3"] = l7_linear_backward(dlogits, c3)
    da1, grads["W2"], grads["b2"] = l7_linear_backward(l7_relu_backward(da2, r2), c2)
    dz1 = l7_relu_backward(da1, r1)
    x, _ = c1
    grads["W1"], grads["b1"] = x.T @ dz1, dz1.sum(dim=0)
    for k in ("W1", "W2", "W3"):
        grads[k] = grads[k] * scale_w
    return grads


# --------------------------------------------------------------------------- the specs
def _l1():
    graph = Graph(Scale("z", "w", "X"), Sigmoid("h", "z"), MSE("J", "h", "y", reduction="sum"),
                  grad_notation={"h": "∂SSE/∂h"})

    def make(gen, n, dtype):
        return {"X": (_randn(gen, n, 1).abs() + 0.1).to(dtype), "y": _labels01(gen, n, dtype),
                "w": _randn(gen, 1, dtype=dtype).reshape(())}

    def hidden(s):
        from gradlab.grading import lesson01
        lesson01.check_dsse_dw(s["dsse_dw"])

    return Spec("L1.dsse_dw", Exercise(graph, "w", name="dSSE/dw"), _cases(11, make),
                lambda s: (lambda X, y, w: s["dsse_dw"](X, y, w)), hidden)


def _neuron_graph(notation):
    return Graph(Scale("z", "w", "x", "b"), Sigmoid("s", "z"), MSE("J", "s", "y"), notation=notation, data=("x",),
                 grad_notation={"s": f"∂J/∂{notation.get('s', 'σ')}"})


def _neuron(gen, n, dtype):
    return {"x": _randn(gen, n, dtype=dtype), "y": _labels01(gen, n, dtype),
            "w": _randn(gen, 1, dtype=dtype, scale=2.0).reshape(()), "b": _randn(gen, 1, dtype=dtype).reshape(())}


def _l2():
    def hidden(s):
        from gradlab.grading import lesson02
        lesson02.check_dJ_dw(s["dJ_dw"])

    return Spec("L2.dJ_dw", Exercise(_neuron_graph({"s": "h"}), "w", name="∂J/∂w"),
                _cases(21, _neuron, sizes=(1, 7, 64, 569)),
                lambda s: (lambda x, y, w, b: s["dJ_dw"](x, y, w, b)), hidden)


def _l2_db():
    def hidden(s):
        from gradlab.grading import lesson02
        lesson02.check_dJ_db(s["dJ_db"])

    return Spec("L2.dJ_db", Exercise(_neuron_graph({"s": "h"}), "b", name="∂J/∂b"),
                _cases(22, _neuron, sizes=(1, 7, 64, 569)),
                lambda s: (lambda x, y, w, b: s["dJ_db"](x, y, w, b)), hidden)


def _l3_dJ_dsigma():
    graph = Graph(MSE("J", "s", "y"), grad_notation={"s": "dJ/dσ"})

    def make(gen, n, dtype):
        return {"s": torch.sigmoid(_randn(gen, n, scale=2.0)).to(dtype), "y": _labels01(gen, n, dtype)}

    def hidden(s):
        from gradlab.grading import lesson03
        lesson03.check_dJ_dsigma(s["dJ_dsigma"])

    return Spec("L3.dJ_dsigma", Exercise(graph, "s", name="dJ/dσ"), _cases(33, make),
                lambda st: (lambda s, y: st["dJ_dsigma"](s, y)), hidden)


def _l3_link(which):
    """dz_dw or dz_db: the local derivative of z = w·x + b alone, one w and b per observation (all 0)."""
    graph = Graph(Scale("z", "w", "x", "b"), Sum("J", "z"), grad_notation={"z": None, "w": "dz/dw", "b": "dz/db"})

    def make(gen, n, dtype):
        x = _randn(gen, n, dtype=dtype)
        return {"x": x, "w": torch.zeros_like(x), "b": torch.zeros_like(x)}

    def hidden(s):
        from gradlab.grading import lesson03
        getattr(lesson03, f"check_dz_d{which}")(s[f"dz_d{which}"])

    return Spec(f"L3.dz_d{which}", Exercise(graph, which, name=f"dz/d{which}"), _cases(34 if which == "w" else 35, make),
                lambda s: (lambda x, w, b: s[f"dz_d{which}"](x)), hidden)


def _l3_dsigma():
    graph = Graph(Sigmoid("s", "z"), Sum("J", "s"), notation={"s": "σ(z)"}, grad_notation={"s": None})

    def make(gen, n, dtype):
        return {"z": _randn(gen, n, dtype=dtype, scale=3.0)}

    def hidden(s):
        from gradlab.grading import lesson03
        lesson03.check_dsigma_dz(s["dsigma_dz"])

    return Spec("L3.dsigma_dz", Exercise(graph, "z", name="dσ/dz"), _cases(31, make),
                lambda s: (lambda z: s["dsigma_dz"](z)), hidden)


def _l3_backward():
    def answer(s):
        def run(x, y, w, b):
            z = w * x + b
            return s["backward"]((x, y, z, torch.sigmoid(z)))
        return run

    def hidden(s):
        from gradlab.grading import lesson03
        lesson03.check_backward(s["backward"])

    return Spec("L3.backward", Exercise(_neuron_graph({}), ("w", "b"), name=("dJ/dw", "dJ/db")),
                _cases(32, _neuron), answer, hidden)


NODES4 = ("q", "e", "f", "u", "w", "b")


def _l4_grads_by_graph():
    """Lesson 4's node-by-node gradients: u = X @ w, f = u + b, e = f − y, q = e², L = mean(q)."""
    graph = Graph(Linear("u", "X", "w"), Add("f", "u", "b"), Sub("e", "f", "y"), Square("q", "e", error=("f", "y")),
                  Mean("L", "q"), data=("X",), grad_notation={k: f"dL/d{k}" for k in NODES4})

    def make(gen, n, dtype):
        return {"X": _randn(gen, n, 2, dtype=dtype), "y": _randn(gen, n, dtype=dtype, scale=2.0),
                "w": _randn(gen, 2, dtype=dtype), "b": _randn(gen, 1, dtype=dtype).reshape(())}

    def answer(s):
        def run(X, y, w, b):
            grads = s["grads_by_graph"](X, y, w, b)
            return {f"dL/d{k}": grads.get(k) for k in NODES4} if isinstance(grads, dict) else grads
        return run

    def hidden(s):
        from gradlab.grading import lesson04
        lesson04.check_grads_by_graph(s["grads_by_graph"])

    return Spec("L4.grads_by_graph", Exercise(graph, NODES4, name=tuple(f"dL/d{k}" for k in NODES4)),
                _cases(41, make), answer, hidden)


def l4_grads_by_graph(X, y, w, b, two=2.0, summed=True):
    """The right node-by-node gradients (two: the square's factor; summed: b's gradient summed over the batch)."""
    e = X @ w + b - y
    dq = torch.ones_like(e) / len(e)
    de = dq * two * e
    return {"q": dq, "e": de, "f": de, "u": de, "w": X.T @ de, "b": de.sum() if summed else de}


def _l5_linear():
    graph = Graph(Linear("out", "x", "W", "b"), Dot("J", "out", "dout"), upstream="dout",
                  grad_notation={"out": "dout", "x": "dx", "W": "dW", "b": "db"})

    def make(gen, n, dtype):
        d_in, d_out = 2 + n % 5, 1 + n % 4
        return {"x": _randn(gen, n, d_in, dtype=dtype), "W": _randn(gen, d_in, d_out, dtype=dtype),
                "b": _randn(gen, d_out, dtype=dtype), "dout": _randn(gen, n, d_out, dtype=dtype)}

    def answer(s):
        def run(x, W, b, dout):
            _, cache = s.get("linear_forward", l5_linear_forward)(x, W, b)
            return s["linear_backward"](dout, cache)
        return run

    def hidden(s):
        from gradlab.grading import lesson05
        lesson05.check_linear_backward(s.get("linear_forward", l5_linear_forward), s["linear_backward"])

    return Spec("L5.linear_backward", Exercise(graph, ("x", "W", "b"), name=("dx", "dW", "db")),
                _cases(51, make), answer, hidden)


def _layer(op, seed, key, fwd, bwd, hidden_check, zeros=False, scale=1.0, lesson=5):
    graph = Graph(op, Dot("J", "out", "dout"), upstream="dout", grad_notation={"out": "dout", "x": "dx"})

    def make(gen, n, dtype):
        return {"x": _randn(gen, n, 6, dtype=dtype, scale=scale), "dout": _randn(gen, n, 6, dtype=dtype)}

    cases = _cases(seed, make)
    if zeros:
        x = torch.tensor([[-1.0, 0.0, 2.0], [0.0, 3.0, -0.5]], dtype=torch.float64)
        dout = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
        cases.append(("x holds exact zeros", {"x": x, "dout": dout}))

    def answer(s):
        def run(x, dout):
            _, cache = s.get(f"{key}_forward", fwd)(x)
            return s[f"{key}_backward"](dout, cache)
        return run

    def hidden(s):
        hidden_check(s.get(f"{key}_forward", fwd), s[f"{key}_backward"])

    return Spec(f"L{lesson}.{key}_backward", Exercise(graph, "x", name="dx"), cases, answer, hidden)


def _l5_sigmoid():
    from gradlab.grading import lesson05
    return _layer(Sigmoid("out", "x"), 53, "sigmoid", l5_sigmoid_forward, l5_sigmoid_backward,
                  lambda f, b: lesson05.check_sigmoid_backward(f, b), scale=3.0)


def _l5_relu():
    from gradlab.grading import lesson05
    return _layer(ReLU("out", "x"), 52, "relu", l5_relu_forward, l5_relu_backward,
                  lambda f, b: lesson05.check_relu_backward(f, b), zeros=True)


def _l7_relu():
    from gradlab.grading import lesson07
    return _layer(ReLU("out", "x"), 72, "relu", l7_relu_forward, l7_relu_backward,
                  lambda f, b: lesson07.check_relu_backward(f, b), zeros=True, lesson=7)


NAMES5 = ("W1", "b1", "W2", "b2")


def _l5_two_layer():
    graph = Graph(Linear("z1", "X", "W1", "b1"), ReLU("a1", "z1"), Linear("z2", "a1", "W2", "b2"),
                  Sigmoid("p", "z2"), MSE("J", "p", "y"), data=("X",),
                  grad_notation={t: f"d{t}" for t in ("z1", "a1", "z2", "p", *NAMES5)})

    def make(gen, n, dtype):
        d, h = 3 + n % 6, 2 + n % 5
        return {"X": _randn(gen, n, d, dtype=dtype), "y": (torch.rand(n, 1, generator=gen) < 0.5).to(dtype),
                "W1": _randn(gen, d, h, dtype=dtype), "b1": _randn(gen, h, dtype=dtype, scale=0.5),
                "W2": _randn(gen, h, 1, dtype=dtype), "b2": _randn(gen, 1, dtype=dtype, scale=0.5)}

    def answer(s):
        def run(X, y, W1, b1, W2, b2):
            _, grads = s["two_layer_loss_and_grads"](X, y, {"W1": W1, "b1": b1, "W2": W2, "b2": b2})
            return grads
        return run

    def hidden(s):
        from gradlab.grading import lesson05
        lesson05.check_two_layer_loss_and_grads(s["two_layer_loss_and_grads"])

    return Spec("L5.two_layer", Exercise(graph, NAMES5, name=tuple(f"dJ/d{k}" for k in NAMES5)),
                _cases(54, make), lambda s: (lambda **kw: _renamed(answer(s)(**kw))), hidden)


def _renamed(grads):
    return {f"dJ/d{k}": v for k, v in grads.items()} if isinstance(grads, dict) else grads


# Like lesson 6's check: logits near 0, every row shifted by +500, and rows 1000 apart (a max over the whole
# batch instead of each row's own then gives 0/0).
OFFSETS = {"": lambda n: torch.zeros(n, 1), ", logits shifted by +500": lambda n: torch.full((n, 1), 500.0),
           ", rows 1000 apart": lambda n: 500.0 * (1 - 2 * (torch.arange(n) % 2))[:, None].double()}


def _ce_cases(seed):
    out = []
    for dtype in FLOATS:
        for i, n in enumerate(SIZES):
            for what, offset in OFFSETS.items():
                gen = _gen(seed * 100 + i)
                c = 3 + n % 8
                logits = (_randn(gen, n, c, scale=3.0) + offset(n)).to(dtype)
                labels = torch.randint(c, (n,), generator=gen)
                out.append((f"n={n}, {str(dtype).replace('torch.', '')}{what}", {"logits": logits, "labels": labels}))
    return out


def _l6_ce():
    graph = Graph(CrossEntropy("L", "logits", "labels"), grad_notation={"logits": "dL/dlogits"})

    def hidden(s):
        from gradlab.grading import lesson06
        lesson06.check_softmax_cross_entropy_grad(s["softmax_cross_entropy_grad"])

    return Spec("L6.softmax_cross_entropy_grad", Exercise(graph, "logits", name="dL/dlogits"), _ce_cases(61),
                lambda s: (lambda logits, labels: s["softmax_cross_entropy_grad"](logits, labels)), hidden)


def _l7_ce():
    graph = Graph(CrossEntropy("L", "logits", "labels"), grad_notation={"logits": "dlogits"})

    def answer(s):
        def run(logits, labels):
            result = s["softmax_cross_entropy"](logits, labels)
            return result[1] if isinstance(result, tuple) and len(result) == 2 else None
        return run

    def hidden(s):
        from gradlab.grading import lesson07
        lesson07.check_softmax_cross_entropy(s["softmax_cross_entropy"])

    return Spec("L7.softmax_cross_entropy", Exercise(graph, "logits", name="dlogits"), _ce_cases(71), answer, hidden)


def _l7_linear():
    graph = Graph(Linear("out", "x", "W", "b"), Dot("J", "out", "dout"), upstream="dout",
                  grad_notation={"out": "dout", "x": "dx", "W": "dW", "b": "db"})

    def make(gen, n, dtype):
        d_in, d_out = 3 + n % 5, 2 + n % 4
        return {"x": _randn(gen, n, d_in, dtype=dtype), "W": _randn(gen, d_in, d_out, dtype=dtype),
                "b": _randn(gen, d_out, dtype=dtype), "dout": _randn(gen, n, d_out, dtype=dtype)}

    def answer(s):
        def run(x, W, b, dout):
            _, cache = s.get("linear_forward", l7_linear_forward)(x, W, b)
            return s["linear_backward"](dout, cache)
        return run

    def hidden(s):
        from gradlab.grading import lesson07
        lesson07.check_linear_backward(s.get("linear_forward", l7_linear_forward), s["linear_backward"])

    return Spec("L7.linear_backward", Exercise(graph, ("x", "W", "b"), name=("dx", "dW", "db")),
                _cases(73, make), answer, hidden)


NAMES7 = ("W1", "b1", "W2", "b2", "W3", "b3")


def _l7_backward():
    graph = Graph(Linear("z1", "X", "W1", "b1"), ReLU("a1", "z1"), Linear("z2", "a1", "W2", "b2"), ReLU("a2", "z2"),
                  Linear("logits", "a2", "W3", "b3"), Dot("J", "logits", "dlogits"), upstream="dlogits", data=("X",),
                  grad_notation={t: f"d{t}" for t in ("z1", "a1", "z2", "a2", "logits", *NAMES7)})

    def make(gen, n, dtype):
        sizes = (6 + n % 9, 9 + n % 4, 5 + n % 6, 3 + n % 5)
        inputs = {"X": _randn(gen, n, sizes[0], dtype=dtype)}
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            inputs[f"W{i}"] = _randn(gen, a, b, dtype=dtype, scale=a ** -0.5)
            inputs[f"b{i}"] = _randn(gen, b, dtype=dtype, scale=0.1)
        inputs["dlogits"] = _randn(gen, n, sizes[-1], dtype=dtype)
        return inputs

    def answer(s):
        def run(X, dlogits, **params):
            _, caches = s.get("forward", l7_forward)(params, X)
            grads = s["backward"](dlogits, caches)
            return {f"d{k}": v for k, v in grads.items()} if isinstance(grads, dict) else grads
        return run

    def hidden(s):
        from gradlab.grading import lesson07
        lesson07.check_backward(s.get("forward", l7_forward), s["backward"])

    return Spec("L7.backward", Exercise(graph, NAMES7, name=tuple(f"d{k}" for k in NAMES7)), _cases(74, make),
                answer, hidden)


INTERMEDIATES7 = ("z3", "W3", "b3", "a2", "z2", "W2", "b2", "a1", "z1", "W1", "b1")
LR7 = 0.3


def _l7_sizes_and_params(gen, n, dtype):
    sizes = (6 + n % 9, 9 + n % 4, 5 + n % 6, 3 + n % 5)
    inputs = {"X": _randn(gen, n, sizes[0], dtype=dtype)}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        inputs[f"W{i}"] = _randn(gen, a, b, dtype=dtype, scale=a ** -0.5)
        inputs[f"b{i}"] = _randn(gen, b, dtype=dtype, scale=0.1)
    return sizes, inputs


def _l7_log_softmax():
    graph = Graph(LogSoftmax("logp", "z"), Dot("J", "logp", "dlogp"), upstream="dlogp",
                  grad_notation={"logp": "dlogp", "z": "dz"})

    def make(gen, n, dtype):
        c = 3 + n % 8
        return {"z": torch.log_softmax(_randn(gen, n, c, scale=3.0), dim=1).to(dtype),
                "dlogp": _randn(gen, n, c, dtype=dtype)}

    def hidden(s):
        from gradlab.grading import lesson07
        lesson07.check_log_softmax_backward(s["log_softmax_backward"])

    return Spec("L7.log_softmax_backward", Exercise(graph, "z", name="dz"), _cases(75, make),
                lambda s: (lambda z, dlogp: s["log_softmax_backward"](dlogp, z)), hidden)


def _l7_backward_and_step():
    """backward_and_step: every intermediate gradient of the mean cross-entropy (z3 are the logits)."""
    graph = Graph(Linear("z1", "X", "W1", "b1"), ReLU("a1", "z1"), Linear("z2", "a1", "W2", "b2"), ReLU("a2", "z2"),
                  Linear("z3", "a2", "W3", "b3"), CrossEntropy("L", "z3", "y"), data=("X",),
                  grad_notation={k: f"dL/d{k}" for k in INTERMEDIATES7})

    def make(gen, n, dtype):
        sizes, inputs = _l7_sizes_and_params(gen, n, dtype)
        inputs["y"] = torch.randint(sizes[-1], (n,), generator=gen)
        return inputs

    def answer(s):
        def run(X, y, **params):
            grads = s["backward_and_step"]({k: v.clone() for k, v in params.items()}, X, y, LR7)
            return {f"dL/d{k}": grads.get(k) for k in INTERMEDIATES7} if isinstance(grads, dict) else grads
        return run

    def hidden(s):
        from gradlab.grading import lesson07
        lesson07.check_backward_and_step(s["backward_and_step"])

    return Spec("L7.backward_and_step", Exercise(graph, INTERMEDIATES7, name=tuple(f"dL/d{k}" for k in INTERMEDIATES7)),
                _cases(76, make), answer, hidden)


LAMBDA = 0.3


def _ext_l2():
    """Not a course exercise: lesson 5's linear layer with an L2 weight penalty λ·ΣW² added to the loss
    (CS231n-style), for the regularisation mistakes; backward_l2(dout, cache, lam) returns dW."""
    graph = Graph(Linear("out", "x", "W", "b"), Dot("Jd", "out", "dout"), L2("R", "W", LAMBDA), Add("J", "Jd", "R"),
                  upstream="dout", grad_notation={"out": "dout", "W": "dW"})

    def make(gen, n, dtype):
        d_in, d_out = 3 + n % 4, 2 + n % 3
        return {"x": _randn(gen, n, d_in, dtype=dtype), "W": _randn(gen, d_in, d_out, dtype=dtype),
                "b": _randn(gen, d_out, dtype=dtype), "dout": _randn(gen, n, d_out, dtype=dtype)}

    def answer(s):
        def run(x, W, b, dout):
            return s["linear_backward_l2"](dout, (x, W, b), LAMBDA)
        return run

    return Spec("EXT.l2_linear", Exercise(graph, "W", name="dW"), _cases(81, make), answer, None)


def l2_right(dout, cache, lam):
    x, W, b = cache
    return x.T @ dout + 2 * lam * W


def all_specs():
    specs = [_l1(), _l2(), _l2_db(), _l3_dJ_dsigma(), _l3_dsigma(), _l3_link("w"), _l3_link("b"), _l3_backward(),
             _l4_grads_by_graph(), _l5_linear(), _l5_sigmoid(), _l5_relu(), _l5_two_layer(), _l6_ce(), _l7_relu(),
             _l7_linear(), _l7_ce(), _l7_backward(), _l7_log_softmax(), _l7_backward_and_step(), _ext_l2()]
    return {s.key: s for s in specs}


# The right functions for every spec: the corpus runner checks each passes (no false alarm on a right answer).
RIGHT = {
    "L1.dsse_dw": {"dsse_dw": lambda X, y, w: (2 * (sigmoid(X * w) - y.reshape(-1, 1)) * sigmoid(X * w)
                                               * (1 - sigmoid(X * w)) * X).sum()},
    "L2.dJ_dw": {"dJ_dw": lambda x, y, w, b: (2 * (sigmoid(w * x + b) - y) * sigmoid(w * x + b)
                                              * (1 - sigmoid(w * x + b)) * x).mean()},
    "L2.dJ_db": {"dJ_db": lambda x, y, w, b: (2 * (sigmoid(w * x + b) - y) * sigmoid(w * x + b)
                                              * (1 - sigmoid(w * x + b))).mean()},
    "L3.dJ_dsigma": {"dJ_dsigma": lambda s, y: 2 * (s - y) / s.shape[0]},
    "L3.dsigma_dz": {"dsigma_dz": lambda z: sigmoid(z) * sigmoid(-z)},
    "L3.dz_dw": {"dz_dw": lambda x: x.clone()},
    "L3.dz_db": {"dz_db": torch.ones_like},
    "L3.backward": {"backward": lambda c: ((c[0] * 2 * (c[3] - c[1]) * c[3] * (1 - c[3]) / len(c[0])).sum(),
                                           (2 * (c[3] - c[1]) * c[3] * (1 - c[3]) / len(c[0])).sum())},
    "L4.grads_by_graph": {"grads_by_graph": l4_grads_by_graph},
    "L5.linear_backward": {"linear_backward": l5_linear_backward},
    "L5.sigmoid_backward": {"sigmoid_backward": l5_sigmoid_backward},
    "L5.relu_backward": {"relu_backward": l5_relu_backward},
    "L5.two_layer": {"two_layer_loss_and_grads": l5_two_layer},
    "L6.softmax_cross_entropy_grad": {"softmax_cross_entropy_grad": lambda z, l: l7_softmax_cross_entropy(z, l)[1]},
    "L7.relu_backward": {"relu_backward": l7_relu_backward},
    "L7.linear_backward": {"linear_backward": l7_linear_backward},
    "L7.softmax_cross_entropy": {"softmax_cross_entropy": l7_softmax_cross_entropy},
    "L7.backward": {"backward": l7_backward},
    "L7.log_softmax_backward": {"log_softmax_backward": l7_log_softmax_backward},
    "L7.backward_and_step": {"backward_and_step": l7_backward_and_step},
    "EXT.l2_linear": {"linear_backward_l2": l2_right},
}
