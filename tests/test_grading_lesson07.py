"""The hidden checks of lesson 7 accept every right answer (the lesson's own solution cells and unusual valid code) and
refuse each class of wrong answer with a message that names the real mistake.

A "student notebook" here is the lesson's solution cells run in a namespace of their own, then a few lines of a
student's code that redefine some functions (``notebook(...)``): composites such as ``backward`` then call the helpers
of that namespace, as they would in a student's kernel.
"""
import ast
import functools
import textwrap

import nbformat
import pytest
import torch

from course import NOTEBOOKS, solution_namespace
from grading_modes import both
from gradlab.grading import lesson07, mnist_run

NOTEBOOK = "07-mnist-by-hand/mnist-by-hand.ipynb"


def notebook(source=""):
    """The lesson's solutions, then ``source`` run in the same namespace (it may redefine any function)."""
    ns = solution_namespace(NOTEBOOK)
    exec(textwrap.dedent(source), ns)
    return ns


@functools.lru_cache(maxsize=1)
def _solutions():
    return notebook()


def solution(name):
    return _solutions()[name]


def fails(check, *fns, kind=None, match=()):
    """The check fails both ways with the same message; that message contains every string in ``match``."""
    err, verdict = both(check, *fns)
    assert err is not None, f"{check.check_name} passed a wrong answer"
    message = str(err)
    for text in (match if isinstance(match, (tuple, list)) else (match,)):
        assert text in message, f"{text!r} not in:\n{message}"
    if kind is not None:
        assert err.kind == kind, f"kind {err.kind!r}, expected {kind!r}:\n{message}"
    return message


def passes(check, *fns):
    """The check passes both ways; returns the notes it gave."""
    err, verdict = both(check, *fns)
    assert err is None, str(err)
    return verdict.notes


# --------------------------------------------------------------------------- the lesson's own solutions
SOLUTION_CHECKS = [
    (lesson07.check_linear_forward, ["linear_forward"]),
    (lesson07.check_linear_backward, ["linear_forward", "linear_backward"]),
    (lesson07.check_relu_forward, ["relu_forward"]),
    (lesson07.check_relu_backward, ["relu_forward", "relu_backward"]),
    (lesson07.check_log_softmax_backward, ["log_softmax_backward"]),
    (lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"]),
    (lesson07.check_forward, ["forward"]),
    (lesson07.check_backward, ["forward", "backward"]),
    (lesson07.check_sgd_step, ["sgd_step"]),
    (lesson07.check_momentum_weights, ["momentum_weights"]),
    (lesson07.check_backward_and_step, ["backward_and_step"]),
    (lesson07.check_train_epoch, ["train_epoch"]),
]


@pytest.mark.parametrize("check, names", SOLUTION_CHECKS, ids=[c.check_name for c, _ in SOLUTION_CHECKS])
def test_the_lessons_solutions_pass_on_their_own(check, names):
    """No note: a composite of the solutions passes with its own helpers, not thanks to the grader's."""
    assert passes(check, *(solution(n) for n in names)) == []


# --------------------------------------------------------------------------- autograd is refused
AUTOGRAD_LOSS = {
    ".backward()": """
        def softmax_cross_entropy(logits, labels):
            z = logits.detach().clone().requires_grad_()
            loss = F.cross_entropy(z, labels)
            loss.backward()
            return loss.detach(), z.grad
    """,
    "torch.autograd.grad": """
        def softmax_cross_entropy(logits, labels):
            z = logits.detach().clone()
            z.requires_grad = True
            loss = F.cross_entropy(z, labels)
            return loss.detach(), torch.autograd.grad(loss, z)[0]
    """,
    "a saved reference, on a graph from a tensor made before the check": """
        _grad = torch.autograd.grad
        _zero = torch.zeros((), dtype=torch.float64, requires_grad=True)

        def softmax_cross_entropy(logits, labels):
            z = logits + _zero.to(logits.device)
            loss = F.cross_entropy(z, labels)
            return loss.detach().to(logits.dtype), _grad(loss, z)[0].to(logits.dtype)
    """,
    "requires_grad=True in a factory": """
        def softmax_cross_entropy(logits, labels):
            z = torch.tensor(logits.tolist(), dtype=logits.dtype, device=logits.device, requires_grad=True)
            loss = F.cross_entropy(z, labels)
            return loss.detach(), torch.autograd.grad(loss, z)[0]
    """,
    "nn.Parameter": """
        def softmax_cross_entropy(logits, labels):
            z = torch.nn.Parameter(logits.detach().clone())
            loss = F.cross_entropy(z, labels)
            loss.backward()
            return loss.detach(), z.grad
    """,
    "torch.func.grad": """
        def softmax_cross_entropy(logits, labels):
            loss_of = lambda z: F.cross_entropy(z, labels)
            return loss_of(logits), torch.func.grad(loss_of)(logits)
    """,
}

AUTOGRAD_EPOCH = {
    ".backward()": """
        def train_epoch(params, velocity, X, y, batch_size, lr, momentum, generator):
            total = 0.0
            for idx in minibatches(len(X), batch_size, generator, X.device):
                ps = {k: p.detach().clone().requires_grad_() for k, p in params.items()}
                h = torch.relu(torch.relu(X[idx] @ ps["W1"] + ps["b1"]) @ ps["W2"] + ps["b2"])
                loss = F.cross_entropy(h @ ps["W3"] + ps["b3"], y[idx])
                loss.backward()
                sgd_step(params, {k: p.grad for k, p in ps.items()}, velocity, lr, momentum)
                total += loss.item() * len(idx)
            return total / len(X)
    """,
    "torch.autograd.grad with a saved reference": """
        _grad = torch.autograd.grad

        def train_epoch(params, velocity, X, y, batch_size, lr, momentum, generator):
            total = 0.0
            for idx in minibatches(len(X), batch_size, generator, X.device):
                ps = {k: torch.zeros_like(p, requires_grad=True) for k, p in params.items()}
                with torch.no_grad():
                    for k in ps:
                        ps[k].copy_(params[k])
                h = torch.relu(torch.relu(X[idx] @ ps["W1"] + ps["b1"]) @ ps["W2"] + ps["b2"])
                loss = F.cross_entropy(h @ ps["W3"] + ps["b3"], y[idx])
                grads = dict(zip(ps, _grad(loss, list(ps.values()))))
                sgd_step(params, grads, velocity, lr, momentum)
                total += loss.item() * len(idx)
            return total / len(X)
    """,
    "torch.func.grad": """
        def train_epoch(params, velocity, X, y, batch_size, lr, momentum, generator):
            total = 0.0
            for idx in minibatches(len(X), batch_size, generator, X.device):
                def loss_of(ps):
                    h = torch.relu(torch.relu(X[idx] @ ps["W1"] + ps["b1"]) @ ps["W2"] + ps["b2"])
                    return F.cross_entropy(h @ ps["W3"] + ps["b3"], y[idx])
                total += loss_of(params).item() * len(idx)
                sgd_step(params, torch.func.grad(loss_of)(dict(params)), velocity, lr, momentum)
            return total / len(X)
    """,
}


@pytest.mark.parametrize("how", AUTOGRAD_LOSS)
def test_a_loss_gradient_by_autograd_fails(how):
    message = fails(lesson07.check_softmax_cross_entropy, notebook(AUTOGRAD_LOSS[how])["softmax_cross_entropy"],
                    kind="autograd", match=["`softmax_cross_entropy` used autograd", "derived by hand",
                                            "the mistake is in `softmax_cross_entropy` itself"])
    assert "not written" not in message


@pytest.mark.parametrize("how", AUTOGRAD_EPOCH)
def test_a_training_epoch_with_autograd_fails(how):
    fails(lesson07.check_train_epoch, notebook(AUTOGRAD_EPOCH[how])["train_epoch"], kind="autograd",
          match=["`train_epoch` used autograd", "the mistake is in `train_epoch` itself"])


def test_autograd_in_a_helper_costs_the_helper_and_not_the_epoch():
    ns = notebook(AUTOGRAD_LOSS["torch.autograd.grad"])
    fails(lesson07.check_softmax_cross_entropy, ns["softmax_cross_entropy"], kind="autograd")
    notes = passes(lesson07.check_train_epoch, ns["train_epoch"])
    assert len(notes) == 1 and "Fix `softmax_cross_entropy`" in notes[0] and "used autograd" in notes[0]


@pytest.mark.parametrize("check, name, source", [
    (lesson07.check_log_softmax_backward, "log_softmax_backward", """
        def log_softmax_backward(dlogp, logp):
            z = logp.detach().clone().requires_grad_()
            return torch.autograd.grad((torch.log_softmax(z, dim=1) * dlogp).sum(), z)[0]
    """),
    (lesson07.check_momentum_weights, "momentum_weights", """
        def momentum_weights(steps, momentum):
            p = torch.zeros(steps, dtype=torch.float64, requires_grad=True)
            opt = torch.optim.SGD([p], lr=1.0, momentum=momentum)
            return p
    """),
])
def test_autograd_in_the_new_exercises_fails(check, name, source):
    fails(check, notebook(source)[name], kind="autograd", match=f"`{name}` used autograd")


def test_backward_by_autograd_fails():
    ns = notebook("""
        def backward(dlogits, caches):
            X, params = caches
            ps = {k: p.detach().clone().requires_grad_() for k, p in params.items()}
            h = torch.relu(torch.relu(X @ ps["W1"] + ps["b1"]) @ ps["W2"] + ps["b2"])
            ((h @ ps["W3"] + ps["b3"]) * dlogits).sum().backward()
            return {k: p.grad for k, p in ps.items()}

        _forward = forward

        def forward(params, X):
            return _forward(params, X)[0], (X, params)
    """)
    fails(lesson07.check_backward, ns["forward"], ns["backward"], kind="autograd", match="`backward` used autograd")


# --------------------------------------------------------------------------- inputs changed in place
@pytest.mark.parametrize("check, names, source, changed", [
    (lesson07.check_relu_backward, ["relu_forward", "relu_backward"], """
        def relu_backward(dout, cache):
            dout[~cache] = 0
            return dout
    """, "dout"),
    (lesson07.check_relu_backward, ["relu_forward", "relu_backward"], """
        def relu_backward(dout, cache):
            return dout.mul_(cache)
    """, "dout"),
    (lesson07.check_linear_backward, ["linear_forward", "linear_backward"], """
        def linear_backward(dout, cache):
            x, W = cache
            dout *= 2
            return dout @ W.T / 2, x.T @ dout / 2, dout.sum(dim=0) / 2
    """, "dout"),
    (lesson07.check_log_softmax_backward, ["log_softmax_backward"], """
        def log_softmax_backward(dlogp, logp):
            dlogp -= logp.exp() * dlogp.sum(dim=1, keepdim=True)
            return dlogp
    """, "dlogp"),
    (lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        def softmax_cross_entropy(logits, labels):
            B, C = logits.shape
            logits -= logits.max(dim=1, keepdim=True).values
            log_probs = logits - logits.exp().sum(dim=1, keepdim=True).log()
            one_hot = F.one_hot(labels, C).to(logits.dtype)
            return -(one_hot * log_probs).sum() / B, (log_probs.exp() - one_hot) / B
    """, "logits"),
    (lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            loss, dlogits = _solution(logits, labels)
            logits.div_(len(logits))
            return loss, dlogits
    """, "logits"),
    (lesson07.check_backward, ["forward", "backward"], """
        _solution = backward

        def backward(dlogits, caches):
            grads = _solution(dlogits, caches)
            dlogits.zero_()
            return grads
    """, "dlogits"),
    (lesson07.check_sgd_step, ["sgd_step"], """
        def sgd_step(params, grads, velocity, lr, momentum):
            for name, p in params.items():
                g = grads[name]
                g.add_(velocity[name], alpha=momentum)
                velocity[name] = g
                p.sub_(lr * g)
    """, "grads['W1']"),
    (lesson07.check_train_epoch, ["train_epoch"], """
        _solution = train_epoch

        def train_epoch(params, velocity, X, y, batch_size, lr, momentum, generator):
            X /= 1 + X.abs().max()
            return _solution(params, velocity, X, y, batch_size, lr, momentum, generator)
    """, "X"),
])
def test_changing_an_input_in_place_fails_naming_it(check, names, source, changed):
    ns = notebook(source)
    fails(check, *(ns[n] for n in names), kind="changed input", match=f"changed its input `{changed}` in place")


# --------------------------------------------------------------------------- right answers, unusual ones included
_STEP_BY_HAND = """
        def backward_and_step(params, X, y, lr):  # written out, with MASK1 as layer 1's ReLU mask
            W1, b1, W2, b2, W3, b3 = (params[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
            z1 = X @ W1 + b1
            a1 = z1.clamp(min=0)
            z2 = a1 @ W2 + b2
            a2 = z2.clamp(min=0)
            z3 = a2 @ W3 + b3
            g = {"z3": (torch.softmax(z3, dim=1) - F.one_hot(y, z3.shape[1]).to(z3.dtype)) / len(X)}
            g["a2"], g["W3"], g["b3"] = g["z3"] @ W3.T, a2.T @ g["z3"], g["z3"].sum(dim=0)
            g["z2"] = g["a2"] * (z2 > 0)
            g["a1"], g["W2"], g["b2"] = g["z2"] @ W2.T, a1.T @ g["z2"], g["z2"].sum(dim=0)
            g["z1"] = g["a1"] * (MASK1)
            g["W1"], g["b1"] = X.T @ g["z1"], g["z1"].sum(dim=0)
            for k in ("W1", "b1", "W2", "b2", "W3", "b3"):
                params[k].sub_(lr * g[k])
            return g
"""

RIGHT = [
    (lesson07.check_linear_forward, ["linear_forward"], """
        def linear_forward(x, W, b):
            return torch.addmm(b, x, W), {"x": x, "W": W}
    """),
    (lesson07.check_linear_backward, ["linear_forward", "linear_backward"], """
        def linear_forward(x, W, b):
            return F.linear(x, W.T, b), (x.clone(), W.clone(), b.clone())

        def linear_backward(dout, cache):
            x, W, b = cache
            return torch.einsum("bo,io->bi", dout, W), torch.einsum("bi,bo->io", x, dout), dout.sum(dim=0)
    """),
    (lesson07.check_relu_forward, ["relu_forward"], """
        def relu_forward(x):
            return torch.where(x > 0, x, torch.zeros_like(x)), x
    """),
    (lesson07.check_relu_forward, ["relu_forward"], """
        def relu_forward(x):
            return x * (x > 0), x > 0
    """),
    (lesson07.check_relu_backward, ["relu_forward", "relu_backward"], """
        def relu_forward(x):
            return x.clamp(min=0), x

        def relu_backward(dout, cache):
            dx = dout.clone()
            dx[cache <= 0] = 0
            return dx
    """),
    (lesson07.check_relu_backward, ["relu_forward", "relu_backward"], """
        def relu_forward(x):
            out = x.clamp(min=0)
            return out, out

        def relu_backward(dout, cache):
            return torch.where(cache > 0, dout, 0.0)
    """),
    (lesson07.check_log_softmax_backward, ["log_softmax_backward"], """
        def log_softmax_backward(dlogp, logp):
            p = torch.softmax(logp, dim=1)
            jacobian = torch.eye(logp.shape[1], dtype=logp.dtype, device=logp.device) - p[:, None, :]
            return torch.einsum("bk,bkj->bj", dlogp, jacobian)
    """),
    (lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        def softmax_cross_entropy(logits, labels):
            B = len(logits)
            logp = torch.log_softmax(logits, dim=1)
            rows = torch.arange(B, device=logits.device)
            dlogits = logp.exp()
            dlogits[rows, labels] -= 1
            dlogits /= B
            return -logp[rows, labels].mean(), dlogits
    """),
    (lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        def softmax_cross_entropy(logits, labels):
            B, C = logits.shape
            logp = F.log_softmax(logits, dim=1)
            one_hot = F.one_hot(labels, C).to(logits.dtype)
            return F.cross_entropy(logits, labels), log_softmax_backward(-one_hot / B, logp)
    """),
    (lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        def softmax_cross_entropy(logits, labels):
            B, C = logits.shape
            shifted = logits - logits.max(dim=1, keepdim=True).values
            p = shifted.exp() / shifted.exp().sum(dim=1, keepdim=True)
            right = torch.arange(C, device=logits.device)[None, :] == labels[:, None]
            log_p = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
            return -torch.where(right, log_p, 0.0).sum() / B, torch.where(right, p - 1, p) / B
    """),
    # log-sum-exp forms: in float32 near ±400 the loss carries rounding the size of the logits, not of the loss
    (lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        def softmax_cross_entropy(logits, labels):
            lp = logits - torch.logsumexp(logits, dim=1, keepdim=True)
            one_hot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
            return -(one_hot * lp).sum() / len(logits), (lp.exp() - one_hot) / len(logits)
    """),
    (lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        def softmax_cross_entropy(logits, labels):
            loss = (torch.logsumexp(logits, 1) - logits.gather(1, labels[:, None]).squeeze(1)).mean()
            one_hot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
            return loss, (torch.softmax(logits, dim=1) - one_hot) / len(logits)
    """),
    (lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        def softmax_cross_entropy(logits, labels):
            B = len(logits)
            m = logits.max(dim=1, keepdim=True).values
            lp = logits - (m + torch.log(torch.exp(logits - m).sum(1, keepdim=True)))
            one_hot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
            return -lp[torch.arange(B), labels].mean(), (lp.exp() - one_hot) / B
    """),
    # lists where the docstrings say (a, b), as lesson 5 accepts them
    (lesson07.check_linear_forward, ["linear_forward"], """
        def linear_forward(x, W, b):
            return [x @ W + b, (x, W)]
    """),
    (lesson07.check_linear_backward, ["linear_forward", "linear_backward"], """
        def linear_forward(x, W, b):
            return [x @ W + b, [x, W, b]]

        def linear_backward(dout, cache):
            x, W, b = cache
            return [dout @ W.T, x.T @ dout, dout.sum(dim=0)]
    """),
    (lesson07.check_relu_forward, ["relu_forward"], """
        def relu_forward(x):
            return [x.clamp(min=0), x]
    """),
    (lesson07.check_relu_backward, ["relu_forward", "relu_backward"], """
        def relu_forward(x):
            return [x.clamp(min=0), x]

        def relu_backward(dout, cache):
            return dout * (cache > 0)
    """),
    (lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            return list(_solution(logits, labels))
    """),
    (lesson07.check_forward, ["forward"], """
        def forward(params, X):
            h = (X @ params["W1"] + params["b1"]).clamp(min=0)
            h = (h @ params["W2"] + params["b2"]).clamp(min=0)
            return h @ params["W3"] + params["b3"], None
    """),
    (lesson07.check_backward, ["forward", "backward"], """
        def forward(params, X):
            caches = {}
            z1, caches["linear1"] = linear_forward(X, params["W1"], params["b1"])
            a1, caches["relu1"] = relu_forward(z1)
            z2, caches["linear2"] = linear_forward(a1, params["W2"], params["b2"])
            a2, caches["relu2"] = relu_forward(z2)
            logits, caches["linear3"] = linear_forward(a2, params["W3"], params["b3"])
            return logits, caches

        def backward(dlogits, caches):
            grads = {"dlogits": dlogits.clone()}
            da2, grads["W3"], grads["b3"] = linear_backward(dlogits, caches["linear3"])
            da1, grads["W2"], grads["b2"] = linear_backward(relu_backward(da2, caches["relu2"]), caches["linear2"])
            _, grads["W1"], grads["b1"] = linear_backward(relu_backward(da1, caches["relu1"]), caches["linear1"])
            return grads
    """),
    (lesson07.check_sgd_step, ["sgd_step"], """
        def sgd_step(params, grads, velocity, lr, momentum):
            for k in params:
                velocity[k] = momentum * velocity[k] + grads[k]
                params[k] -= lr * velocity[k]
    """),
    (lesson07.check_sgd_step, ["sgd_step"], """
        def sgd_step(params, grads, velocity, lr, momentum):
            names = list(params)
            torch._foreach_mul_([velocity[k] for k in names], momentum)
            torch._foreach_add_([velocity[k] for k in names], [grads[k] for k in names])
            torch._foreach_add_([params[k] for k in names], [velocity[k] for k in names], alpha=-lr)
    """),
    (lesson07.check_momentum_weights, ["momentum_weights"], """
        def momentum_weights(steps, momentum):
            weights = []
            for s in range(steps):
                weights = [w * momentum for w in weights] + [1.0]
            return torch.tensor(weights, dtype=torch.float64)
    """),
    (lesson07.check_backward_and_step, ["backward_and_step"], """
        def backward_and_step(params, X, y, lr):
            logits, caches = forward(params, X)
            loss, dz3 = softmax_cross_entropy(logits, y)
            c1, r1, c2, r2, c3 = caches
            g = {"z3": dz3}
            g["a2"], g["W3"], g["b3"] = linear_backward(dz3, c3)
            g["z2"] = relu_backward(g["a2"], r2)
            g["a1"], g["W2"], g["b2"] = linear_backward(g["z2"], c2)
            g["z1"] = relu_backward(g["a1"], r1)
            _, g["W1"], g["b1"] = linear_backward(g["z1"], c1)
            for k in ("W1", "b1", "W2", "b2", "W3", "b3"):
                params[k].sub_(lr * g[k])
            return g
    """),
    (lesson07.check_backward_and_step, ["backward_and_step"], _STEP_BY_HAND.replace("MASK1", "a1 > 0")),
    (lesson07.check_train_epoch, ["train_epoch"], """
        def train_epoch(params, velocity, X, y, batch_size, lr, momentum, generator):
            total_loss = 0.0
            for idx in minibatches(len(X), batch_size, generator, X.device):
                logits, caches = forward(params, X[idx])
                loss, dlogits = softmax_cross_entropy(logits, y[idx])
                grads = backward(dlogits, caches)
                sgd_step(params, grads, velocity, lr, momentum)
                total_loss += loss.item() * len(idx)
            return total_loss / len(X)
    """),
]


@pytest.mark.parametrize("check, names, source", RIGHT, ids=[f"{c.check_name}-{i}" for i, (c, _, _) in enumerate(RIGHT)])
def test_unusual_right_answers_pass(check, names, source):
    ns = notebook(source)
    assert passes(check, *(ns[n] for n in names)) == []


# --------------------------------------------------------------------------- wrong answers, one per class of hole
WRONG = [
    # linear
    ("float32 for float64 inputs", lesson07.check_linear_forward, ["linear_forward"], """
        def linear_forward(x, W, b):
            return (x @ W + b).float(), (x, W)
    """, "placement", "it should follow the inputs"),
    ("no bias", lesson07.check_linear_forward, ["linear_forward"], """
        def linear_forward(x, W, b):
            return x @ W, (x, W)
    """, None, "linear_forward output is wrong"),
    ("dW transposed", lesson07.check_linear_backward, ["linear_forward", "linear_backward"], """
        def linear_backward(dout, cache):
            x, W = cache
            return dout @ W.T, (dout.T @ x).T.T, dout.sum(dim=0)
    """, None, "dW is wrong"),
    ("db not summed over the batch", lesson07.check_linear_backward, ["linear_forward", "linear_backward"], """
        def linear_backward(dout, cache):
            x, W = cache
            return dout @ W.T, x.T @ dout, dout
    """, None, "db"),
    ("a stray 1/B", lesson07.check_linear_backward, ["linear_forward", "linear_backward"], """
        def linear_backward(dout, cache):
            x, W = cache
            return dout @ W.T, x.T @ dout / len(dout), dout.sum(dim=0)
    """, "factor", "dW is wrong"),
    ("dx with the wrong sign", lesson07.check_linear_backward, ["linear_forward", "linear_backward"], """
        def linear_backward(dout, cache):
            x, W = cache
            return -(dout @ W.T), x.T @ dout, dout.sum(dim=0)
    """, "sign", "dx is wrong"),
    # relu
    ("relu as abs", lesson07.check_relu_forward, ["relu_forward"], """
        def relu_forward(x):
            return x.abs(), x
    """, None, "relu_forward output is wrong"),
    ("mask x >= 0", lesson07.check_relu_backward, ["relu_forward", "relu_backward"], """
        def relu_forward(x):
            return x.clamp(min=0), x

        def relu_backward(dout, cache):
            return dout * (cache >= 0)
    """, "mask_at_zero", "Fix: use x > 0, not x >= 0"),
    ("no mask", lesson07.check_relu_backward, ["relu_forward", "relu_backward"], """
        def relu_backward(dout, cache):
            return dout.clone()
    """, "mask_missing", ["dx is wrong", "the ReLU mask is missing"]),
    ("the bool mask returned (dout forgotten)", lesson07.check_relu_backward, ["relu_forward", "relu_backward"], """
        def relu_forward(x):
            out = x.clamp(min=0)
            return out, out > 0

        def relu_backward(dout, cache):
            return cache
    """, "no_upstream", ["dx is a bool tensor", "not the gradient", "multiply the upstream gradient dout by it"]),
    ("an integer mask returned", lesson07.check_relu_backward, ["relu_forward", "relu_backward"], """
        def relu_backward(dout, cache):
            return (cache > 0).long()
    """, "type", ["dx holds int64 values", "a gradient holds real numbers"]),
    ("float32 mask product", lesson07.check_relu_backward, ["relu_forward", "relu_backward"], """
        def relu_backward(dout, cache):
            return (dout * cache).float()
    """, "placement", "dx has the right values"),
    # log-softmax backward
    ("the row sum forgotten", lesson07.check_log_softmax_backward, ["log_softmax_backward"], """
        def log_softmax_backward(dlogp, logp):
            return dlogp.clone()
    """, "dropped", ["dz is wrong", "it is dlogp itself", "collects a term from the whole row"]),
    ("only the Jacobian's diagonal", lesson07.check_log_softmax_backward, ["log_softmax_backward"], """
        def log_softmax_backward(dlogp, logp):
            return dlogp * (1 - logp.exp())
    """, "softmax_diag", ["dz is wrong", "only the diagonal"]),
    ("sum over the batch instead of the row", lesson07.check_log_softmax_backward, ["log_softmax_backward"], """
        def log_softmax_backward(dlogp, logp):
            return dlogp - logp.exp() * dlogp.sum(dim=0, keepdim=True)
    """, "softmax_axis", ["dz is wrong", "down the batch (dim=0)"]),
    # the loss
    ("one maximum for the whole batch", lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        def softmax_cross_entropy(logits, labels):
            B, C = logits.shape
            shifted = logits - logits.max()
            log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
            one_hot = F.one_hot(labels, C).to(logits.dtype)
            return -(one_hot * log_probs).sum() / B, (log_probs.exp() - one_hot) / B
    """, None, ["rows near +400 and -400", "each row's own maximum"]),
    ("no shift at all", lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        def softmax_cross_entropy(logits, labels):
            B, C = logits.shape
            p = logits.exp() / logits.exp().sum(dim=1, keepdim=True)
            one_hot = F.one_hot(labels, C).to(logits.dtype)
            return -(one_hot * p.log()).sum() / B, (p - one_hot) / B
    """, None, "each row's own maximum"),
    ("a log-sum-exp loss with the wrong sign", lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            loss = (logits.gather(1, labels[:, None]).squeeze(1) - torch.logsumexp(logits, 1)).mean()
            return loss, _solution(logits, labels)[1]
    """, "sign", "loss is wrong"),
    ("a log-sum-exp loss summed over the rows", lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            loss = (torch.logsumexp(logits, 1) - logits.gather(1, labels[:, None]).squeeze(1)).sum()
            return loss, _solution(logits, labels)[1]
    """, None, "the sum over the rows"),
    ("the log-softmax down the batch", lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            lp = logits - torch.logsumexp(logits, dim=0, keepdim=True)
            return -lp[torch.arange(len(logits)), labels].mean(), _solution(logits, labels)[1]
    """, None, "loss is wrong"),
    ("the sum instead of the mean", lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            loss, dlogits = _solution(logits, labels)
            return loss * len(logits), dlogits
    """, None, "the sum over the rows"),
    ("the gradient without 1/B", lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            loss, dlogits = _solution(logits, labels)
            return loss, dlogits * len(logits)
    """, "factor", "dlogits is wrong"),
    ("a float32 loss for float64 logits", lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            loss, dlogits = _solution(logits, labels)
            return loss.float(), dlogits
    """, "placement", "loss has the right values"),
    ("a Python float as the loss", lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            loss, dlogits = _solution(logits, labels)
            return loss.item(), dlogits
    """, "type", "loss should be a tensor"),
    ("only dlogits returned", lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            return _solution(logits, labels)[1]
    """, "not a pair", "should return a pair"),
    # the network
    ("ReLU on the logits", lesson07.check_forward, ["forward"], """
        _solution = forward

        def forward(params, X):
            logits, caches = _solution(params, X)
            return logits.clamp(min=0), caches
    """, None, "forward output is wrong"),
    ("no mask in layer 2", lesson07.check_backward, ["forward", "backward"], """
        def backward(dlogits, caches):
            c1, r1, c2, r2, c3 = caches
            grads = {}
            da2, grads["W3"], grads["b3"] = linear_backward(dlogits, c3)
            da1, grads["W2"], grads["b2"] = linear_backward(da2, c2)
            _, grads["W1"], grads["b1"] = linear_backward(relu_backward(da1, r1), c1)
            return grads
    """, "mask_missing", ["dW2 is wrong", "the ReLU mask is missing: dz2 should be 0", "The first wrong gradient is dz2",
                          "the mistake is in `backward` itself"]),
    ("a missing key", lesson07.check_backward, ["forward", "backward"], """
        _solution = backward

        def backward(dlogits, caches):
            grads = _solution(dlogits, caches)
            del grads["b1"]
            return grads
    """, "missing key", "missing: b1"),
    ("a hard-coded answer", lesson07.check_backward, ["forward", "backward"], """
        def backward(dlogits, caches):
            return {k: torch.zeros(3, 3) if k.startswith("W") else torch.zeros(3) for k in ("W1", "b1", "W2", "b2", "W3", "b3")}
    """, None, "dW3"),
    ("float32 gradients for float64", lesson07.check_backward, ["forward", "backward"], """
        _solution = backward

        def backward(dlogits, caches):
            return {k: g.float() for k, g in _solution(dlogits, caches).items()}
    """, "placement", "dW3 has the right values"),
    # the update
    ("momentum ignored", lesson07.check_sgd_step, ["sgd_step"], """
        def sgd_step(params, grads, velocity, lr, momentum):
            for k, p in params.items():
                velocity[k] = grads[k].clone()
                p.sub_(lr * grads[k])
    """, None, "velocity['W3'] after the step is wrong"),
    ("the step with the old velocity", lesson07.check_sgd_step, ["sgd_step"], """
        def sgd_step(params, grads, velocity, lr, momentum):
            for k, p in params.items():
                p.sub_(lr * velocity[k])
                velocity[k].mul_(momentum).add_(grads[k])
    """, None, "velocity from before the update"),
    ("the step along the gradient", lesson07.check_sgd_step, ["sgd_step"], """
        def sgd_step(params, grads, velocity, lr, momentum):
            for k, p in params.items():
                velocity[k].mul_(momentum).add_(grads[k])
                p.sub_(lr * grads[k])
    """, None, "step without momentum"),
    ("the wrong sign", lesson07.check_sgd_step, ["sgd_step"], """
        def sgd_step(params, grads, velocity, lr, momentum):
            for k, p in params.items():
                velocity[k].mul_(momentum).add_(grads[k])
                p.add_(lr * velocity[k])
    """, None, ["params['W3'] after the step is wrong", "That step goes uphill"]),
    ("a dampened velocity", lesson07.check_sgd_step, ["sgd_step"], """
        def sgd_step(params, grads, velocity, lr, momentum):
            for k, p in params.items():
                velocity[k].mul_(momentum).add_((1 - momentum) * grads[k])
                p.sub_(lr * velocity[k])
    """, None, ["velocity['W3'] after the step is wrong", "the values differ from the expected ones.",
                "That is the exponential moving average v = m·v + (1 − m)·g"]),
    ("new parameter tensors", lesson07.check_sgd_step, ["sgd_step"], """
        def sgd_step(params, grads, velocity, lr, momentum):
            for k in params:
                velocity[k] = momentum * velocity[k] + grads[k]
                params[k] = params[k] - lr * velocity[k]
    """, "not in place", "Update each parameter in place"),
    ("momentum's weights reversed", lesson07.check_momentum_weights, ["momentum_weights"], """
        def momentum_weights(steps, momentum):
            return momentum ** torch.arange(steps, dtype=torch.float64)
    """, None, "The order is reversed"),
    ("momentum's weights as an average", lesson07.check_momentum_weights, ["momentum_weights"], """
        def momentum_weights(steps, momentum):
            return (1 - momentum) * momentum ** torch.arange(steps - 1, -1, -1, dtype=torch.float64)
    """, None, ["momentum weights is wrong (steps=5, momentum=0.9): every value is (1 − m) = 0.1 × the expected one: "
                "that is the exponential moving average", "is v = m·v + g"]),
    ("momentum's weights one power too high", lesson07.check_momentum_weights, ["momentum_weights"], """
        def momentum_weights(steps, momentum):
            return momentum ** torch.arange(steps, 0, -1, dtype=torch.float64)
    """, None, "momentum weights is wrong"),
    ("momentum's weights in float32", lesson07.check_momentum_weights, ["momentum_weights"], """
        def momentum_weights(steps, momentum):
            return momentum ** torch.arange(steps - 1, -1, -1, dtype=torch.float32)
    """, "placement", "momentum weights has the right values"),
    # training
    ("the loss times the nominal batch size", lesson07.check_train_epoch, ["train_epoch"], """
        def train_epoch(params, velocity, X, y, batch_size, lr, momentum, generator):
            total_loss = torch.zeros((), dtype=X.dtype, device=X.device)
            for idx in minibatches(len(X), batch_size, generator, X.device):
                logits, caches = forward(params, X[idx])
                loss, dlogits = softmax_cross_entropy(logits, y[idx])
                sgd_step(params, backward(dlogits, caches), velocity, lr, momentum)
                total_loss += loss * batch_size
            return total_loss.item() / len(X)
    """, "epoch loss", "not by batch_size"),
    ("the mean of the batch means", lesson07.check_train_epoch, ["train_epoch"], """
        def train_epoch(params, velocity, X, y, batch_size, lr, momentum, generator):
            losses = []
            for idx in minibatches(len(X), batch_size, generator, X.device):
                logits, caches = forward(params, X[idx])
                loss, dlogits = softmax_cross_entropy(logits, y[idx])
                sgd_step(params, backward(dlogits, caches), velocity, lr, momentum)
                losses.append(loss.item())
            return sum(losses) / len(losses)
    """, "epoch loss", "the mean of the batch means"),
    ("the loss as a tensor", lesson07.check_train_epoch, ["train_epoch"], """
        _solution = train_epoch

        def train_epoch(*args):
            return torch.tensor(_solution(*args))
    """, "type", "as a Python float"),
    ("no momentum", lesson07.check_train_epoch, ["train_epoch"], """
        _solution = train_epoch

        def train_epoch(params, velocity, X, y, batch_size, lr, momentum, generator):
            return _solution(params, velocity, X, y, batch_size, lr, 0.0, generator)
    """, None, ["params['W3'] is wrong", "the mistake is in `train_epoch` itself"]),
    ("its own batch order", lesson07.check_train_epoch, ["train_epoch"], """
        _solution = train_epoch

        def train_epoch(params, velocity, X, y, batch_size, lr, momentum, generator):
            return _solution(params, velocity, X, y, batch_size, lr, momentum, torch.Generator().manual_seed(99))
    """, None, "params['W3'] is wrong"),
    ("a built-in learning rate and momentum", lesson07.check_train_epoch, ["train_epoch"], """
        _solution = train_epoch

        def train_epoch(params, velocity, X, y, batch_size, lr, momentum, generator):
            return _solution(params, velocity, X, y, batch_size, 0.1, 0.9, generator)
    """, None, ["params['W3'] is wrong", "lr=0.05, momentum=0.5", "after epoch 2"]),
]


def test_momentum_is_not_told_of_a_batch_size_or_the_chain_rule():
    # (1 − m) = 1/10 was "an extra division by N (N = 10 here)": there is no N in momentum_weights
    message = fails(lesson07.check_momentum_weights, notebook("""
        def momentum_weights(steps, momentum):
            return (1 - momentum) * momentum ** torch.arange(steps - 1, -1, -1, dtype=torch.float64)
    """)["momentum_weights"], kind="factor", match="(1 − m) = 0.1")
    assert "N = 10" not in message and "by N" not in message, message
    message = fails(lesson07.check_momentum_weights, notebook("""
        def momentum_weights(steps, momentum):
            return 10 * momentum ** torch.arange(steps - 1, -1, -1, dtype=torch.float64)
    """)["momentum_weights"], kind="factor", match="every value is 10 × the expected one: a constant factor is off")
    assert "by N" not in message and "moving average" not in message, message
    message = fails(lesson07.check_sgd_step, notebook("""
        def sgd_step(params, grads, velocity, lr, momentum):
            for k, p in params.items():
                velocity[k].mul_(momentum).add_((1 - momentum) * grads[k])
                p.sub_(lr * velocity[k])
    """)["sgd_step"], kind="values", match="the exponential moving average")
    assert "chain rule" not in message, message


def test_an_output_is_not_told_of_the_chain_rule_but_a_gradient_is():
    message = fails(lesson07.check_linear_forward, notebook("""
        def linear_forward(x, W, b):
            return x @ W - b, (x, W)
    """)["linear_forward"], kind="values", match="linear_forward output is wrong")
    assert "the values differ from the expected ones." in message and "chain rule" not in message, message
    ns = notebook("""
        def linear_backward(dout, cache):
            x, W = cache[0], cache[1]
            return dout @ W.T, x.T @ dout, dout.sum(dim=0) + 1
    """)
    fails(lesson07.check_linear_backward, ns["linear_forward"], ns["linear_backward"], kind="values",
          match=["db is wrong", "Check your formula against the chain rule"])  # a gradient: unchanged


@pytest.mark.parametrize("what, check, names, source, kind, match", WRONG, ids=[w[0] for w in WRONG])
def test_a_wrong_answer_fails_naming_the_mistake(what, check, names, source, kind, match):
    ns = notebook(source)
    fails(check, *(ns[n] for n in names), kind=kind, match=match)


# --------------------------------------------------------------------------- issue 15: the real mistake, named
# A formula mistake is named (kind and words) only when it fits every case tried; the message comes from an
# informative case (not n = 1); a whole backward pass says where the first wrong gradient is and what follows.
_KEEP_X = """
        def relu_forward(x):
            return x.clamp(min=0), x
"""
_BY_HAND = """
        def backward(dlogits, caches):  # a backward that writes each layer out, with SLIP in its ReLU steps
            c1, r1, c2, r2, c3 = caches
            grads = {}
            a2, W3 = c3
            grads["W3"], grads["b3"] = a2.T @ dlogits, dlogits.sum(dim=0)
            da2 = DA2
            dz2 = DZ2
            a1, W2 = c2
            grads["W2"], grads["b2"] = a1.T @ dz2, dz2.sum(dim=0)
            da1 = DA1
            dz1 = DZ1
            x, _ = c1
            grads["W1"], grads["b1"] = x.T @ dz1, dz1.sum(dim=0)
            return grads
"""


def by_hand(da2="dlogits @ W3.T", dz2="da2 * (r2 > 0)", da1="dz2 @ W2.T", dz1="da1 * (r1 > 0)"):
    """A backward written out layer by layer (relu_forward caches the input x), with the given expressions."""
    return _KEEP_X + _BY_HAND.replace("DA2", da2).replace("DZ2", dz2).replace("DA1", da1).replace("DZ1", dz1)


NAMED = [
    # linear_backward
    ("dW for W in dx", lesson07.check_linear_backward, ["linear_forward", "linear_backward"], """
        def linear_backward(dout, cache):
            x, W = cache
            dW = x.T @ dout
            return dout @ dW.T, dW, dout.sum(dim=0)
    """, "wrong_factor", ["dx is wrong (n=64", "it uses the gradient dW where the weight W belongs", "Fix: dx = dout @ Wᵀ"]),
    ("the input in db", lesson07.check_linear_backward, ["linear_forward", "linear_backward"], """
        def linear_backward(dout, cache):
            x, W = cache
            return dout @ W.T, x.T @ dout, (x.T @ dout).sum(dim=0)
    """, "wrong_factor", ["db is wrong", "the bias's local derivative is 1"]),
    ("`=` for `+=` in a loop over the rows", lesson07.check_linear_backward, ["linear_forward", "linear_backward"], """
        def linear_backward(dout, cache):
            x, W = cache
            dW = torch.zeros_like(W)
            for i in range(len(x)):
                dW = torch.outer(x[i], dout[i])
            return dout @ W.T, dW, dout.sum(dim=0)
    """, "last_term", ["dW is wrong", "only the last row's term"]),
    # relu_backward
    ("the mask from dout's sign", lesson07.check_relu_backward, ["relu_forward", "relu_backward"], """
        def relu_backward(dout, cache):
            return dout * (dout > 0)
    """, "mask_upstream", ["dx is wrong (n=64", "from the sign of the upstream gradient dout"]),
    ("slope x", lesson07.check_relu_backward, ["relu_forward", "relu_backward"], _KEEP_X + """
        def relu_backward(dout, cache):
            return dout * cache.clamp(min=0)
    """, "relu_slope", "ReLU's slope there is 1"),
    ("the mask alone", lesson07.check_relu_backward, ["relu_forward", "relu_backward"], """
        def relu_backward(dout, cache):
            return cache.to(dout.dtype)
    """, "no_upstream", "not multiplied by the upstream gradient dout"),
    ("the mask inverted", lesson07.check_relu_backward, ["relu_forward", "relu_backward"], """
        def relu_backward(dout, cache):
            return dout * ~cache
    """, "mask_inverted", "the mask is inverted"),
    ("the sigmoid's derivative", lesson07.check_relu_backward, ["relu_forward", "relu_backward"], _KEEP_X + """
        def relu_backward(dout, cache):
            return dout * torch.sigmoid(cache) * (1 - torch.sigmoid(cache))
    """, "other_activation", "the sigmoid's derivative"),
    ("half of dout at exactly 0", lesson07.check_relu_backward, ["relu_forward", "relu_backward"], _KEEP_X + """
        def relu_backward(dout, cache):
            return dout * ((cache > 0).to(dout.dtype) + 0.5 * (cache == 0))
    """, "mask_at_zero", ["wrong only where x is exactly 0 (in all 6 cases that fail)", "at x = 0 too"]),
    # log_softmax_backward
    ("log-probabilities for probabilities", lesson07.check_log_softmax_backward, ["log_softmax_backward"], """
        def log_softmax_backward(dlogp, logp):
            return dlogp - logp * dlogp.sum(dim=1, keepdim=True)
    """, "wrong_factor", "by logp itself, where the probabilities p = exp(logp) belong"),
    ("the softmax's backward", lesson07.check_log_softmax_backward, ["log_softmax_backward"], """
        def log_softmax_backward(dlogp, logp):
            p = logp.exp()
            return p * (dlogp - (p * dlogp).sum(dim=1, keepdim=True))
    """, "other_activation", "it is the softmax's backward"),
    ("p added as it is", lesson07.check_log_softmax_backward, ["log_softmax_backward"], """
        def log_softmax_backward(dlogp, logp):
            return dlogp + logp.exp()
    """, "no_upstream", "it adds p = exp(logp) to dlogp as it is"),
    ("the row's dot product with logp", lesson07.check_log_softmax_backward, ["log_softmax_backward"], """
        def log_softmax_backward(dlogp, logp):
            return dlogp - (dlogp * logp).sum(dim=1, keepdim=True)
    """, "wrong_factor", "it subtracts the row sum of dlogp·logp"),
    # softmax_cross_entropy
    ("the softmax down the batch", lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            B, C = logits.shape
            p = torch.softmax(logits, dim=0)
            return _solution(logits, labels)[0], (p - F.one_hot(labels, C).to(logits.dtype)) / B
    """, "softmax_axis", "the wrong axis (down the batch, dim=0)"),
    ("the Jacobian's diagonal only", lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            B, C = logits.shape
            p, y = torch.softmax(logits, dim=1), F.one_hot(labels, C).to(logits.dtype)
            return _solution(logits, labels)[0], p * (1 - p) * (-y / p) / B
    """, "softmax_diag", "only the diagonal"),
    ("the one-hot added", lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            B, C = logits.shape
            p, y = torch.softmax(logits, dim=1), F.one_hot(labels, C).to(logits.dtype)
            return _solution(logits, labels)[0], (p + y) / B
    """, "onehot_added", "adds the one-hot labels"),
    ("the one-hot left out", lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            return _solution(logits, labels)[0], torch.softmax(logits, dim=1) / len(logits)
    """, "onehot_missing", "the one-hot term is missing"),
    ("-1 assigned at the label", lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            d = torch.softmax(logits, dim=1)
            d[torch.arange(len(logits)), labels] = -1.0
            return _solution(logits, labels)[0], d / len(logits)
    """, "last_term", "assigns −1 instead of subtracting 1"),
    # the whole backward pass, written out by hand
    ("no mask anywhere", lesson07.check_backward, ["forward", "backward"], by_hand(dz2="da2", dz1="da1"),
     "mask_missing", ["the ReLU mask is missing: dz2 should be 0", "The same slip is at dz1: fix it there too",
                      "The first wrong gradient is dz2 (a step inside your function); da1, dW2, db2, dW1, db1 are wrong "
                      "only because of it; dz1 has the same slip."]),
    ("the sigmoid's derivative in both layers", lesson07.check_backward, ["forward", "backward"],
     by_hand(dz2="da2 * torch.sigmoid(r2) * (1 - torch.sigmoid(r2))",
             dz1="da1 * torch.sigmoid(r1) * (1 - torch.sigmoid(r1))"),
     "other_activation", ["the sigmoid's derivative σ'(z2)", "The same slip is at dz1"]),
    ("the mask from the upstream gradient in layer 1", lesson07.check_backward, ["forward", "backward"],
     by_hand(dz1="da1 * (da1 > 0)"), "mask_upstream",
     ["dW1 is wrong", "the sign of the upstream gradient da1", "The first wrong gradient is dz1"]),
    ("dW for W in both layers", lesson07.check_backward, ["forward", "backward"],
     by_hand(da2='dlogits @ grads["W3"].T', da1='dz2 @ grads["W2"].T'), "wrong_factor",
     ["it uses the gradient dW3 where the weight W3 belongs", "The same slip is at da1",
      "The first wrong gradient is da2 (a step inside your function)"]),
    # backward_and_step
    ("no mask at z2 in the step", lesson07.check_backward_and_step, ["backward_and_step"], """
        _solution = backward_and_step

        def backward_and_step(params, X, y, lr):
            g = _solution(params, X, y, lr)
            g["z2"] = g["a2"].clone()
            return g
    """, "mask_missing", ["dL/dz2 is wrong (n=64", "the ReLU mask is missing: dL/dz2 should be 0 wherever z2 ≤ 0"]),
    ("the mask z1 >= 0 in the step", lesson07.check_backward_and_step, ["backward_and_step"],
     _STEP_BY_HAND.replace("MASK1", "z1 >= 0"), "mask_at_zero",
     ["dL/dz1 is wrong (n=64", "where z1 is exactly 0 it passes dL/da1 through", "use z1 > 0, not z1 >= 0"]),
]


@pytest.mark.parametrize("what, check, names, source, kind, match", NAMED, ids=[w[0] for w in NAMED])
def test_a_formula_mistake_is_named_with_its_fix(what, check, names, source, kind, match):
    ns = notebook(source)
    message = fails(check, *(ns[n] for n in names), kind=kind, match=match)
    assert "Fix" in message.splitlines()[0] and "(n=1," not in message.splitlines()[0], message


NOT_NAMED = [
    ("an offset in dx", lesson07.check_linear_backward, ["linear_forward", "linear_backward"], """
        def linear_backward(dout, cache):
            x, W = cache
            return dout @ W.T + 0.1 * dout.sum(dim=1, keepdim=True), x.T @ dout, dout.sum(dim=0)
    """),
    ("a threshold of 0.5", lesson07.check_relu_backward, ["relu_forward", "relu_backward"], _KEEP_X + """
        def relu_backward(dout, cache):
            return dout * (cache > 0.5)
    """),
    ("a leaky slope", lesson07.check_relu_backward, ["relu_forward", "relu_backward"], _KEEP_X + """
        def relu_backward(dout, cache):
            return dout * torch.where(cache > 0, 1.0, 0.01).to(dout.dtype)
    """),
    ("the row term a little too large", lesson07.check_log_softmax_backward, ["log_softmax_backward"], """
        def log_softmax_backward(dlogp, logp):
            return dlogp - 1.1 * logp.exp() * dlogp.sum(dim=1, keepdim=True)
    """),
    ("the row term added", lesson07.check_log_softmax_backward, ["log_softmax_backward"], """
        def log_softmax_backward(dlogp, logp):
            return dlogp + logp.exp() * dlogp.sum(dim=1, keepdim=True)
    """),
    ("label smoothing", lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            B, C = logits.shape
            p, y = torch.softmax(logits, dim=1), F.one_hot(labels, C).to(logits.dtype)
            return _solution(logits, labels)[0], (p - (0.9 * y + 0.1 / C)) / B
    """),
    ("two slips: the one-hot added and no 1/B", lesson07.check_softmax_cross_entropy, ["softmax_cross_entropy"], """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            B, C = logits.shape
            p, y = torch.softmax(logits, dim=1), F.one_hot(labels, C).to(logits.dtype)
            return _solution(logits, labels)[0], p + y
    """),
    ("tanh's derivative in both layers", lesson07.check_backward, ["forward", "backward"],
     by_hand(dz2="da2 * (1 - torch.tanh(r2) ** 2)", dz1="da1 * (1 - torch.tanh(r1) ** 2)")),
    ("two different slips", lesson07.check_backward, ["forward", "backward"],
     by_hand(dz2="da2", da1='dz2 @ grads["W2"].T')),
    ("dL/da2 a little off", lesson07.check_backward_and_step, ["backward_and_step"], """
        _solution = backward_and_step

        def backward_and_step(params, X, y, lr):
            g = _solution(params, X, y, lr)
            g["a2"] = 1.01 * g["a2"]
            return g
    """),
]


@pytest.mark.parametrize("what, check, names, source", NOT_NAMED, ids=[w[0] for w in NOT_NAMED])
def test_a_mistake_no_usual_slip_fits_is_not_given_one(what, check, names, source):
    from gradlab.variants import KINDS

    ns = notebook(source)
    err, verdict = both(check, *(ns[n] for n in names))
    assert err is not None and err.kind not in KINDS and "Fix:" not in str(err), str(err)


@pytest.mark.parametrize("check, source", [
    (lesson07.check_softmax_cross_entropy, """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            B, C = logits.shape
            p = torch.softmax(logits, dim=1)
            return _solution(logits, labels)[0], torch.where(F.one_hot(labels, C) > 0, 0.0, p) / B
    """),
    (lesson07.check_log_softmax_backward, """
        def log_softmax_backward(dlogp, logp):
            return torch.where(dlogp > 0, dlogp - logp.exp() * dlogp.sum(dim=1, keepdim=True), 0.0)
    """),
])
def test_a_softmax_gradient_gets_no_relu_mask_hint(check, source):
    ns = notebook(source)
    err, _ = both(check, ns[check.check_name.split(".")[1].removeprefix("check_")])
    assert err is not None and "mask" not in str(err), str(err)


@pytest.mark.parametrize("what, check, names, source, first", [
    ("no mask in layer 2", lesson07.check_backward, ["forward", "backward"], by_hand(dz2="da2"), "z2"),
    ("no mask anywhere", lesson07.check_backward, ["forward", "backward"], by_hand(dz2="da2", dz1="da1"), "z2"),
    ("dW for W in dx", lesson07.check_linear_backward, ["linear_forward", "linear_backward"], NAMED[0][3], "x"),
    ("the row sum forgotten", lesson07.check_log_softmax_backward, ["log_softmax_backward"], """
        def log_softmax_backward(dlogp, logp):
            return dlogp.clone()
    """, "z"),
])
def test_the_failure_carries_the_backward_pass_with_the_first_wrong_gradient_marked(what, check, names, source, first):
    ns = notebook(source)
    err, verdict = both(check, *(ns[n] for n in names))
    assert err is not None and verdict.figure and verdict.figure.startswith("<?xml"), str(err)
    assert "first wrong" in verdict.figure and f'id="grad-{first}"' in verdict.figure


def test_the_planted_bug_is_placed_in_the_backward_pass_and_drawn():
    fn = _colleague()["colleague_backward_and_step"]
    err, verdict = both(lesson07.check_backward_and_step, fn)
    message = str(err)
    assert err.kind == "stale weights" and "(n=64" in message.splitlines()[0]
    assert "Fix: compute dL/da2 before updating layer 3." in message
    assert ("The first wrong gradient is dL/da2; dL/dz2, dL/dW2, dL/db2, dL/dz1, dL/dW1, dL/db1 are wrong only because "
            "of it; dL/da1 is wrong for another reason as well.") in message
    assert 'id="grad-a2"' in verdict.figure and "first wrong" in verdict.figure and "also wrong" in verdict.figure


def test_the_note_after_backward_passed_with_the_graders_layers_names_the_helpers_slip():
    ns = notebook("""
        def relu_backward(dout, cache):
            return dout * (dout > 0)
    """)
    notes = passes(lesson07.check_backward, ns["forward"], ns["backward"])
    assert len(notes) == 1 and "Fix `relu_backward`" in notes[0], notes
    assert ("The first wrong gradient is dz2 (from your relu_backward): the mask comes from the sign of the upstream "
            "gradient da2") in notes[0], notes[0]
    assert "dz1 is wrong for a reason of its own as well" in notes[0]


def test_the_lessons_drawing_marks_the_first_wrong_gradient():
    """lesson07.trace: what the lesson's comparison cell shows, from the gradients in its table."""
    gen = torch.Generator().manual_seed(3)
    params = lesson07._random_params(gen, (7, 9, 9, 7), torch.float64, "cpu")
    x = torch.randn(64, 7, generator=gen, dtype=torch.float64)
    y = torch.randint(7, (64,), generator=gen)
    before = {k: p.clone() for k, p in params.items()}
    right = lesson07.trace(x, y, before, solution("backward_and_step")({k: p.clone() for k, p in params.items()}, x, y, 0.1))
    assert right.ok and "<svg" in right._repr_svg_()
    wrong = lesson07.trace(x, y, before, {"loss": 0.0, **_colleague()["colleague_backward_and_step"](params, x, y, 0.1)})
    marks = {n.name: n.status for n in wrong.nodes}
    assert wrong.first == "a2" and marks["a1"] == "also wrong" and marks["W3"] == "right" and marks["z1"] == "consequence"
    assert [n.name for n in wrong.nodes][1:] == list(lesson07.STEP_ORDER)


def test_a_blank_exercise_says_so():
    ns = notebook("""
        def backward(dlogits, caches):
            raise NotImplementedError("Replace this line with your solution, then run the check below.")
    """)
    message = fails(lesson07.check_backward, ns["forward"], ns["backward"], kind="not written")
    assert "again with its own" not in message


# --------------------------------------------------------------------------- one slip costs one cell
def test_a_wrong_layer_helper_costs_only_its_own_cell():
    ns = notebook("""
        def relu_backward(dout, cache):
            return dout.clone()  # the mask is missing
    """)
    fails(lesson07.check_relu_backward, ns["relu_forward"], ns["relu_backward"])
    for check, names in [(lesson07.check_backward, ["forward", "backward"]), (lesson07.check_train_epoch, ["train_epoch"])]:
        notes = passes(check, *(ns[n] for n in names))
        assert len(notes) == 1, notes
        assert "passed only with the grader's" in notes[0] and "Fix `relu_backward`" in notes[0], notes[0]
    assert passes(lesson07.check_forward, ns["forward"]) == []  # forward does not use relu_backward


def test_a_wrong_forward_helper_is_named():
    ns = notebook("""
        def linear_forward(x, W, b):
            return x @ W, (x, W)  # no bias
    """)
    notes = passes(lesson07.check_forward, ns["forward"])
    assert len(notes) == 1 and "Fix `linear_forward`" in notes[0] and "forward output is wrong" in notes[0], notes
    notes = passes(lesson07.check_backward, ns["forward"], ns["backward"])
    assert len(notes) == 1 and "Fix `linear_forward`" in notes[0], notes
    assert passes(lesson07.check_linear_backward, ns["linear_forward"], ns["linear_backward"]) == []


def test_a_wrong_linear_backward_costs_the_layer_not_the_network():
    ns = notebook("""
        def linear_backward(dout, cache):
            x, W = cache
            return dout @ W.T, x.T @ dout, dout.mean(dim=0)  # mean instead of sum
    """)
    fails(lesson07.check_linear_backward, ns["linear_forward"], ns["linear_backward"], kind="factor")
    notes = passes(lesson07.check_backward, ns["forward"], ns["backward"])
    assert len(notes) == 1 and "Fix `linear_backward`" in notes[0]


def test_the_grader_keeps_the_students_own_cache_format():
    """A backward that reads the first layer's cache itself (the lesson's shortcut) works with the grader's layers."""
    ns = notebook("""
        def linear_forward(x, W, b):
            return x @ W, (x, W, b)  # a wrong output, but a cache of its own format

        def linear_backward(dout, cache):
            x, W, b = cache
            return dout @ W.T, x.T @ dout, dout.sum(dim=0)

        def backward(dlogits, caches):
            c1, r1, c2, r2, c3 = caches
            grads = {}
            da2, grads["W3"], grads["b3"] = linear_backward(dlogits, c3)
            da1, grads["W2"], grads["b2"] = linear_backward(relu_backward(da2, r2), c2)
            dz1 = relu_backward(da1, r1)
            x, W, b = c1
            grads["W1"], grads["b1"] = x.T @ dz1, dz1.sum(dim=0)
            return grads
    """)
    notes = passes(lesson07.check_backward, ns["forward"], ns["backward"])
    assert len(notes) == 1 and "Fix `linear_forward`" in notes[0]


def test_a_wrong_log_softmax_backward_costs_only_its_cell():
    ns = notebook("""
        def log_softmax_backward(dlogp, logp):
            return dlogp - logp.exp() * dlogp.sum(dim=0, keepdim=True)

        def softmax_cross_entropy(logits, labels):
            B, C = logits.shape
            logp = torch.log_softmax(logits, dim=1)
            one_hot = F.one_hot(labels, C).to(logits.dtype)
            return -(one_hot * logp).sum() / B, log_softmax_backward(-one_hot / B, logp)
    """)
    fails(lesson07.check_log_softmax_backward, ns["log_softmax_backward"])
    notes = passes(lesson07.check_softmax_cross_entropy, ns["softmax_cross_entropy"])
    assert len(notes) == 1 and "Fix `log_softmax_backward`" in notes[0]


@pytest.mark.parametrize("helper, source", [
    ("sgd_step", """
        def sgd_step(params, grads, velocity, lr, momentum):
            for k, p in params.items():
                velocity[k].mul_(momentum).add_(grads[k])
                p.add_(lr * velocity[k])  # sign
    """),
    ("softmax_cross_entropy", """
        _solution = softmax_cross_entropy

        def softmax_cross_entropy(logits, labels):
            loss, dlogits = _solution(logits, labels)
            return loss, dlogits * len(logits)
    """),
    ("backward", """
        _solution = backward

        def backward(dlogits, caches):
            grads = _solution(dlogits, caches)
            grads["W1"] = -grads["W1"]
            return grads
    """),
])
def test_a_wrong_helper_of_the_epoch_is_named(helper, source):
    notes = passes(lesson07.check_train_epoch, notebook(source)["train_epoch"])
    assert len(notes) == 1 and f"Fix `{helper}`:" in notes[0], notes


def test_helpers_that_pass_alone_but_not_together_are_described():
    """A linear pair that passes its cache through a global: right for one layer, wrong for a network of three."""
    ns = notebook("""
        _last = {}

        def linear_forward(x, W, b):
            _last["x"], _last["W"] = x, W
            return x @ W + b, (x, W)

        def linear_backward(dout, cache):
            x, W = _last["x"], _last["W"]
            return dout @ W.T, x.T @ dout, dout.sum(dim=0)
    """)
    assert passes(lesson07.check_linear_backward, ns["linear_forward"], ns["linear_backward"]) == []
    notes = passes(lesson07.check_backward, ns["forward"], ns["backward"])
    assert len(notes) == 1 and "Each of them passes its own test" in notes[0], notes


# --------------------------------------------------------------------------- the planted bug
def _colleague():
    """The lesson's planted bug: the function definition from the notebook's bug-hunt cell, and nothing else."""
    nb = nbformat.read(NOTEBOOKS / NOTEBOOK, as_version=4)
    source = next(c.source for c in nb.cells if "def colleague_backward_and_step" in c.source)
    tree = ast.parse(source)
    definition = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
    ns = notebook()
    exec(compile(ast.Module(body=[definition], type_ignores=[]), "<colleague>", "exec"), ns)
    return ns


def test_the_planted_bug_fails_naming_the_first_wrong_gradient():
    fn = _colleague()["colleague_backward_and_step"]
    message = fails(lesson07.check_backward_and_step, fn, match=["dL/da2 is wrong", "W3 and b3 after their update"])
    assert "dL/dz3" not in message.splitlines()[0] and "dL/dW3" not in message


def test_half_the_fix_fails_at_the_next_layer():
    ns = _colleague()
    fixed_once = """
        def half_fixed(params, X, y, lr):
            W1, b1, W2, b2, W3, b3 = (params[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
            B = X.shape[0]
            z1 = X @ W1 + b1
            a1 = z1.clamp(min=0)
            z2 = a1 @ W2 + b2
            a2 = z2.clamp(min=0)
            z3 = a2 @ W3 + b3
            g = {}
            g["z3"] = (torch.softmax(z3, dim=1) - F.one_hot(y, z3.shape[1]).to(z3.dtype)) / B
            g["W3"], g["b3"] = a2.T @ g["z3"], g["z3"].sum(dim=0)
            g["a2"] = g["z3"] @ W3.T
            W3.add_(g["W3"], alpha=-lr)
            b3.add_(g["b3"], alpha=-lr)
            g["z2"] = g["a2"] * (z2 > 0)
            g["W2"], g["b2"] = a1.T @ g["z2"], g["z2"].sum(dim=0)
            W2.add_(g["W2"], alpha=-lr)
            b2.add_(g["b2"], alpha=-lr)
            g["a1"] = g["z2"] @ W2.T
            g["z1"] = g["a1"] * (z1 > 0)
            g["W1"], g["b1"] = X.T @ g["z1"], g["z1"].sum(dim=0)
            W1.add_(g["W1"], alpha=-lr)
            b1.add_(g["b1"], alpha=-lr)
            return g
    """
    exec(textwrap.dedent(fixed_once), ns)
    fails(lesson07.check_backward_and_step, ns["half_fixed"], match=["dL/da1 is wrong", "W2 and b2 after their update"])


def test_backward_and_step_must_update_in_place():
    ns = notebook("""
        _solution = backward_and_step

        def backward_and_step(params, X, y, lr):
            copies = {k: p.clone() for k, p in params.items()}
            grads = _solution(copies, X, y, lr)
            params.update(copies)
            return grads
    """)
    fails(lesson07.check_backward_and_step, ns["backward_and_step"], kind="not in place", match="in place")


# --------------------------------------------------------------------------- no answer in the check module
def test_the_check_module_holds_no_hand_formula():
    """Students can read gradlab/grading/lesson07.py: no exercise's formula may be written out in it."""
    import inspect
    import re

    source = inspect.getsource(lesson07)
    for pattern in [r"\.T\s*@", r"@\s*[\w\[\]\"']+\.T\b", r"momentum\s*\*", r"\*\s*momentum", r"lr\s*\*\s*\w",
                    r"\.exp\(\)", r"one_hot", r"[<>]=?\s*0\)", r"\*\*\s*torch\.arange", r"sum\(dim=1, keepdim=True\)"]:
        assert not re.search(pattern, source), f"lesson07.py contains {pattern!r}"


# --------------------------------------------------------------------------- the MNIST run
@pytest.mark.slow
def test_mnist_training_reaches_the_threshold_with_the_reference_epoch():
    assert passes(lesson07.check_mnist_training, solution("train_epoch")) == []


@pytest.mark.slow
def test_mnist_training_with_a_wrong_helper_passes_with_a_note():
    ns = notebook("""
        def relu_backward(dout, cache):
            return dout.clone()
    """)
    err, verdict = both(lesson07.check_mnist_training, ns["train_epoch"])
    assert err is None and len(verdict.notes) == 1
    assert verdict.notes[0].startswith("The training run reached the accuracy, but only") and "Fix `relu_backward`" in verdict.notes[0]


@pytest.mark.slow
def test_mnist_training_fails_when_nothing_is_learnt():
    fails(lesson07.check_mnist_training, notebook("def train_epoch(*args):\n    return 0.0\n")["train_epoch"], kind="accuracy",
          match="held-out test images")


def test_hand_parameters_are_pytorchs_initialisation_transposed():
    net = mnist_run.torch_network(torch.device("cpu"))
    params = mnist_run.hand_parameters(torch.device("cpu"))
    assert torch.equal(params["W1"], net[0].weight.detach().T) and torch.equal(params["b3"], net[4].bias.detach())
    assert params["W2"].shape == (128, 64) and params["W3"].shape == (64, 10)


def test_the_lesson_calls_a_batch_B_throughout():
    """Issue 19: the batch size was B in one cell and N in another; the lesson now says B everywhere."""
    import re

    nb = nbformat.read(NOTEBOOKS / NOTEBOOK, as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    assert not re.search(r"\bN\b", text), re.search(r".{0,40}\bN\b.{0,40}", text).group(0)
    assert "(B, C)" in text and "/B" in text
