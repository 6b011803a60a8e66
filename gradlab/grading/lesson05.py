"""Hidden checks of lesson 5 (backprop for whole layers, in matrix form).

Layers follow the API ``X_forward(...) -> (out, cache)`` and ``X_backward(dout, cache) -> gradients``, with the
linear layer's W of shape (D_in, D_out). The lesson prescribes each cache: ``(x, W, b)`` for the linear layer,
``x`` for ReLU, ``out = σ(x)`` for the sigmoid. A backward check builds that cache itself, so a mistake in a
forward function costs only the forward's cell; a backward written for a different cache that the student's own
forward returns passes too (with a note).

Every expected value is computed before the student's function runs, from tensors it never sees (it gets copies):
torch's own functions, autograd, and, in float64 on small inputs, finite differences. The two-layer network is
graded with the grader's layer functions in place of the student's when it fails with the student's own, so that
a mistake in a layer costs that layer's cell only (``common.reference_helpers``).
"""
import torch
import torch.nn.functional as F

from gradlab.check import autograd_grads, compare, numerical_grads
from gradlab.grading import common, trial

LAYER_NAMES = ("W1", "b1", "W2", "b2")
LAYERS = {
    "linear": ("linear_forward", "linear_backward"),
    "relu": ("relu_forward", "relu_backward"),
    "sigmoid": ("sigmoid_forward", "sigmoid_backward"),
}
CACHES = {"linear": "(x, W, b)", "relu": "x", "sigmoid": "out = σ(x)"}
# What a failure of the student's own call means: these are the student's doing whatever the cache, so no
# second try with another cache can excuse them.
_FINAL_KINDS = ("autograd", "changed input", "not written", "not a function", "timeout")


# --------------------------------------------------------------------------- small tools
def _pair(result, name, case):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        common.fail(f"`{name}` should return a pair (out, cache), but returned {type(result).__name__} ({case}).",
                    kind="not a pair")
    return result


def _copies(*tensors):
    return tuple(t.clone() for t in tensors)


def _attempt(run, *args):
    """Run part of a check: None if it passed, else its AssertionError.

    The attempt's comparisons are taken out of the instructor's report and kept on the error: ``_decisive(err)``
    puts them back when this attempt's failure becomes the verdict."""
    t = trial.current()
    mark = len(t.outcomes) if t is not None else 0
    try:
        run(*args)
    except AssertionError as err:
        if t is not None:
            err.dropped_outcomes = t.outcomes[mark:]
            del t.outcomes[mark:]
        return err
    return None


def _decisive(err):
    """The failure that decides the verdict: its comparisons go back into the report; returns it."""
    t = trial.current()
    if t is not None:
        t.outcomes.extend(getattr(err, "dropped_outcomes", []))
    return err


def _again(err, extra):
    """Fail with ``err``'s message and one more sentence, keeping its kind."""
    _decisive(err)
    common.fail(f"{err}\n  {extra}", kind=getattr(err, "kind", None), gradient=getattr(err, "gradient", None))


def _same(a, b):
    """Is the student's cache the one the lesson prescribes (same structure, same values)?"""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a.detach().cpu(), b.detach().cpu()))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return False


def _finite_differences(fn, inputs):
    """A third opinion in float64, on small inputs only (each entry costs two evaluations of fn); else None."""
    if inputs[0].dtype != torch.float64 or sum(x.numel() for x in inputs) > 96:
        return None
    return numerical_grads(fn, *inputs)


# --------------------------------------------------------------------------- forward
def _linear_inputs(gen, n, dtype, device):
    """x, W, b with sizes that change with the case; n = 5 gives D_in = 1, n = 64 gives D_out = 1."""
    d_in, d_out = 1 + n % 5, 1 + n % 4
    x = common.randn(gen, n, d_in, dtype=dtype, device=device)
    W = common.randn(gen, d_in, d_out, dtype=dtype, device=device)
    b = common.randn(gen, d_out, dtype=dtype, device=device)
    return x, W, b, f"x {tuple(x.shape)}, W {tuple(W.shape)}, b {tuple(b.shape)}"


LINEAR_SIZES = (1, 5, 7, 64)


def _linear(x, W, b):
    return torch.addmm(b, x, W)


def _check_forward(forward, name, args, expected, case):
    out, _ = _pair(common.call_student(forward, name, *_copies(*args), case=case), name, case)
    common.check_tensor(f"{name} output", out, expected, case)


@common.graded
def check_linear_forward(linear_forward):
    """linear_forward(x, W, b) returns (out, cache) with out = x W + b of shape (N, D_out)."""
    for label, gen, n, dtype, device in common.cases(501, sizes=LINEAR_SIZES):
        x, W, b, shapes = _linear_inputs(gen, n, dtype, device)
        _check_forward(linear_forward, "linear_forward", (x, W, b), _linear(x, W, b), f"{shapes}, {label}")


def _relu_input(gen, n, dtype, device):
    """Normal numbers with about a quarter of them exactly 0, where ReLU's slope is a convention."""
    x = common.randn(gen, n, 6, dtype=dtype, device=device)
    zeros = (torch.rand(n, 6, generator=gen) < 0.25).to(device)
    zeros[0, 0] = True
    return x.masked_fill(zeros, 0.0)


@common.graded
def check_relu_forward(relu_forward):
    for label, gen, n, dtype, device in common.cases(502):
        x = _relu_input(gen, n, dtype, device)
        _check_forward(relu_forward, "relu_forward", (x,), torch.relu(x), label + ", x holds exact zeros")


@common.graded
def check_sigmoid_forward(sigmoid_forward):
    for label, gen, n, dtype, device in common.cases(503):
        x = common.randn(gen, n, 5, dtype=dtype, device=device, scale=3.0)
        _check_forward(sigmoid_forward, "sigmoid_forward", (x,), torch.sigmoid(x), label)


# --------------------------------------------------------------------------- backward
class _Backward:
    """One case of a backward check: the inputs, the prescribed cache and every expected value, made up front."""

    def __init__(self, layer, forward, backward, inputs, dout, cache, expected, names, picked, case,
                 finite=None, slips=None):
        self.layer, self.forward, self.backward = layer, forward, backward
        self.inputs, self.dout, self.cache = inputs, dout, cache
        self.expected, self.names, self.picked, self.case = expected, names, picked, case
        self.finite = finite  # finite-difference gradients (float64, small cases), or None
        self.slips = slips or (lambda k, got: None)  # (position, got) -> a sentence naming a known slip, or None

    def judge(self, cache):
        """Call the student's backward with ``cache`` (a copy of the dout) and compare each picked gradient."""
        name = f"{self.layer}_backward"
        result = common.call_student(self.backward, name, self.dout.clone(), cache, case=self.case)
        if len(self.names) == 1:
            grads = (result,)
        elif isinstance(result, (tuple, list)) and len(result) == len(self.names):
            grads = tuple(result)
        else:
            length = f" of length {len(result)}" if isinstance(result, (tuple, list)) else ""
            count = {1: "one gradient", 3: "three gradients"}.get(len(self.names), f"{len(self.names)} gradients")
            common.fail(f"`{name}` should return {count} ({', '.join(self.names)}), but returned "
                        f"{type(result).__name__}{length} ({self.case}).", kind="not a tuple")
        for k in self.picked:
            got, expected = grads[k], self.expected[k]
            if not compare(self.names[k], got, expected).ok:
                slip = self.slips(k, got)
                if slip:
                    common.fail(f"{name} is wrong ({self.case}): {slip}.", kind="known slip", gradient=self.names[k])
            common.check_tensor(self.names[k], got, expected, self.case)
            if self.finite is not None:
                where = self.finite_where(k)
                common.check_tensor(f"{self.names[k]} (vs finite differences)", got[where], self.finite[k][where],
                                    self.case, atol=1e-6, rtol=1e-5)

    def finite_where(self, k):
        """Where finite differences can judge (not at ReLU's kink)."""
        if self.layer == "relu":
            return self.inputs[0] != 0
        return torch.ones_like(self.expected[k], dtype=torch.bool)

    def own_cache(self):
        """The cache the student's own forward makes from the same inputs, when it differs from the lesson's."""
        try:
            result = common.call_student(self.forward, f"{self.layer}_forward", *_copies(*self.inputs), case=self.case)
            _, cache = _pair(result, f"{self.layer}_forward", self.case)
        except AssertionError:
            return None
        return None if _same(cache, self.cache) else cache

    def fresh_cache(self):
        return tuple(_copies(*self.cache)) if isinstance(self.cache, tuple) else self.cache.clone()

    def run(self):
        """Pass with the lesson's cache (None), or with the cache of the student's own forward ("own cache"); else
        fail."""
        err = _attempt(self.judge, self.fresh_cache())
        if err is None:
            return None
        if getattr(err, "kind", None) in _FINAL_KINDS:
            raise _decisive(err)
        own = self.own_cache()
        if own is None:
            raise _decisive(err)
        if _attempt(self.judge, own) is None:
            return "own cache"
        _again(err, f"It was called with the lesson's cache, {CACHES[self.layer]}. Your `{self.layer}_forward` "
                    f"returns a different cache, and `{self.layer}_backward` is wrong with that one too.")


@common.graded
def check_linear_backward(linear_forward, linear_backward, which=("dx", "dW", "db")):
    """linear_backward(dout, cache) with cache = (x, W, b) returns (dx, dW, db), the gradients of a scalar J with
    ∂J/∂out = dout, in the shapes of x, W and b.

    which: the gradient(s) to check, e.g. "dW", so that each has its own test cell and its own points.
    """
    which = (which,) if isinstance(which, str) else tuple(which)
    names = ("dx", "dW", "db")
    picked = [k for k, name in enumerate(names) if name in which]
    ways = set()
    for label, gen, n, dtype, device in common.cases(504, sizes=LINEAR_SIZES):
        x, W, b, shapes = _linear_inputs(gen, n, dtype, device)
        dout = common.randn(gen, n, W.shape[1], dtype=dtype, device=device)

        def J(x_, W_, b_, dout=dout):  # the scalar whose gradients backward computes: Σ out · dout
            return (_linear(x_, W_, b_) * dout).sum()

        ways.add(_Backward("linear", linear_forward, linear_backward, (x, W, b), dout, (x, W, b),
                           autograd_grads(J, x, W, b), names, picked, f"{shapes}, {label}",
                           finite=_finite_differences(J, (x, W, b))).run())
    _note_own_cache("linear", ways)


@common.graded
def check_relu_backward(relu_forward, relu_backward):
    """relu_backward(dout, x): the gradient with respect to x of a J with ∂J/∂out = dout, with slope 0 at x = 0, as
    torch.relu's autograd takes it."""
    ways = set()
    for label, gen, n, dtype, device in common.cases(505):
        x = _relu_input(gen, n, dtype, device)
        dout = common.randn(gen, n, 6, dtype=dtype, device=device)
        ways.add(_elementwise("relu", relu_forward, relu_backward, torch.relu, x, dout, x, label + ", x holds exact zeros"))
    _note_own_cache("relu", ways)


@common.graded
def check_sigmoid_backward(sigmoid_forward, sigmoid_backward):
    """sigmoid_backward(dout, out) with out = σ(x): the gradient with respect to x of a J with ∂J/∂out = dout."""
    ways = set()
    for label, gen, n, dtype, device in common.cases(506):
        x = common.randn(gen, n, 6, dtype=dtype, device=device, scale=3.0)
        dout = common.randn(gen, n, 6, dtype=dtype, device=device)
        ways.add(_elementwise("sigmoid", sigmoid_forward, sigmoid_backward, torch.sigmoid, x, dout, torch.sigmoid(x),
                              label))
    _note_own_cache("sigmoid", ways)


def _note_own_cache(layer, ways):
    if "own cache" in ways:
        common.note(f"`{layer}_backward` is right for the cache your own `{layer}_forward` returns, but not for the "
                    f"lesson's cache, {CACHES[layer]}. That is fine here; the lesson's form is what other code expects.")


def _elementwise(layer, forward, backward, reference, x, dout, cache, case):
    def J(x_):
        return (reference(x_) * dout).sum()

    (expected,) = autograd_grads(J, x)
    local = expected / dout  # the local derivative alone (dout, drawn from a normal distribution, has no zeros)
    if layer == "sigmoid":
        (twice,) = autograd_grads(lambda s_: (torch.sigmoid(s_) * dout).sum(), cache)
        variants = {
            "it is the local derivative alone: multiply it by the upstream gradient dout (chain rule)": local,
            "it multiplies dout by σ(x), but the sigmoid's derivative is σ(x)·(1 − σ(x))": dout * cache,
            "it applies σ to the cache again, but the cache already is out = σ(x)": twice,
        }
    else:
        variants = {
            "it is the local derivative alone: multiply it by the upstream gradient dout (chain rule)": local,
            "it multiplies dout by ReLU(x); the local derivative is 0 or 1 (a mask), not ReLU(x) itself": dout * reference(x),
        }

    def slips(k, got):
        for sentence, value in variants.items():
            if compare("dx", got, value).ok:
                return sentence
        if layer == "relu" and isinstance(got, torch.Tensor) and got.shape == x.shape:
            wrong = ~torch.isclose(got.detach().to(expected.dtype).to(x.device), expected)
            if bool(wrong.any()) and bool((x[wrong] == 0).all()):
                return ("it is right except where x is exactly 0. ReLU has no derivative there; the lesson takes 0, "
                        "as torch.relu's autograd does (the mask is x > 0, not x >= 0)")
        return None

    return _Backward(layer, forward, backward, (x,), dout, cache, (expected,), ("dx",), (0,), case,
                     finite=_finite_differences(J, (x,)), slips=slips).run()


# --------------------------------------------------------------------------- the grader's own layers
# They stand in for the student's layer functions while a composite exercise is graded. Gradients come from
# autograd; caches are the lesson's. A sigmoid output made here is remembered with its input, so that backward
# finds x by the cache object's identity (an output from elsewhere is inverted with torch.logit).
_sigmoid_inputs = {}


def _ref_linear_forward(x, W, b):
    return _linear(x, W, b), (x, W, b)


def _ref_linear_backward(dout, cache):
    x, W, b = cache
    return autograd_grads(lambda x_, W_, b_: (_linear(x_, W_, b_) * dout).sum(), x, W, b)


def _ref_relu_forward(x):
    return torch.relu(x), x


def _ref_relu_backward(dout, cache):
    return autograd_grads(lambda x_: (torch.relu(x_) * dout).sum(), cache)[0]


def _ref_sigmoid_forward(x):
    out = torch.sigmoid(x)
    _sigmoid_inputs[id(out)] = (out, x)
    return out, out


def _ref_sigmoid_backward(dout, cache):
    kept = _sigmoid_inputs.get(id(cache))
    x = kept[1] if kept is not None and kept[0] is cache else torch.logit(cache)
    return autograd_grads(lambda x_: (torch.sigmoid(x_) * dout).sum(), x)[0]


REFERENCES = {
    "linear_forward": _ref_linear_forward, "linear_backward": _ref_linear_backward,
    "relu_forward": _ref_relu_forward, "relu_backward": _ref_relu_backward,
    "sigmoid_forward": _ref_sigmoid_forward, "sigmoid_backward": _ref_sigmoid_backward,
}


# --------------------------------------------------------------------------- the two-layer network
def two_layer_loss(X, y, params):
    """The lesson's network, with torch's own layers: sigmoid(relu(X W1 + b1) W2 + b2), mean squared error."""
    hidden = torch.relu(_linear(X, params["W1"], params["b1"]))
    return F.mse_loss(torch.sigmoid(_linear(hidden, params["W2"], params["b2"])), y)


def _two_layer_cases():
    out = []
    for label, gen, n, dtype, device in common.cases(507, sizes=(1, 7, 64)):
        d, h = 3 + n % 6, 2 + n % 5
        X = common.randn(gen, n, d, dtype=dtype, device=device)
        y = (torch.rand(n, 1, generator=gen) < 0.5).to(dtype=dtype, device=device)
        params = {
            "W1": common.randn(gen, d, h, dtype=dtype, device=device),
            "b1": common.randn(gen, h, dtype=dtype, device=device, scale=0.5),
            "W2": common.randn(gen, h, 1, dtype=dtype, device=device),
            "b2": common.randn(gen, 1, dtype=dtype, device=device, scale=0.5),
        }
        loss = two_layer_loss(X, y, params)
        grads = autograd_grads(lambda *p: two_layer_loss(X, y, dict(zip(LAYER_NAMES, p))),
                               *(params[k] for k in LAYER_NAMES))
        out.append((f"X {tuple(X.shape)}, hidden width {h}, {label}", X, y, params, loss, dict(zip(LAYER_NAMES, grads))))
    return out


def _judge_two_layer(fn, cases):
    for case, X, y, params, expected_loss, expected in cases:
        result = common.call_student(fn, "two_layer_loss_and_grads", X.clone(), y.clone(),
                                     {k: v.clone() for k, v in params.items()}, case=case)
        if not isinstance(result, (tuple, list)) or len(result) != 2 or not isinstance(result[1], dict):
            common.fail(f"`two_layer_loss_and_grads` should return (loss, grads) with grads a dict, but returned "
                        f"{type(result).__name__} ({case}).", kind="not a pair")
        loss, grads = result
        if isinstance(loss, (int, float)) and not isinstance(loss, bool):  # a loss returned with .item() is fine too
            loss = torch.tensor(float(loss), dtype=X.dtype, device=X.device)
        common.check_tensor("loss", loss, expected_loss, case)
        missing = [k for k in LAYER_NAMES if k not in grads]
        if missing:
            common.fail(f"grads has no entry for {missing}; it should have the keys {list(LAYER_NAMES)} ({case}).",
                        kind="missing key")
        for name in LAYER_NAMES:
            common.check_tensor(f"dJ/d{name}", grads[name], expected[name], case)


@common.graded
def check_two_layer_loss_and_grads(two_layer_loss_and_grads):
    """two_layer_loss_and_grads(X, y, params) -> (loss, grads) with grads[name] = ∂J/∂params[name].

    First with the student's own layer functions. If that fails, again with the grader's layers in their place
    (rebound by name in the notebook): a pass then means this function is right and a layer is wrong, which costs
    that layer's cell, not this one; the note names the layer.
    """
    fn = two_layer_loss_and_grads
    cases = _two_layer_cases()
    own = _attempt(_judge_two_layer, fn, cases)
    if own is None:
        return
    _sigmoid_inputs.clear()
    try:
        with common.reference_helpers(fn, REFERENCES):
            graded = _attempt(_judge_two_layer, fn, cases)
        if graded is not None:
            if getattr(graded, "kind", None) in ("not written", "not a function"):
                raise _decisive(graded)
            _again(graded, "(This was graded with the lesson's layer functions in place of yours, so the mistake is in "
                           "`two_layer_loss_and_grads` itself.)")
        culprits = []
        for layer, names in LAYERS.items():
            others = {name: REFERENCES[name] for name in REFERENCES if name not in names}
            with common.reference_helpers(fn, others):
                if _attempt(_judge_two_layer, fn, cases) is not None:
                    culprits.append(layer)
    finally:
        _sigmoid_inputs.clear()
    kind = getattr(own, "kind", None)
    if kind == "not written":
        failing = "it stops at a layer function that is not written yet"
    elif kind == "autograd":
        failing = "a layer function uses autograd"
    else:
        failing = str(own).splitlines()[0].rstrip(".")
    if culprits:
        fix = " and ".join(f"your {layer} layer (`{LAYERS[layer][0]}` / `{LAYERS[layer][1]}`)" for layer in culprits)
        what = f"Fix {fix}: its own test cell says what is wrong."
    else:
        what = "Fix the layer functions whose own test cells fail."
    common.note(
        "`two_layer_loss_and_grads` passed, but only with the lesson's layer functions in place of yours: "
        f"with your own, {failing}. {what}"
    )
