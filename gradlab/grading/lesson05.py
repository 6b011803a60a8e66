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

How a wrong gradient is explained (issue 15): every case is graded first; then the message comes from the most
informative failing case and names a formula mistake only when one fits every case tried, from the computations
declared once below for gradlab.variants (``LINEAR``, ``RELU``, ``SIGMOID``, ``TWO_LAYER`` on ``NETWORK``), in the
lesson's notation, with the fix in one sentence. A layer's backward that fits no usual mistake is called again on
changed inputs (through ``common.call_student``): does it depend on the forward values at all, on dout? A mistake
inside the two-layer network is placed at its first wrong gradient (dz2, da1, dz1: inside the student's function),
with what follows from it; the failure carries the backward pass drawn with that node marked (``figure``, drawn in
the grader's replay or a local run, never while the student's kernel records). When the network passes only with
the grader's layers, the note says where the student's own layers go wrong in it: each called with the right
upstream gradient (``variants.locate`` with ``layer_helpers``). ``trace`` draws the network's backward pass for the
lesson's own comparison cell.
"""
import torch
import torch.nn.functional as F

from gradlab import variants as V
from gradlab.check import autograd_grads, compare, numerical_grads
from gradlab.diagnose import dtype_name
from gradlab.grading import common
from gradlab.grading.lesson01 import fail_with_trace, formula_trace, judge

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


# --------------------------------------------------------------------------- the computations, declared once
# for the diagnosis (gradlab.variants), in the lesson's notation. A layer's backward is graded as the gradient of
# J = Σ out · dout for the upstream gradient dout; the network's as that of its mean squared error.
def _layer(op, **grad_notation):
    return V.Graph(op, V.Dot("J", "out", "dout"), upstream="dout",
                   grad_notation={"out": "dout", "x": "dx", **grad_notation})


LINEAR = V.Exercise(_layer(V.Linear("out", "x", "W", "b"), W="dW", b="db"), ("x", "W", "b"), name=("dx", "dW", "db"))
RELU = V.Exercise(_layer(V.ReLU("out", "x")), "x", name="dx")
SIGMOID = V.Exercise(_layer(V.Sigmoid("out", "x")), "x", name="dx")
NETWORK = V.Graph(V.Linear("z1", "X", "W1", "b1"), V.ReLU("a1", "z1"), V.Linear("z2", "a1", "W2", "b2"),
                  V.Sigmoid("p", "z2"), V.MSE("J", "p", "y"), data=("X",),
                  grad_notation={t: f"d{t}" for t in ("p", "z2", "a1", "z1") + LAYER_NAMES})
TWO_LAYER = V.Exercise(NETWORK, LAYER_NAMES, name=tuple(f"dJ/d{k}" for k in LAYER_NAMES))
_OPS = {V.Linear: "linear_backward", V.ReLU: "relu_backward", V.Sigmoid: "sigmoid_backward"}


def trace(X, y, params, grads, title=None):
    """The two-layer network's backward pass for ``X``, ``y`` and ``params`` ({"W1", "b1", "W2", "b2"}), with the
    gradients in ``grads`` ({"W1": dJ/dW1, ...}, what two_layer_loss_and_grads returns; intermediate ones such as
    "dz2" or "z2" may be added, any may be left out) marked against autograd's: right, the first wrong one (with the
    likely slip), wrong only because of it. A notebook shows it as a picture; ``.explain()`` says it in words."""
    given = {}
    for key, value in (grads or {}).items():
        name = key[1:] if key.startswith("d") and key[1:] in NETWORK.names.grad_notation else key
        if name in NETWORK.names.grad_notation and isinstance(value, torch.Tensor):
            given[name] = value
    traced = V.locate(NETWORK, {"X": X, "y": y, **{k: params[k] for k in LAYER_NAMES}}, grads=given)
    traced.title = title or "the network's backward pass: your gradients against autograd's"
    return traced


# --------------------------------------------------------------------------- grading every case, then speaking
class _Probing(V.Exercise):
    """The same computation, whose diagnosis may call the student's code again on changed inputs (``answer``, which
    goes through common.call_student) when no usual mistake fits: does the answer depend on the forward values at
    all, and on the upstream gradient?"""

    def __init__(self, exercise, answer):
        super().__init__(exercise.graph, exercise.wrt, exercise.names, exercise.select)
        self.answer = answer

    def explain(self, results, answer=None):
        return super().explain(results, self.answer)


def grade(exercise, runs, strict, *, answer=None, draw=True, where=False):
    """lesson01.judge (every case graded first, then one message) with the most informative failing case tried first,
    so that what the check says from one case (None, a shape, NaN, a constant factor) comes from the case that shows
    it best, not from n = 1. ``answer(**inputs)``: the student's code through call_student, for the probes; ``draw``:
    a named mistake carries the backward pass drawn with its node marked (and, with ``where``, the message names the
    first wrong gradient and what follows from it). runs: [(label, inputs, got, expected dict)]."""
    results = [exercise.compare_case(label, inputs, got, expected) for label, inputs, got, expected in runs]
    failing = [i for i, result in enumerate(results) if not result.ok]
    if failing:
        best = V.informative_case([results[i] for i in failing])
        first = next(i for i in failing if results[i] is best)
        runs = [runs[first]] + runs[:first] + runs[first + 1:]
    drawn = (lambda result, found: formula_trace(exercise, result, found)) if draw else None
    judge(exercise if answer is None else _Probing(exercise, answer), runs, strict, trace=drawn, where=where and draw)


# --------------------------------------------------------------------------- small tools
def _pair(result, name, case):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        common.fail(f"`{name}` should return a pair (out, cache), but returned {type(result).__name__} ({case}).",
                    kind="not a pair")
    return result


def _copies(*tensors):
    return tuple(t.clone() for t in tensors)


def _tried(run, *args):
    """Run a part of a check whose failure the check handles itself (a first try): None if it passed, else its
    AssertionError, whose comparisons common.attempt() has dropped from the instructor's report."""
    try:
        with common.attempt():
            run(*args)
    except AssertionError as err:
        return err
    return None


def _again(err, extra):
    """Fail with ``err``'s message and one more sentence, keeping its kind and its picture."""
    common.fail(f"{err}\n  {extra}", kind=getattr(err, "kind", None), gradient=getattr(err, "gradient", None),
                figure=getattr(err, "figure", None))


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
class _Case:
    """One case of a layer's backward check, made before any call: the forward's inputs (``args``), the upstream
    gradient, the lesson's cache, every expected gradient by name, and (float64, small) finite differences."""

    def __init__(self, label, args, dout, cache, expected, finite=None):
        self.label, self.args, self.dout, self.cache = label, args, dout, cache
        self.expected = expected  # {"dx": ..., "dW": ..., "db": ...}: autograd's, by the exercise's names
        self.finite = finite  # {name: finite differences} or None

    def fresh_cache(self):
        return tuple(_copies(*self.cache)) if isinstance(self.cache, tuple) else self.cache.clone()


class _Layer:
    """How one layer's backward is graded: the student's functions, the declared computation, the gradients picked."""

    def __init__(self, layer, forward, backward, exercise, picked, inputs_of, cache_of):
        self.layer, self.forward, self.backward = layer, forward, backward
        self.name = f"{layer}_backward"
        self.all_names = LINEAR.names if layer == "linear" else ("dx",)
        self.exercise = exercise  # the picked gradients of the layer's computation
        self.picked = picked
        self.inputs_of = inputs_of  # _Case -> the computation's inputs ({"x": ..., "dout": ...})
        self.cache_of = cache_of  # the computation's inputs -> the lesson's cache (for the probes)

    def call(self, dout, cache, case):
        """The student's backward, called with a copy of ``dout`` and ``cache``: {name: gradient} for the picked ones."""
        result = common.call_student(self.backward, self.name, dout.clone(), cache, case=case)
        if len(self.all_names) == 1:
            return {self.all_names[0]: result}
        if not isinstance(result, (tuple, list)) or len(result) != len(self.all_names):
            length = f" of length {len(result)}" if isinstance(result, (tuple, list)) else ""
            common.fail(f"`{self.name}` should return three gradients ({', '.join(self.all_names)}), but returned "
                        f"{type(result).__name__}{length} ({case}).", kind="not a tuple")
        return {name: g for name, g in zip(self.all_names, result) if name in self.picked}

    def strict(self, case, got):
        """Values, a tensor, the inputs' dtype and device; then finite differences where the case has them."""
        for name in self.picked:
            common.check_tensor(name, got[name], case.expected[name], case.label)
            if case.finite is not None:
                where = case.args[0] != 0 if self.layer == "relu" else torch.ones_like(case.expected[name], dtype=torch.bool)
                common.check_tensor(f"{name} (vs finite differences)", got[name][where], case.finite[name][where],
                                    case.label, atol=1e-6, rtol=1e-5)

    def answer(self, **inputs):
        """The student's backward on the computation's inputs (for the probes), with the lesson's cache."""
        return self.call(inputs["dout"], self.cache_of(inputs), "a second call, with one input changed")

    def own_cache(self, case):
        """The cache the student's own forward makes from the case's inputs, when it differs from the lesson's."""
        name = f"{self.layer}_forward"
        try:
            _, cache = _pair(common.call_student(self.forward, name, *_copies(*case.args), case=case.label), name,
                             case.label)
        except AssertionError:
            return None
        return None if _same(cache, case.cache) else cache

    def grade(self, cases):
        """Pass with the lesson's cache (None), or with the cache of the student's own forward ("own cache"); else
        fail, with the message from the most informative case and the formula mistake that fits every case."""
        runs, errors = [], []
        for case in cases:
            try:
                got = self.call(case.dout, case.fresh_cache(), case.label)
            except common.CheckFailure as err:
                if err.kind in _FINAL_KINDS:
                    raise
                errors.append(err)
                got = None
            runs.append((case, got))
        wrong = [case for case, got in runs if got is None or not self._right(case, got)]
        if not wrong:
            for case, got in runs:
                self.strict(case, got)
            return None
        rescued, other = self._with_own_caches(wrong)
        if rescued:
            return "own cache"
        extra = (f"It was called with the lesson's cache, {CACHES[self.layer]}. Your `{self.layer}_forward` returns a "
                 f"different cache, and `{self.name}` is wrong with that one too.") if other else None
        try:
            if errors:
                raise errors[0]
            graded = [(case.label, self.inputs_of(case), got, {n: case.expected[n] for n in self.picked})
                      for case, got in runs]
            if self.layer == "relu":
                _not_a_mask(graded)
                _only_at_zero(graded)
            grade(self.exercise, graded, lambda label, got, expected: self.strict(
                next(case for case in cases if case.label == label), got), answer=self.answer)
        except common.CheckFailure as failure:
            if extra is None:
                raise
            _again(failure, extra)

    def _right(self, case, got):
        return all(compare(name, got[name], case.expected[name]).ok for name in self.picked)

    def _with_own_caches(self, wrong):
        """(every wrong case right with the student's own cache, some case had a cache of its own)."""
        other = False
        for case in wrong:
            own = self.own_cache(case)
            if own is None:
                return False, other
            other = True
            if _tried(lambda: self.strict(case, self.call(case.dout, own, case.label))) is not None:
                return False, other
        return True, other


def _not_a_mask(runs):
    """A dx that is a bool or integer tensor (the mask returned as it is): say so, before any values."""
    for label, _, got, _ in runs:
        message, kind = mask_message(got["dx"], label)
        if message:
            common.fail(message, kind=kind, gradient="dx")


def mask_message(dx, label):
    """(the message, the kind) for a gradient that is a bool or integer tensor; (None, None) for any other answer."""
    if not isinstance(dx, torch.Tensor) or dx.is_floating_point() or dx.is_complex():
        return None, None
    if dx.dtype == torch.bool:
        return (f"dx is a bool tensor ({label}): that is a mask (where x is positive), not the gradient. The mask says "
                f"where the gradient passes: multiply the upstream gradient dout by it, elementwise.", "no_upstream")
    return (f"dx holds {dtype_name(dx.dtype)} values ({label}): a gradient holds real numbers, in dout's dtype. "
            f"Multiply the upstream gradient dout by the mask, elementwise.", "type")


def _only_at_zero(runs):
    """A dx that is wrong only where x is exactly 0, in every case that fails, and not the usual x >= 0 (which the
    diagnosis names): say that ReLU's slope at 0 is taken as 0."""
    shown, count = None, 0
    for label, inputs, got, expected in runs:
        got, expected = got["dx"], expected["dx"]
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape or not got.is_floating_point():
            return
        off = ~torch.isclose(got.detach().to(expected.device, expected.dtype), expected)
        if not off.any():
            continue
        at_zero = inputs["x"] == 0
        passed = torch.where(at_zero, inputs["dout"], expected)  # dout let through at 0: the diagnosis names it
        if (off & ~at_zero).any() or compare("dx", got, passed).ok:
            return
        count += 1
        if shown is None or int(off.sum()) > shown[0]:
            shown = (int(off.sum()), label, got, expected)
    if shown is None:
        return
    _, label, got, expected = shown
    details = ["  " + line for line in compare("dx", got, expected).details]
    fail_with_trace("\n".join([
        f"dx is wrong ({label}): it is wrong only where x is exactly 0 (in all {count} cases that fail). ReLU has no "
        f"derivative there; the lesson takes 0, as torch.relu's autograd does. Fix: let dout through where x is "
        f"positive only, and give 0 at x = 0 too.", *details]), "mask_at_zero", "dx", None, label)


@common.graded
def check_linear_backward(linear_forward, linear_backward, which=("dx", "dW", "db")):
    """linear_backward(dout, cache) with cache = (x, W, b) returns (dx, dW, db), the gradients of a scalar J with
    ∂J/∂out = dout, in the shapes of x, W and b.

    which: the gradient(s) to check, e.g. "dW", so that each has its own test cell and its own points.
    """
    which = (which,) if isinstance(which, str) else tuple(which)
    picked = tuple(name for name in LINEAR.names if name in which)
    exercise = V.Exercise(LINEAR.graph, tuple(LINEAR.wrt[LINEAR.names.index(n)] for n in picked), name=picked)
    cases = []
    for label, gen, n, dtype, device in common.cases(504, sizes=LINEAR_SIZES):
        x, W, b, shapes = _linear_inputs(gen, n, dtype, device)
        dout = common.randn(gen, n, W.shape[1], dtype=dtype, device=device)

        def J(x_, W_, b_, dout=dout):  # the scalar whose gradients backward computes: Σ out · dout
            return (_linear(x_, W_, b_) * dout).sum()

        finite = _finite_differences(J, (x, W, b))
        cases.append(_Case(f"{shapes}, {label}", (x, W, b), dout, (x, W, b),
                           dict(zip(LINEAR.names, autograd_grads(J, x, W, b))),
                           None if finite is None else dict(zip(LINEAR.names, finite))))
    layer = _Layer("linear", linear_forward, linear_backward, exercise, picked,
                   lambda c: {"x": c.args[0], "W": c.args[1], "b": c.args[2], "dout": c.dout},
                   lambda inputs: (inputs["x"].clone(), inputs["W"].clone(), inputs["b"].clone()))
    _note_own_cache("linear", layer.grade(cases))


@common.graded
def check_relu_backward(relu_forward, relu_backward):
    """relu_backward(dout, x): the gradient with respect to x of a J with ∂J/∂out = dout, with slope 0 at x = 0, as
    torch.relu's autograd takes it."""
    cases = []
    for label, gen, n, dtype, device in common.cases(505):
        x = _relu_input(gen, n, dtype, device)
        dout = common.randn(gen, n, 6, dtype=dtype, device=device)
        cases.append(_elementwise(torch.relu, x, dout, x, label + ", x holds exact zeros"))
    layer = _Layer("relu", relu_forward, relu_backward, RELU, ("dx",),
                   lambda c: {"x": c.args[0], "dout": c.dout}, lambda inputs: inputs["x"].clone())
    _note_own_cache("relu", layer.grade(cases))


@common.graded
def check_sigmoid_backward(sigmoid_forward, sigmoid_backward):
    """sigmoid_backward(dout, out) with out = σ(x): the gradient with respect to x of a J with ∂J/∂out = dout."""
    cases = []
    for label, gen, n, dtype, device in common.cases(506):
        x = common.randn(gen, n, 6, dtype=dtype, device=device, scale=3.0)
        dout = common.randn(gen, n, 6, dtype=dtype, device=device)
        cases.append(_elementwise(torch.sigmoid, x, dout, torch.sigmoid(x), label))
    layer = _Layer("sigmoid", sigmoid_forward, sigmoid_backward, SIGMOID, ("dx",),
                   lambda c: {"x": c.args[0], "dout": c.dout}, lambda inputs: torch.sigmoid(inputs["x"]))
    _note_own_cache("sigmoid", layer.grade(cases))


def _elementwise(reference, x, dout, cache, label):
    def J(x_):
        return (reference(x_) * dout).sum()

    (expected,) = autograd_grads(J, x)
    finite = _finite_differences(J, (x,))
    return _Case(label, (x,), dout, cache, {"dx": expected}, None if finite is None else {"dx": finite[0]})


def _note_own_cache(layer, way):
    if way == "own cache":
        common.note(f"`{layer}_backward` is right for the cache your own `{layer}_forward` returns, but not for the "
                    f"lesson's cache, {CACHES[layer]}. That is fine here; the lesson's form is what other code expects.")


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
        if n > 1:  # a dead hidden unit: z1[:, 0] is exactly 0, where ReLU's slope is 0 (a mask z1 >= 0 shows there)
            params["W1"][:, 0] = 0.0
            params["b1"][0] = 0.0
        loss = two_layer_loss(X, y, params)
        grads = autograd_grads(lambda *p: two_layer_loss(X, y, dict(zip(LAYER_NAMES, p))),
                               *(params[k] for k in LAYER_NAMES))
        out.append((f"X {tuple(X.shape)}, hidden width {h}, {label}", X, y, params, loss, dict(zip(LAYER_NAMES, grads))))
    return out


def _judge_two_layer(fn, cases, how="full"):
    """Every case first (the loss and the dict's form at once), then the four gradients over all cases: the message
    from the most informative case, a formula mistake named where one fits every case and placed at its node inside
    the student's function, the backward pass drawn with it marked. ``how``: "full"; "words" (no picture, for a try
    whose first line only is shown); "verdict" (right or not, with no diagnosis: a try whose message nobody reads)."""
    runs = []
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
        runs.append((case, {"X": X, "y": y, **params}, {f"dJ/d{k}": grads[k] for k in LAYER_NAMES},
                     {f"dJ/d{k}": expected[k] for k in LAYER_NAMES}))

    def strict(label, got, expected):
        for name in TWO_LAYER.names:
            common.check_tensor(name, got[name], expected[name], label)

    if how == "verdict":
        for label, _, got, expected in runs:
            strict(label, got, expected)
        return
    grade(TWO_LAYER, runs, strict, draw=how == "full", where=how == "full")


@common.graded
def check_two_layer_loss_and_grads(two_layer_loss_and_grads):
    """two_layer_loss_and_grads(X, y, params) -> (loss, grads) with grads[name] = ∂J/∂params[name].

    First with the student's own layer functions. If that fails, again with the grader's layers in their place
    (rebound by name in the notebook): a pass then means this function is right and a layer is wrong, which costs
    that layer's cell, not this one; the note names the layer, and where the student's own layers go wrong in the
    network (each called with the right upstream gradient).
    """
    fn = two_layer_loss_and_grads
    cases = _two_layer_cases()
    own = _tried(_judge_two_layer, fn, cases, "verdict")  # its message is said another way (the note), if at all
    if own is None:
        return
    _sigmoid_inputs.clear()
    try:
        try:
            with common.reference_helpers(fn, REFERENCES):
                _judge_two_layer(fn, cases)
        except AssertionError as graded:  # this try decides the verdict: its comparisons stay in the report
            if getattr(graded, "kind", None) in ("not written", "not a function"):
                raise
            _again(graded, "(This was graded with the lesson's layer functions in place of yours, so the mistake is in "
                           "`two_layer_loss_and_grads` itself.)")
        culprits = []
        for layer, names in LAYERS.items():
            others = {name: REFERENCES[name] for name in REFERENCES if name not in names}
            with common.reference_helpers(fn, others):
                if _tried(_judge_two_layer, fn, cases, "verdict") is not None:
                    culprits.append(layer)
    finally:
        _sigmoid_inputs.clear()
    kind = getattr(own, "kind", None)
    if kind == "not written":
        failing = "it stops at a layer function that is not written yet"
    elif kind == "autograd":
        failing = "a layer function uses autograd"
    else:  # where the student's layers go wrong in the network; else the network's own failure, diagnosed
        failing = "" if kind in _FINAL_KINDS else _layers_in_the_network(fn, cases)
        if not failing:
            own = _tried(_judge_two_layer, fn, cases, "words") or own
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


class _HelperFailed(Exception):
    """A student's layer function that failed inside the network's trace (raised, used autograd, ...)."""


def _through_call_student(fn, name, case):
    """The student's function ``name`` for ``variants.layer_helpers``, every call through common.call_student."""
    def call(*args):
        try:
            return common.call_student(fn, name, *args, case=case)
        except AssertionError as failure:
            raise _HelperFailed(str(failure).splitlines()[0]) from None

    return call


def _layers_in_the_network(fn, cases):
    """What the note says after the network passed only with the grader's layer functions: the student's own layer
    functions in the network of the largest float64 case, each called with the right upstream gradient and the right
    forward values (gradlab.variants.locate): the first wrong gradient, from which function, its likely slip, and
    what follows from it. "" when they are right there (then the note quotes the network's own failure)."""
    case, X, y, params, _, _ = max(cases, key=lambda c: (c[1].dtype == torch.float64, c[1].numel()))
    namespace = getattr(fn, "__globals__", None)
    namespace = namespace if isinstance(namespace, dict) else {}  # the grader's replay has no notebook: calls replayed
    functions = {name: _through_call_student(namespace.get(name), name, case) for name in REFERENCES}
    traced = V.locate(NETWORK, {"X": X, "y": y, **params}, helpers=V.layer_helpers(NETWORK, **functions))
    first = next((node for node in traced.nodes if node.status == "wrong"), None)
    if first is None:
        return ""
    helper = _OPS.get(type(NETWORK.consumers(first.name)[0]))
    note = first.note.replace(f"the local backward raised {_HelperFailed.__name__}: ", "").rstrip(".")
    parts = [f"each given the right upstream gradient ({case}), the first wrong gradient is {first.label}, from "
             f"your `{helper}`: {note}."]
    follows = [node.label for node in traced.nodes if node.status == "consequence"]
    others = [node.label for node in traced.nodes if node.status == "also wrong"]
    if follows:
        parts.append(f"{', '.join(follows)} {'is' if len(follows) == 1 else 'are'} wrong only because of it.")
    if others:
        one = len(others) == 1
        parts.append(f"{', '.join(others)} {'is' if one else 'are'} wrong for a reason of {'its' if one else 'their'} "
                     "own as well.")
    return " ".join(parts).rstrip(".")
