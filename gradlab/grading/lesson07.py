"""Hidden checks of lesson 7 (capstone: the MNIST network trained with the student's own backprop).

Parameters are a dict {"W1", "b1", "W2", "b2", "W3", "b3"} with W of shape (D_in, D_out), as in lesson 5.

How these checks keep a point meaning "derived by hand, and right":
- every call of student code goes through ``common.call_student``, which fails any use of autograd and any
  change of an input in place;
- every expected value comes from torch (autograd, F.cross_entropy, torch.optim.SGD) on the check's own
  inputs, computed before the student's function sees them;
- a composite exercise (forward, backward, softmax_cross_entropy, train_epoch, the MNIST run) is graded with
  the student's own helpers first; if that fails, it is graded again with the grader's helpers in their place
  (``_GraderHelpers``). A pass that way passes the cell, and a note names the helper to fix, so one slip costs
  the helper's cell only. The grader's layer helpers keep the student's own cache objects (the backward finds
  its inputs by the identity of the cache it is given), so a backward that reads a cache itself still works.
"""
import contextlib
import functools

import torch
import torch.nn.functional as F

from gradlab.check import autograd_grads
from gradlab.grading import common, trial
from gradlab.training import minibatches

from . import mnist_run

NAMES = ("W1", "b1", "W2", "b2", "W3", "b3")
BACKPROP_ORDER = ("W3", "b3", "W2", "b2", "W1", "b1")
INTERMEDIATES = ("z3", "W3", "b3", "a2", "z2", "W2", "b2", "a1", "z1", "W1", "b1")  # backward_and_step's keys
LAYER_HELPERS = ("linear_forward", "relu_forward", "linear_backward", "relu_backward")
NETWORK_HELPERS = ("forward", "backward", "softmax_cross_entropy", "sgd_step")
ALL_HELPERS = NETWORK_HELPERS + LAYER_HELPERS + ("log_softmax_backward",)
_NETWORK_SHOWN = "`forward`, `backward`, `softmax_cross_entropy` and `sgd_step` (and layer functions)"


# --------------------------------------------------------------------------- the grader's own network
def _network(params, x):
    """The reference forward pass (linear → ReLU → linear → ReLU → linear) with torch's own functions."""
    h = F.relu(F.linear(x, params["W1"].T, params["b1"]))
    h = F.relu(F.linear(h, params["W2"].T, params["b2"]))
    return F.linear(h, params["W3"].T, params["b3"])


def _random_params(gen, sizes, dtype, device):
    params = {}
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        params[f"W{i}"] = common.randn(gen, d_in, d_out, dtype=dtype, device=device, scale=d_in**-0.5)
        params[f"b{i}"] = common.randn(gen, d_out, dtype=dtype, device=device, scale=0.1)
    return params


def _sizes(n):
    """Layer widths that change with the case, so nothing tied to 784-128-64-10 passes by accident."""
    return (6 + n % 9, 9 + n % 4, 5 + n % 6, 3 + n % 5)


def _labels(gen, n, classes, device):
    return torch.randint(classes, (n,), generator=gen).to(device)


def _clones(tensors):
    return {k: v.detach().clone() for k, v in tensors.items()}


def _network_grads(params, x, dlogits):
    """d(sum(logits · dlogits))/d(parameter) for every parameter: the backward pass for upstream ``dlogits``."""
    grads = autograd_grads(lambda *ps: (_network(dict(zip(NAMES, ps)), x) * dlogits).sum(), *(params[k] for k in NAMES))
    return dict(zip(NAMES, grads))


def _torch_sgd(params, grads, velocity, lr, momentum):
    """(new params, new velocity) after one step of torch.optim.SGD with momentum, on copies.

    torch keeps no velocity when momentum is 0; the velocity the exercise defines is then the gradient, which
    torch's momentum buffer also gives for momentum 1 from a zero velocity.
    """
    new_p, new_v = {}, {}
    for k in params:
        p = params[k].detach().clone()
        opt = torch.optim.SGD([p], lr=lr, momentum=momentum)
        p.grad = grads[k].detach().clone()
        if momentum:
            opt.state[p]["momentum_buffer"] = velocity[k].detach().clone()
        opt.step()
        if momentum:
            v = opt.state[p]["momentum_buffer"]
        else:
            v = torch.zeros_like(p)
            only_v = torch.optim.SGD([v], lr=0.0, momentum=1.0)
            v.grad = grads[k].detach().clone()
            only_v.state[v]["momentum_buffer"] = torch.zeros_like(v)
            only_v.step()
            v = only_v.state[v]["momentum_buffer"]
        p.grad = None
        new_p[k], new_v[k] = p, v.detach().clone()
    return new_p, new_v


# --------------------------------------------------------------------------- small helpers for messages
def _pair(result, name, what, case):
    if not isinstance(result, tuple) or len(result) != 2:
        common.fail(f"`{name}` should return a pair ({what}), but returned {type(result).__name__} ({case}).",
                    kind="not a pair")
    return result


def _grads_dict(grads, name, keys, case):
    if not isinstance(grads, dict):
        common.fail(f"`{name}` should return a dict with the keys {', '.join(keys)}, but returned "
                    f"{type(grads).__name__} ({case}).", kind="type")
    missing = [k for k in keys if k not in grads]
    if missing:
        common.fail(f"`{name}` should return a dict with the keys {', '.join(keys)}; missing: {', '.join(missing)} "
                    f"({case}).", kind="missing key", gradient=missing[0])
    return grads


def _with_hint(run, hint):
    """Run ``run()``; if it fails, fail again with ``hint()`` (a sentence or None) added to the message."""
    try:
        return run()
    except common.CheckFailure as err:
        extra = hint()
        if not extra:
            raise
        common.fail(f"{err}\n  {extra}", kind=getattr(err, "kind", None), gradient=getattr(err, "gradient", None))


def _same_values(got, other):
    """Whether a returned tensor holds ``other``'s values (to recognise a known mistake); False if not comparable."""
    if not isinstance(got, torch.Tensor) or got.shape != other.shape:
        return False
    g, o = got.detach().to("cpu", torch.float64), other.detach().to("cpu", torch.float64)
    scale = float(o.abs().max()) if o.numel() else 1.0
    return bool(torch.allclose(g, o, rtol=1e-4, atol=1e-6 * max(scale, 1e-12)))


# --------------------------------------------------------------------------- the grader's helpers
def _leaves(value, depth=0):
    """ids of the tensors in a cache (through tuples, lists, dicts)."""
    if isinstance(value, torch.Tensor):
        return {id(value)}
    out = set()
    if depth < 4 and isinstance(value, (tuple, list)):
        for v in value:
            out |= _leaves(v, depth + 1)
    elif depth < 4 and isinstance(value, dict):
        for v in value.values():
            out |= _leaves(v, depth + 1)
    return out


def _own_object(cache):
    """Whether a cache is an object of its own that identity can find again (not None, a number, an empty tuple)."""
    return isinstance(cache, torch.Tensor) or isinstance(cache, (tuple, list, dict)) and len(cache) > 0


@contextlib.contextmanager
def _reference_mode():
    """Autograd on, whatever the student's code around the call switched off."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


class _GraderHelpers:
    """The grader's versions of the lesson's helpers, for one run of a composite exercise.

    A forward helper remembers the inputs it was called with (copies), under the cache object it returns; the
    matching backward helper finds them again by that object's identity (or, if the student's code rebuilt the
    cache, by the identity of the tensors in it) and asks autograd. A layer forward returns the student's own
    cache object when the student's forward helper makes one, so a composite that reads a cache itself (the
    first layer's shortcut in backward) keeps working.
    """

    KEEP = 64

    def __init__(self, student):
        self.student = student  # the student's own helpers, by name (none in replay)
        self.entries = []  # (kind, cache object, leaf ids, inputs)

    # ---- memory of forward calls
    def _remember(self, kind, cache, inputs):
        self.entries.append((kind, cache, _leaves(cache), inputs))
        del self.entries[:-self.KEEP]

    def _recall(self, kind, cache, helper):
        for k, c, _, inputs in reversed(self.entries):
            if k == kind and c is cache:
                return inputs
        leaves = _leaves(cache)
        for k, _, known, inputs in reversed(self.entries):
            if k == kind and leaves and leaves <= known:
                return inputs
        raise LookupError(f"the grader's {helper} was given a cache that no call of its forward returned: pass "
                          "each layer's cache from the forward pass to its backward unchanged")

    def _student_cache(self, name, args, fallback):
        fn = self.student.get(name)
        if callable(fn):
            try:
                result = fn(*(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args))
            except Exception:  # the student's helper is broken: its own cell says so; use the grader's cache
                result = None
            if isinstance(result, tuple) and len(result) == 2 and _own_object(result[1]):
                return result[1]
        return fallback

    # ---- layers
    def linear_forward(self, x, W, b):
        out = F.linear(x.detach(), W.detach().T, b.detach())
        cache = self._student_cache("linear_forward", (x, W, b), (x, W))
        self._remember("linear", cache, (x.detach().clone(), W.detach().clone(), b.detach().clone()))
        return out, cache

    def linear_backward(self, dout, cache):
        x, W, b = self._recall("linear", cache, "linear_backward")
        with _reference_mode():
            dout = dout.detach().clone()
            return autograd_grads(lambda x_, W_, b_: (F.linear(x_, W_.T, b_) * dout).sum(), x, W, b)

    def relu_forward(self, x):
        out = F.relu(x.detach())
        cache = self._student_cache("relu_forward", (x,), x)
        self._remember("relu", cache, x.detach().clone())
        return out, cache

    def relu_backward(self, dout, cache):
        x = self._recall("relu", cache, "relu_backward")
        with _reference_mode():
            dout = dout.detach().clone()
            return autograd_grads(lambda x_: (F.relu(x_) * dout).sum(), x)[0]

    # ---- loss
    def log_softmax_backward(self, dlogp, logp):
        with _reference_mode():
            dlogp = dlogp.detach().clone()
            return autograd_grads(lambda z: (F.log_softmax(z, dim=1) * dlogp).sum(), logp)[0]

    def softmax_cross_entropy(self, logits, labels):
        with _reference_mode():
            labels = labels.clone()
            (dlogits,) = autograd_grads(lambda z: F.cross_entropy(z, labels), logits)
        return F.cross_entropy(logits.detach(), labels), dlogits

    # ---- network
    def forward(self, params, X):
        frozen = (_clones({k: params[k] for k in NAMES}), X.detach().clone())
        caches = ["the grader's caches"]  # a fresh object: backward finds the inputs by its identity
        self._remember("network", caches, frozen)
        return _network({k: params[k].detach() for k in NAMES}, X.detach()), caches

    def backward(self, dlogits, caches):
        params, X = self._recall("network", caches, "backward")
        with _reference_mode():
            return _network_grads(params, X, dlogits.detach().clone())

    def sgd_step(self, params, grads, velocity, lr, momentum):
        for k in params:
            new_p, new_v = _torch_sgd({k: params[k]}, {k: grads[k]}, {k: velocity[k]}, lr, momentum)
            with torch.no_grad():
                params[k].copy_(new_p[k])
                velocity[k].copy_(new_v[k])


@contextlib.contextmanager
def _grader_helpers(composites, names):
    """Put the grader's helpers ``names`` in place of the student's, in the namespace of every composite."""
    student = {}
    for fn in composites:
        namespace = getattr(fn, "__globals__", None)
        if isinstance(namespace, dict):
            for name in names:
                if name in namespace and name not in student:
                    student[name] = namespace[name]
    helpers = _GraderHelpers(student)
    chosen = {name: getattr(helpers, name) for name in names}
    with contextlib.ExitStack() as stack:
        seen = set()
        for fn in composites:
            key = id(getattr(fn, "__globals__", None))
            if key not in seen:
                seen.add(key)
                stack.enter_context(common.reference_helpers(fn, chosen))
        yield helpers


# --------------------------------------------------------------------------- grading a composite
def _outcomes():
    t = trial.current()
    return t.outcomes if t is not None else []


def _listing(names):
    names = [f"`{n}`" for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _composite(name, composites, helpers, attempt, culprits, quiet, shown=None, passed=None):
    """Grade ``attempt()`` (one full try of the composite ``name``) with the student's helpers, then, if that
    fails, with the grader's ``helpers`` in their place. A pass the second way passes, with a note naming the
    helpers to fix (``culprits()``: the names of the helpers whose own checks fail). ``shown``: how the messages
    name the replaced helpers; ``passed``: how the note starts."""
    shown = shown or _listing(helpers)
    passed = passed or f"`{name}` is right, but it passed only"
    outcomes = _outcomes()
    mark = len(outcomes)
    try:
        attempt()
        return
    except AssertionError as err:
        own = err
    del outcomes[mark:]  # the class report keeps what the composite itself got right or wrong
    with _grader_helpers(composites, helpers):
        try:
            attempt()
        except AssertionError as err:
            kind = getattr(err, "kind", None)
            if kind in ("not written", "not a function"):
                raise
            common.fail(f"{err}\n  The grader ran `{name}` again with its own {shown} in place of yours, "
                        f"and it is still wrong: the mistake is in `{name}` itself.",
                        kind=kind, gradient=getattr(err, "gradient", None))
    if quiet:
        return
    mark = len(outcomes)
    wrong = culprits()
    del outcomes[mark:]
    first_line = str(own).splitlines()[0] if str(own) else type(own).__name__
    if wrong:
        advice = (f"Fix {_listing(wrong)}: {'its' if len(wrong) == 1 else 'their'} own test "
                  f"cell{'' if len(wrong) == 1 else 's'} say{'s' if len(wrong) == 1 else ''} what is wrong.")
    else:
        advice = ("Each of them passes its own test, so look at how they work together (for example a cache that "
                  "one of them changes in place and another reads later).")
    common.note(f"{passed} with the grader's {shown} in place of yours. "
                f"With your own: {first_line} {advice}")


def _student_fn(composites, name):
    for fn in composites:
        namespace = getattr(fn, "__globals__", None)
        if isinstance(namespace, dict):
            return namespace.get(name)
    return None


def _failing(composites, names):
    """The helpers among ``names`` that fail their own checks (quietly: no notes, as the cells grade them)."""
    verifiers = {
        "linear_forward": lambda f: _verify_linear_forward(f("linear_forward")),
        "linear_backward": lambda f: _verify_linear_backward(f("linear_forward"), f("linear_backward")),
        "relu_forward": lambda f: _verify_relu_forward(f("relu_forward")),
        "relu_backward": lambda f: _verify_relu_backward(f("relu_forward"), f("relu_backward")),
        "log_softmax_backward": lambda f: _verify_log_softmax_backward(f("log_softmax_backward")),
        "softmax_cross_entropy": lambda f: _verify_softmax_cross_entropy(f("softmax_cross_entropy"), quiet=True),
        "forward": lambda f: _verify_forward(f("forward"), quiet=True),
        "backward": lambda f: _verify_backward(f("forward"), f("backward"), quiet=True),
        "sgd_step": lambda f: _verify_sgd_step(f("sgd_step")),
    }
    wrong = []
    for name in names:
        try:
            verifiers[name](lambda n: _student_fn(composites, n))
        except AssertionError:
            wrong.append(name)
    return wrong


# notebook order, for the culprits named in a note
_ORDER = ("linear_forward", "linear_backward", "relu_forward", "relu_backward", "log_softmax_backward",
          "softmax_cross_entropy", "forward", "backward", "sgd_step")


def _culprits(composites, names):
    return lambda: _failing(composites, [n for n in _ORDER if n in names])


# --------------------------------------------------------------------------- layers
def _linear_inputs(gen, n, dtype, device):
    d_in, d_out = 3 + n % 5, 2 + n % 4
    x = common.randn(gen, n, d_in, dtype=dtype, device=device)
    W = common.randn(gen, d_in, d_out, dtype=dtype, device=device)
    b = common.randn(gen, d_out, dtype=dtype, device=device)
    return x, W, b, d_out


def _verify_linear_forward(linear_forward):
    for label, gen, n, dtype, device in common.cases(701):
        x, W, b, _ = _linear_inputs(gen, n, dtype, device)
        expected = F.linear(x, W.T, b)
        out, _ = _pair(common.call_student(linear_forward, "linear_forward", x, W, b, case=label),
                       "linear_forward", "out, cache", label)
        common.check_tensor("linear_forward output", out, expected, label)


@common.graded
def check_linear_forward(linear_forward):
    """out = x W + b, in the inputs' dtype and on their device."""
    _verify_linear_forward(linear_forward)


def _verify_linear_backward(linear_forward, linear_backward):
    for label, gen, n, dtype, device in common.cases(702):
        x, W, b, d_out = _linear_inputs(gen, n, dtype, device)
        dout = common.randn(gen, n, d_out, dtype=dtype, device=device)
        expected = autograd_grads(lambda x_, W_, b_: (F.linear(x_, W_.T, b_) * dout).sum(), x, W, b)
        # Only the cache matters here: a slip in linear_forward's output costs linear_forward's cell.
        _, cache = _pair(common.call_student(linear_forward, "linear_forward", x, W, b, case=label),
                         "linear_forward", "out, cache", label)
        got = common.call_student(linear_backward, "linear_backward", dout, cache, case=label)
        if not isinstance(got, tuple) or len(got) != 3:
            common.fail(f"`linear_backward` should return (dx, dW, db), but returned {type(got).__name__} ({label}).",
                        kind="not a triple")
        for name, g, e in zip(("dx", "dW", "db"), got, expected):
            common.check_tensor(name, g, e, label)


@common.graded
def check_linear_backward(linear_forward, linear_backward):
    """(dx, dW, db) for an arbitrary upstream gradient, from the cache of the student's own linear_forward."""
    _verify_linear_backward(linear_forward, linear_backward)


def _relu_input(gen, n, dtype, device):
    """Random values with exact zeros (and a negative zero) among them: ReLU's kink is part of the test."""
    x = common.randn(gen, n, 5, dtype=dtype, device=device)
    flat = x.view(-1)
    flat[::3] = 0.0
    flat[1::7] = -0.0
    return x


def _verify_relu_forward(relu_forward):
    for label, gen, n, dtype, device in common.cases(703):
        x = _relu_input(gen, n, dtype, device)
        expected = F.relu(x)
        out, _ = _pair(common.call_student(relu_forward, "relu_forward", x, case=label), "relu_forward",
                       "out, cache", label)
        common.check_tensor("relu_forward output", out, expected, label)


@common.graded
def check_relu_forward(relu_forward):
    """max(x, 0) elementwise, exact zeros in the input included."""
    _verify_relu_forward(relu_forward)


def _verify_relu_backward(relu_forward, relu_backward):
    for label, gen, n, dtype, device in common.cases(704):
        x = _relu_input(gen, n, dtype, device)
        dout = common.randn(gen, n, 5, dtype=dtype, device=device)
        (expected,) = autograd_grads(lambda x_: (F.relu(x_) * dout).sum(), x)
        at_zero = x == 0
        _, cache = _pair(common.call_student(relu_forward, "relu_forward", x, case=label), "relu_forward",
                         "out, cache", label)
        got = common.call_student(relu_backward, "relu_backward", dout, cache, case=label)

        def hint():
            if isinstance(got, torch.Tensor) and got.shape == expected.shape and at_zero.any():
                off = got.detach().to(expected.device, expected.dtype) != expected
                if off.any() and not (off & ~at_zero).any():
                    return ("It is wrong only where x is exactly 0. There ReLU's gradient is taken as 0 (as torch does, "
                            "and as the docstring says): let dout through where x > 0, not where x >= 0.")
            return None

        _with_hint(lambda: common.check_tensor("dx", got, expected, label), hint)


@common.graded
def check_relu_backward(relu_forward, relu_backward):
    """dout where the input was positive, 0 elsewhere (at exactly 0 too), from the student's own relu_forward cache."""
    _verify_relu_backward(relu_forward, relu_backward)


# --------------------------------------------------------------------------- the loss
def _logits(gen, n, c, dtype, device, spread):
    """Random logits; ``spread`` "rows far apart" adds ±400 to alternate rows, so that only a shift by each
    row's own maximum keeps every row finite; "large" adds 500 to all."""
    z = common.randn(gen, n, c, dtype=dtype, device=device, scale=3.0)
    if spread == "large":
        z = z + 500.0
    elif spread == "rows far apart":
        offsets = torch.where(torch.arange(n) % 2 == 0, 400.0, -400.0).to(dtype=dtype, device=device)
        z = z + offsets[:, None]
    return z


_SPREADS = (("", ""), ("large", ", every logit near +500"), ("rows far apart", ", rows near +400 and -400"))


def _verify_log_softmax_backward(log_softmax_backward):
    for label, gen, n, dtype, device in common.cases(710):
        for spread, what in _SPREADS:
            c = 3 + n % 8
            case = label + what
            logp = F.log_softmax(_logits(gen, n, c, dtype, device, spread), dim=1)
            dlogp = common.randn(gen, n, c, dtype=dtype, device=device)
            (expected,) = autograd_grads(lambda z: (F.log_softmax(z, dim=1) * dlogp).sum(), logp)
            upstream = dlogp.clone()
            got = common.call_student(log_softmax_backward, "log_softmax_backward", dlogp, logp, case=case)

            def hint():
                if _same_values(got, upstream):
                    return ("That is dlogp itself. Every log-probability of a row depends on every logit of the row "
                            "(through the sum in the softmax), so each dz collects a term from the whole row.")
                return None

            _with_hint(lambda: common.check_tensor("dz", got, expected, case), hint)


@common.graded
def check_log_softmax_backward(log_softmax_backward):
    """dL/dz from dL/dlogp and logp = log_softmax(z), for an arbitrary upstream gradient, against autograd."""
    _verify_log_softmax_backward(log_softmax_backward)


def _verify_softmax_cross_entropy(softmax_cross_entropy, quiet=False):
    def attempt():
        for label, gen, n, dtype, device in common.cases(705):
            for spread, what in _SPREADS:
                c = 3 + n % 8
                case = label + what
                logits = _logits(gen, n, c, dtype, device, spread)
                labels = _labels(gen, n, c, device)
                expected_loss = F.cross_entropy(logits, labels)
                (expected,) = autograd_grads(lambda z: F.cross_entropy(z, labels), logits)
                loss, dlogits = _pair(common.call_student(softmax_cross_entropy, "softmax_cross_entropy", logits,
                                                          labels, case=case),
                                      "softmax_cross_entropy", "loss, dlogits", case)

                def loss_hint():
                    if n > 1 and _same_values(loss, expected_loss * n):
                        return "That is the sum over the rows: the loss is the mean over the B rows."
                    return _overflow_hint(loss)

                _with_hint(lambda: common.check_tensor("loss", loss, expected_loss, case), loss_hint)
                _with_hint(lambda: common.check_tensor("dlogits", dlogits, expected, case),
                           lambda: _overflow_hint(dlogits))

    _composite("softmax_cross_entropy", [softmax_cross_entropy], ("log_softmax_backward",), attempt,
               _culprits([softmax_cross_entropy], ("log_softmax_backward",)), quiet)


def _overflow_hint(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
        return ("Subtract each row's own maximum (logits.max(dim=1, keepdim=True)) before exp: one maximum for the "
                "whole batch still overflows or underflows when rows are far apart.")
    return None


@common.graded
def check_softmax_cross_entropy(softmax_cross_entropy):
    """(loss, dlogits): the mean cross-entropy and its gradient, for logits near 0, near +500, and rows far apart."""
    _verify_softmax_cross_entropy(softmax_cross_entropy)


# --------------------------------------------------------------------------- the network
def _verify_forward(forward, quiet=False):
    def attempt():
        for label, gen, n, dtype, device in common.cases(706):
            sizes = _sizes(n)
            case = f"{label}, sizes {sizes}"
            params = _random_params(gen, sizes, dtype, device)
            x = common.randn(gen, n, sizes[0], dtype=dtype, device=device)
            expected = _network(params, x)
            logits, _ = _pair(common.call_student(forward, "forward", params, x, case=case), "forward",
                              "logits, caches", case)
            common.check_tensor("forward output", logits, expected, case)

    _composite("forward", [forward], ("linear_forward", "relu_forward"), attempt,
               _culprits([forward], ("linear_forward", "relu_forward")), quiet)


@common.graded
def check_forward(forward):
    """The logits of linear → ReLU → linear → ReLU → linear, for layer sizes that change with the case."""
    _verify_forward(forward)


def _verify_backward(forward, backward, quiet=False):
    def attempt():
        for label, gen, n, dtype, device in common.cases(707):
            sizes = _sizes(n)
            case = f"{label}, sizes {sizes}"
            params = _random_params(gen, sizes, dtype, device)
            x = common.randn(gen, n, sizes[0], dtype=dtype, device=device)
            dlogits = common.randn(gen, n, sizes[-1], dtype=dtype, device=device)
            expected_logits = _network(params, x)
            expected = _network_grads(params, x, dlogits)
            logits, caches = _pair(common.call_student(forward, "forward", params, x, case=case), "forward",
                                   "logits, caches", case)
            try:
                common.check_tensor("forward output", logits, expected_logits, case)
            except common.CheckFailure as err:
                common.fail(f"`backward` could not be checked ({case}): it starts from the caches of `forward`, and "
                            f"forward's logits are wrong. Fix forward first (its own test cell says what is wrong).\n"
                            f"  {str(err).splitlines()[0]}", kind="forward wrong", gradient="forward output")
            grads = common.call_student(backward, "backward", dlogits, caches, case=case)
            _grads_dict(grads, "backward", NAMES, case)
            for k in BACKPROP_ORDER:
                common.check_tensor(f"d{k}", grads[k], expected[k], case)

    _composite("backward", [forward, backward], LAYER_HELPERS, attempt, _culprits([forward, backward], LAYER_HELPERS),
               quiet)


@common.graded
def check_backward(forward, backward):
    """Every parameter gradient of the whole network, for an arbitrary upstream gradient of the logits."""
    _verify_backward(forward, backward)


# --------------------------------------------------------------------------- the update
def _verify_sgd_step(sgd_step):
    for label, gen, n, dtype, device in common.cases(708, sizes=(1, 7)):
        for momentum in (0.9, 0.0):
            lr = 0.05
            case = f"{label}, lr={lr}, momentum={momentum}"
            params = _random_params(gen, _sizes(n), dtype, device)
            grads = {k: common.randn(gen, *p.shape, dtype=dtype, device=device) for k, p in params.items()}
            velocity = {k: common.randn(gen, *p.shape, dtype=dtype, device=device) for k, p in params.items()}
            new_p, new_v = _torch_sgd(params, grads, velocity, lr, momentum)
            # what two known mistakes would give: a step with the old velocity, and a step without momentum
            old_v_step, _ = _torch_sgd(params, velocity, velocity, lr, 0.0)
            plain_step, _ = _torch_sgd(params, grads, velocity, lr, 0.0)
            uphill = {k: 2 * params[k] - new_p[k] for k in params}  # the same step, taken the other way
            originals = dict(params)
            common.call_student(sgd_step, "sgd_step", params, grads, velocity, lr, momentum, case=case, mutable=(0, 2))
            for k in BACKPROP_ORDER:
                if params.get(k) is not originals[k]:
                    common.fail(
                        f"`sgd_step` put a new object into params[{k!r}] ({case}). Update each parameter in place, as "
                        "the docstring asks (with an in-place method such as `add_`, or `-=`): the parameter tensors are shared "
                        "with whoever holds them. (The velocity may be updated in place or replaced.)",
                        kind="not in place", gradient=f"params[{k!r}]")
            for k in BACKPROP_ORDER:
                if k not in velocity:
                    common.fail(f"`sgd_step` removed velocity[{k!r}] ({case}).", kind="missing key")
                common.check_tensor(f"velocity[{k!r}] after the step", velocity[k], new_v[k],
                                    f"{case}; it should become momentum·velocity + grad")

                def hint(k=k):
                    if _same_values(params[k], old_v_step[k]):
                        return "That is a step with the velocity from before the update: update the velocity first."
                    if momentum and _same_values(params[k], plain_step[k]):
                        return "That is a step without momentum: step along the new velocity, not along the gradient."
                    if _same_values(params[k], uphill[k]):
                        return "That step goes uphill: the parameter moves against the velocity (minus lr times it)."
                    return None

                _with_hint(lambda k=k: common.check_tensor(f"params[{k!r}] after the step", params[k], new_p[k],
                                                           f"{case}; it should become param − lr·(the new velocity)"),
                           hint)


@common.graded
def check_sgd_step(sgd_step):
    """One step of SGD with momentum, against torch.optim.SGD: parameters in place, the new velocity in the dict."""
    _verify_sgd_step(sgd_step)


@common.graded
def check_momentum_weights(momentum_weights):
    """The weight of each past gradient in the velocity after ``steps`` steps, against torch.optim.SGD's buffer."""
    for steps in (5, 1, 2, 40):
        for momentum in (0.9, 0.5, 0.99, 0.0):
            case = f"steps={steps}, momentum={momentum}"
            expected = _velocity_weights_by_torch(steps, momentum)
            got = common.call_student(momentum_weights, "momentum_weights", steps, momentum, case=case)

            def hint():
                if steps > 1 and _same_values(got, expected.flip(0)):
                    return ("The order is reversed: entry s belongs to the gradient of step s + 1, and the newest "
                            "gradient (the last entry) has weight 1.")
                return None

            _with_hint(lambda: common.check_tensor("momentum weights", got, expected, case), hint)


def _velocity_weights_by_torch(steps, momentum):
    """torch.optim.SGD on a vector whose gradient at step s is the s-th unit vector: with lr = 1 the last step
    moves the vector by minus the velocity, whose entry s is then the weight of step s's gradient."""
    p = torch.zeros(steps, dtype=torch.float64)
    opt = torch.optim.SGD([p], lr=1.0, momentum=momentum)
    before = p.clone()
    for s in range(steps):
        before = p.detach().clone()
        p.grad = torch.eye(steps, dtype=torch.float64)[s]
        opt.step()
    return before - p.detach()


# --------------------------------------------------------------------------- the planted bug, fixed
def _all_gradients(params, x, y):
    """The loss's gradient with respect to every intermediate and parameter, by torch.autograd.grad."""
    with _reference_mode():
        ps = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        t = {"z1": F.linear(x, ps["W1"].T, ps["b1"])}
        t["a1"] = F.relu(t["z1"])
        t["z2"] = F.linear(t["a1"], ps["W2"].T, ps["b2"])
        t["a2"] = F.relu(t["z2"])
        t["z3"] = F.linear(t["a2"], ps["W3"].T, ps["b3"])
        loss = F.cross_entropy(t["z3"], y)
        sources = [t.get(k, ps.get(k)) for k in INTERMEDIATES]
        grads = torch.autograd.grad(loss, sources)
        values = {k: v.detach() for k, v in t.items()}
    return dict(zip(INTERMEDIATES, (g.detach() for g in grads))), values


def _upstream_grad_with(W, b, a, dz):
    """What the gradient of ``a`` would be if the layer a → a W + b had the weights W, b (autograd)."""
    with _reference_mode():
        return autograd_grads(lambda a_: (F.linear(a_, W.T, b) * dz).sum(), a)[0]


@common.graded
def check_backward_and_step(backward_and_step):
    """Every gradient at the parameters as they were on entry, then one plain SGD step in place."""
    for label, gen, n, dtype, device in common.cases(711):
        lr = 0.1 if n % 2 else 0.3
        sizes = _sizes(n)
        case = f"{label}, sizes {sizes}, lr={lr}"
        params = _random_params(gen, sizes, dtype, device)
        x = common.randn(gen, n, sizes[0], dtype=dtype, device=device)
        y = _labels(gen, n, sizes[-1], device)
        expected, values = _all_gradients(params, x, y)
        new_p, _ = _torch_sgd(params, {k: expected[k] for k in NAMES}, params, lr, 0.0)
        stale = {"a2": _upstream_grad_with(new_p["W3"], new_p["b3"], values["a2"], expected["z3"]),
                 "a1": _upstream_grad_with(new_p["W2"], new_p["b2"], values["a1"], expected["z2"])}
        originals = dict(params)
        grads = common.call_student(backward_and_step, "backward_and_step", params, x, y, lr, case=case, mutable=(0,))
        _grads_dict(grads, "backward_and_step", INTERMEDIATES, case)
        for k in INTERMEDIATES:
            def hint(k=k):
                layer = {"a2": "3", "a1": "2"}.get(k)
                if layer and _same_values(grads[k], stale[k]):
                    return (f"That is the gradient computed with W{layer} and b{layer} after their update: the step "
                            f"changed W{layer} in place, and everything that refers to it (a variable, a cache) sees "
                            f"the new values. Compute dL/d{k} before updating layer {layer}.")
                return None

            _with_hint(lambda k=k: common.check_tensor(f"dL/d{k}", grads[k], expected[k], case), hint)
        for k in BACKPROP_ORDER:
            if params.get(k) is not originals[k]:
                common.fail(f"`backward_and_step` put a new object into params[{k!r}] ({case}); update the parameters "
                            "in place, as the docstring asks.", kind="not in place", gradient=f"params[{k!r}]")
            common.check_tensor(f"params[{k!r}] after the step", params[k], new_p[k], f"{case}; θ − lr·dθ")


# --------------------------------------------------------------------------- training
def _reference_epoch(params, velocity, X, y, batch_size, lr, momentum, generator):
    """One epoch of torch autograd + torch.optim.SGD on the same batches; updates params and velocity in place.
    Returns the batches' mean losses and sizes."""
    with _reference_mode():
        leaves = {k: params[k].detach().clone().requires_grad_() for k in NAMES}
        opt = torch.optim.SGD([leaves[k] for k in NAMES], lr=lr, momentum=momentum)
        for k in NAMES:
            if momentum:
                opt.state[leaves[k]]["momentum_buffer"] = velocity[k].detach().clone()
        losses, sizes = [], []
        for idx in minibatches(len(X), batch_size, generator, X.device):
            opt.zero_grad()
            loss = F.cross_entropy(_network(leaves, X[idx]), y[idx])
            loss.backward()
            opt.step()
            losses.append(loss.item())
            sizes.append(len(idx))
        for k in NAMES:
            params[k] = leaves[k].detach()
            if momentum:
                velocity[k] = opt.state[leaves[k]]["momentum_buffer"].detach().clone()
    return losses, sizes


def _verify_train_epoch(train_epoch):
    def attempt():
        for device in common.devices():
            gen = torch.Generator().manual_seed(709)
            n, batch_size = 83, 16  # 83 = 5 · 16 + 3: the last batch is smaller
            sizes = (12, 10, 8, 4)
            X = common.randn(gen, n, sizes[0], dtype=torch.float64, device=device)
            y = _labels(gen, n, sizes[-1], device)
            start = _random_params(gen, sizes, torch.float64, device)
            ref_p, ref_v = _clones(start), {k: torch.zeros_like(p) for k, p in start.items()}
            params = _clones(start)
            velocity = {k: torch.zeros_like(p) for k, p in start.items()}
            for epoch, lr, momentum in ((1, 0.1, 0.9), (2, 0.05, 0.5)):  # the settings change: none is built in
                case = (f"{n} rows, sizes {sizes}, batch_size={batch_size}, lr={lr}, momentum={momentum}, float64, "
                        f"{device.type}")
                losses, counts = _reference_epoch(ref_p, ref_v, X, y, batch_size, lr, momentum,
                                                  torch.Generator().manual_seed(epoch))
                expected_loss = sum(l * c for l, c in zip(losses, counts)) / n
                loss = common.call_student(train_epoch, "train_epoch", params, velocity, X, y, batch_size, lr, momentum,
                                           torch.Generator().manual_seed(epoch), case=case, mutable=(0, 1, 7))
                context = f"{case}, after epoch {epoch}"
                for k in BACKPROP_ORDER:
                    if k not in params:
                        common.fail(f"`train_epoch` removed params[{k!r}] ({context}).", kind="missing key")
                    common.check_tensor(f"params[{k!r}]", params[k], ref_p[k], context)
                _check_epoch_loss(loss, expected_loss, losses, counts, batch_size, n, context)

    _composite("train_epoch", [train_epoch], ALL_HELPERS, attempt, _culprits([train_epoch], ALL_HELPERS), False,
               shown=_NETWORK_SHOWN)


def _check_epoch_loss(loss, expected, losses, counts, batch_size, n, context):
    if not isinstance(loss, float) and not (isinstance(loss, int) and not isinstance(loss, bool)):
        common.fail(f"`train_epoch` should return the epoch's mean loss as a Python float (`.item()`), but returned "
                    f"{type(loss).__name__} ({context}).", kind="type", gradient="epoch loss")
    if abs(loss - expected) <= 1e-9 * max(1.0, abs(expected)):
        return
    hint = "Add each batch's loss times its size (len(idx)) to total_loss, and divide by the number of rows."
    if abs(loss - sum(l * batch_size for l in losses) / n) <= 1e-9:
        hint = ("That weighs the last batch as if it were full: multiply each batch's loss by its own size, len(idx), "
                "not by batch_size (the last batch is smaller).")
    elif abs(loss - sum(losses) / len(losses)) <= 1e-9:
        hint = ("That is the mean of the batch means, which counts the rows of the smaller last batch more: weigh each "
                "batch's loss by its size.")
    common.fail(f"train_epoch returned {loss!r}, but the epoch's mean loss was {expected} ({context}). {hint}",
                kind="epoch loss", gradient="epoch loss")


@common.graded
def check_train_epoch(train_epoch):
    """One epoch of hand-gradient training follows autograd's training step for step (83 rows: a short last batch)."""
    _verify_train_epoch(train_epoch)


def _mnist_attempt(train_epoch, epochs, threshold, budget_s):
    run = mnist_run.prepare()
    X, y = run.X.clone(), run.y.clone()  # the data cache stays clean whatever the student's code does
    params = mnist_run.hand_parameters(run.device)
    velocity = {k: torch.zeros_like(p) for k, p in params.items()}
    gen = torch.Generator().manual_seed(mnist_run.SEED)
    shapes = {k: tuple(p.shape) for k, p in params.items()}
    start = common.student_seconds()
    with mnist_run.one_cpu_thread():
        for epoch in range(epochs):
            common.call_student(
                train_epoch, "train_epoch", params, velocity, X, y, mnist_run.BATCH_SIZE, mnist_run.learning_rate(epoch),
                mnist_run.MOMENTUM, gen, case=f"MNIST, epoch {epoch + 1}", mutable=(0, 1, 7),
                seconds=max(budget_s - (common.student_seconds() - start), 1.0),
                timeout_hint=f"The whole training has {budget_s:.0f} s: work on whole mini-batches with tensor operations "
                             "(no Python loop over single images).",
            )
            for k in NAMES:
                p = params.get(k)
                if not isinstance(p, torch.Tensor) or tuple(p.shape) != shapes[k] or p.dtype != torch.float32:
                    common.fail(f"after epoch {epoch + 1}, params[{k!r}] is not a float32 tensor of shape {shapes[k]} "
                                "any more: train_epoch should only update the parameters' values.", kind="bad parameters")
            spent = common.student_seconds() - start
            if spent > budget_s:
                common.fail(f"training is too slow: {epoch + 1} of {epochs} epochs took {spent:.1f} s, over the budget "
                            f"of {budget_s:.0f} s. Work on whole mini-batches with tensor operations (no Python loop "
                            "over single images).", kind="too slow")
    with torch.no_grad():
        acc = (_network(params, run.X_test).argmax(dim=1) == run.y_test).double().mean().item()
    if not acc >= threshold:
        common.fail(f"after {epochs} epochs the network is right on {100 * acc:.2f}% of the held-out test images; it "
                    f"should reach at least {100 * threshold:.0f}%. Check that every mini-batch takes a step and that the "
                    "loss goes down from epoch to epoch.", kind="accuracy")


@common.graded
def check_mnist_training(train_epoch, epochs=4, threshold=0.92, budget_s=40.0):
    """The MNIST network, trained from lesson 6's initial weights with the student's hand-gradient epochs,
    reaches ``threshold`` on held-out images within ``budget_s`` seconds of the student's code."""
    _composite("train_epoch", [train_epoch], ALL_HELPERS,
               functools.partial(_mnist_attempt, train_epoch, epochs, threshold, budget_s),
               _culprits([train_epoch], ALL_HELPERS), False, shown=_NETWORK_SHOWN,
               passed="The training run reached the accuracy, but only")
