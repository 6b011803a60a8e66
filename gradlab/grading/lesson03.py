"""Hidden checks of lesson 3 (backpropagation by hand through z = w·x + b → σ(z) → J).

J is the mean squared error over a batch: J = (1/N) Σ_i (σ(w·x_i + b) − y_i)², with x and y of shape (N,)
and w, b scalars. The forward cache is the tuple (x, y, z, s) with s = σ(z), as the lesson prescribes.
Every expected value comes from torch autograd on the same inputs.

Two exercises are composites: ``backward`` calls the student's four local derivatives, and ``train_by_hand``
calls the student's ``forward`` and ``backward``. Their checks run them with the grader's own versions of
those functions in place (``REFERENCES``, made with autograd), so that a slip in a helper costs the helper's
cell only; a note then says which of the student's own functions still needs fixing.
"""
import math

import torch

from gradlab import variants as V
from gradlab.check import autograd_grads, compare
from gradlab.grading import common
from gradlab.grading.lesson01 import formula_trace, judge

HELPERS = ("dJ_dsigma", "dsigma_dz", "dz_dw", "dz_db")
OWN_SECONDS = 5  # time limit for each call that runs the student's own helpers after a composite passed


def cost(x, y, w, b):
    """The reference computation: mean squared error of the sigmoid neuron over the batch."""
    return ((torch.sigmoid(w * x + b) - y) ** 2).mean()


# --------------------------------------------------------------------------- the computations, declared once
# for the diagnosis (gradlab.variants), in the lesson's notation: the chain z = w·x + b → s = σ(z) → J, and each
# local derivative on its own (a root that sums, no upstream factor).
NOTATION = {"s": "dJ/dσ", "z": "dJ/dz", "w": "dJ/dw", "b": "dJ/db"}
CHAIN = V.Graph(V.Scale("z", "w", "x", "b"), V.Sigmoid("s", "z"), V.MSE("J", "s", "y"), data=("x",),
                grad_notation=NOTATION)
BACKWARD = V.Exercise(CHAIN, ("w", "b"), name=("dJ/dw", "dJ/db"))
LOCAL = {
    "dJ_dsigma": V.Exercise(V.Graph(V.MSE("J", "s", "y"), grad_notation={"s": "dJ/dσ"}), "s", name="dJ/dσ"),
    "dsigma_dz": V.Exercise(V.Graph(V.Sigmoid("s", "z"), V.Sum("J", "s"), notation={"s": "σ(z)"},
                                    grad_notation={"s": None, "z": "dσ/dz"}), "z", name="dσ/dz"),
}
_LINK = V.Graph(V.Scale("z", "w", "x", "b"), V.Sum("J", "z"), grad_notation={"z": None, "w": "dz/dw", "b": "dz/db"})
LOCAL["dz_dw"] = V.Exercise(_LINK, "w", name="dz/dw")
LOCAL["dz_db"] = V.Exercise(_LINK, "b", name="dz/db")


def trace(x, y, w, b, grads, title=None):
    """The chain z = w·x + b → σ → J with the gradients in ``grads`` ({"σ": ∂J/∂σ, "z": ∂J/∂z, "w": ∂J/∂w,
    "b": ∂J/∂b}, numbers or tensors; any may be left out) marked against autograd's: right, the first wrong one
    (diagnosed), wrong only because of it. A notebook shows it as a picture; ``.explain()`` says it in words."""
    like = x if isinstance(x, torch.Tensor) else torch.tensor(0.0, dtype=torch.float64)
    given = {("s" if key == "σ" else key): (v if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=like.dtype))
             for key, v in grads.items()}
    traced = V.locate(CHAIN, {"x": x, "y": y, "w": w, "b": b}, grads=given)
    traced.title = title or "the chain, link by link: your gradients against autograd's"
    return traced


def _local_inputs(name, x=None, y=None, z=None, s=None):
    """The inputs of LOCAL[name]'s graph: w and b of the link z = w·x + b as one copy per observation."""
    if name == "dJ_dsigma":
        return {"s": s, "y": y}
    if name == "dsigma_dz":
        return {"z": z}
    return {"x": x, "w": torch.zeros_like(x), "b": torch.zeros_like(x)}


def _check_local(fn, name, label_of, seed, make):
    """A local derivative on every case, then one message (gradlab.variants names a formula mistake that fits all)."""
    exercise = LOCAL[name]
    what = exercise.names[0]
    runs = []
    for label, gen, n, dtype, device in common.cases(seed):
        args, expected = make(gen, n, dtype, device)
        got = common.call_student(fn, name, *args, case=label)
        runs.append((label, _local_inputs(name, **dict(zip(label_of, args))), got, expected))
    judge(exercise, runs, lambda label, got, expected: common.check_tensor(what, got, expected, label))


# --------------------------------------------------------------------------- the grader's own helpers
def _grad(fn, wrt, *others):
    """∂ fn(wrt, *others) / ∂wrt by autograd, wherever it is called from: also inside a student's
    ``torch.no_grad()`` or ``torch.inference_mode()`` block (inference tensors are cloned first)."""
    with torch.inference_mode(False), torch.enable_grad():
        others = [o.clone() if isinstance(o, torch.Tensor) else o for o in others]
        (grad,) = autograd_grads(lambda t: fn(t, *others), torch.as_tensor(wrt).clone())
    return grad


def reference_dJ_dsigma(s, y):
    return _grad(lambda s_, y_: ((s_ - y_) ** 2).mean(), s, y)


def reference_dsigma_dz(z):
    # σ(z_i) depends on z_i alone, so the gradient of the sum is the elementwise derivative.
    return _grad(lambda z_: torch.sigmoid(z_).sum(), z)


def reference_dz_dw(x):
    # One copy of w per observation (all 0 here; z is linear in w), so autograd gives ∂z_i/∂w one by one.
    return _grad(lambda w_, x_: (w_ * x_).sum(), torch.zeros_like(x), x)


def reference_dz_db(x):
    return _grad(lambda b_, x_: (x_ + b_).sum(), torch.zeros_like(x), x)


def reference_forward(x, y, w, b):
    z = w * x + b
    s = torch.sigmoid(z)
    return ((s - y) ** 2).mean(), (x, y, z, s)


def reference_backward(cache):
    x, y, z, s = cache
    # J as a function of a shift (dw, db) of the parameters, taken at (0, 0): z + dw·x + db = (w + dw)·x + (b + db).
    with torch.inference_mode(False), torch.enable_grad():
        x, y, z = (t.clone() for t in (x, y, z))
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        return autograd_grads(lambda dw, db: ((torch.sigmoid(z + dw * x + db) - y) ** 2).mean(), zero, zero)


REFERENCES = {
    "forward": reference_forward, "backward": reference_backward, "dJ_dsigma": reference_dJ_dsigma,
    "dsigma_dz": reference_dsigma_dz, "dz_dw": reference_dz_dw, "dz_db": reference_dz_db,
}


def _pair(result, name, what, case):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        common.fail(f"`{name}` should return a pair ({what}), but returned {_describe(result)} ({case}).",
                    kind="not a pair")
    return result


def _describe(value):
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__


def _agrees(got, expected):
    """Right values, a tensor, in the expected dtype and on its device (like check_tensor, but silent)."""
    return (isinstance(got, torch.Tensor) and compare("", got, expected).ok
            and got.dtype == expected.dtype and got.device == expected.device)


# --------------------------------------------------------------------------- forward and local derivatives
@common.graded
def check_forward(forward):
    """forward(x, y, w, b) -> (J, (x, y, z, s)): the cost and every intermediate (w, b numbers or 0-dim tensors)."""
    for label, gen, n, dtype, device in common.cases(301):
        x, y, w, b = common.neuron_batch(gen, n, dtype, device)
        if n == 7:  # the docstring allows numbers too, and train_by_hand passes numbers
            w, b = w.item(), b.item()
            label += ", w and b as Python floats"
        expected_J = cost(x, y, w, b)
        z = w * x + b
        J, cache = _pair(common.call_student(forward, "forward", x, y, w, b, case=label, by_hand=False),
                         "forward", "J, cache", label)
        common.check_tensor("J", J, expected_J, label)
        if not isinstance(cache, (tuple, list)) or len(cache) != 4:
            common.fail(f"the cache should be the tuple (x, y, z, s), but it is {_describe(cache)} ({label}).",
                        kind="cache")
        for what, got, expected in zip(("x", "y", "z", "s = σ(z)"), cache, (x, y, z, torch.sigmoid(z))):
            if got is None:
                common.fail(f"the cache holds None where {what} belongs ({label}): put the tensors themselves in it, "
                            "(x, y, z, s); backward needs every one of them.", kind="none", gradient=f"{what} in the cache")
            common.check_tensor(f"{what} in the cache", got, expected, label)


@common.graded
def check_dJ_dsigma(dJ_dsigma):
    """dJ_dsigma(s, y) -> (N,): ∂J/∂s_i for J = mean((s − y)²)."""
    def make(gen, n, dtype, device):
        s = torch.sigmoid(common.randn(gen, n, dtype=dtype, device=device, scale=2.0))
        y = common.labels(gen, n, dtype, device)
        return (s, y), reference_dJ_dsigma(s, y)
    _check_local(dJ_dsigma, "dJ_dsigma", ("s", "y"), 302, make)


@common.graded
def check_dsigma_dz(dsigma_dz):
    """dsigma_dz(z) -> (N,): σ'(z_i), elementwise."""
    def make(gen, n, dtype, device):
        z = common.randn(gen, n, dtype=dtype, device=device, scale=3.0)
        return (z,), reference_dsigma_dz(z)
    _check_local(dsigma_dz, "dsigma_dz", ("z",), 303, make)


@common.graded
def check_dz_dw(dz_dw):
    """dz_dw(x) -> (N,): ∂z_i/∂w for z_i = w·x_i + b."""
    def make(gen, n, dtype, device):
        x = common.randn(gen, n, dtype=dtype, device=device)
        return (x,), reference_dz_dw(x)
    _check_local(dz_dw, "dz_dw", ("x",), 304, make)


@common.graded
def check_dz_db(dz_db):
    """dz_db(x) -> (N,): ∂z_i/∂b for z_i = w·x_i + b (the same dtype and device as x)."""
    def make(gen, n, dtype, device):
        x = common.randn(gen, n, dtype=dtype, device=device)
        return (x,), reference_dz_db(x)
    _check_local(dz_db, "dz_db", ("x",), 305, make)


# --------------------------------------------------------------------------- backward (a composite)
_HELPERS_REPLACED = ("The check ran your backward with the grader's own dJ_dsigma, dsigma_dz, dz_dw and dz_db in "
                     "place of yours, so this mistake is in backward itself.")


@common.graded
def check_backward(backward):
    """backward((x, y, z, s)) -> (dJ/dw, dJ/db), both 0-dim, against autograd of the mean squared error.

    Graded with the reference local derivatives in place of the student's; then run once more with the
    student's own, and a note names any of them that still gives wrong values.
    """
    done, runs = [], []
    near = [(label, gen, n, None, None) for label, gen, n in common.near_minimum_cases(306)]
    with common.reference_helpers(backward, {name: REFERENCES[name] for name in HELPERS}):
        for label, gen, n, dtype, device in [*common.cases(306), *near]:
            if label.endswith(common.NEAR_MINIMUM):
                x, y, w, b = common.neuron_near_minimum(gen, n, lambda x, y, w, b: (torch.sigmoid(w * x + b) - y) ** 2 / n)
            else:
                x, y, w, b = common.neuron_batch(gen, n, dtype, device)
            z = w * x + b
            cache = (x, y, z, torch.sigmoid(z))
            expected = autograd_grads(lambda w_, b_: cost(x, y, w_, b_), w, b)
            got = common.call_student(backward, "backward", cache, case=label)
            try:
                _pair(got, "backward", "dJ/dw, dJ/db", label)
            except common.CheckFailure as failure:
                common.fail(f"{failure}\n  {_HELPERS_REPLACED}", kind=failure.kind, gradient=failure.gradient)
            runs.append((label, {"x": x, "y": y, "w": w, "b": b}, tuple(got), dict(zip(BACKWARD.names, expected))))
            done.append(_Done(label, (cache,), lambda got, expected=expected: _backward_agrees(got, expected),
                              dict(x=x, y=y, z=z, s=cache[3])))

    def strict(label, got, expected):
        for name, value in zip(BACKWARD.names, got):
            common.check_tensor(name, value, expected[name], label)

    try:  # every case first; a slip of the chain is named where it is (dJ/dz inside backward), its figure attached
        judge(BACKWARD, runs, strict, trace=lambda result, found: formula_trace(BACKWARD, result, found), where=True)
    except common.CheckFailure as failure:
        common.fail(f"{failure}\n  {_HELPERS_REPLACED}", kind=failure.kind, gradient=failure.gradient,
                    figure=failure.figure)
    _note_own_functions(backward, "backward", done, HELPERS)


def _backward_agrees(got, expected):
    return isinstance(got, (tuple, list)) and len(got) == 2 and all(map(_agrees, got, expected))


class _Done:
    """A case a composite passed with the grader's functions: its arguments, a test of a result, and the inputs
    on which the student's own helpers are compared with the references (x, y, z, s, and w, b where known)."""

    def __init__(self, label, args, agrees, probe):
        self.label, self.args, self.agrees, self.probe = label, args, agrees, probe


def _note_own_functions(fn, name, cases, replaced):
    """After a composite passed with the grader's functions: run it with the student's own, and if that goes
    wrong, name the student's functions that disagree with the references on the same inputs."""
    own = getattr(fn, "__globals__", None)
    own = own if isinstance(own, dict) else {}
    for case in cases:
        try:
            got = common.call_student(fn, name, *_fresh(case.args), case=case.label, seconds=OWN_SECONDS)
            if case.agrees(got):
                continue
            trouble = "gives a wrong result"
        except AssertionError as failure:
            trouble = _clause(failure)
        # the helpers are probed on the largest case first: one value (n = 1) cannot show what a formula did
        largest = max(cases, key=lambda c: c.probe["x"].numel())
        wrong = _wrong_functions(own, replaced, largest.label, **largest.probe) if largest is not case else []
        wrong = wrong or _wrong_functions(own, replaced, case.label, **case.probe)
        why = (f"because {_and(wrong)}" if wrong else
               "although each of them gives the right values on these inputs: check how it calls them")
        where = "" if f"({case.label}" in trouble else f" ({case.label})"  # a failure's clause names its case
        common.note(
            f"`{name}` passed with the grader's own {_and(replaced)} in place of yours. With your own it "
            f"{trouble}{where}, {why}. Fix {'those' if len(wrong) > 1 else 'that'} (each has its own test) "
            f"and `{name}` will be right in your notebook too."
        )
        return


def _clause(failure):
    """The first sentence of a failure of call_student, as a clause: 'raised ValueError: ...', 'used autograd ...'."""
    if getattr(failure, "kind", None) == "not a function":
        return "is missing or not a function"
    text = str(failure).split("\n")[0].split(". ")[0].rstrip(".")
    return text.split("` ", 1)[1] if text.startswith("`") and "` " in text else text


def _fresh(value):
    """A copy of the tensors in ``value`` (a tensor or a tuple of them and numbers): a student's function that
    changes its input in place must not change what the next call gets."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple):
        return tuple(_fresh(v) for v in value)
    return value


def _and(parts):
    parts = list(parts)
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _wrong_functions(own, names, label, x, y, z, s, w=None, b=None):
    """'your dJ_dsigma gives wrong values (every value has the wrong sign ...)' for each of the student's
    functions in ``names`` that disagrees with the grader's on these inputs."""
    cache = (x, y, z, s)
    calls = {"forward": (x, y, w, b), "backward": (cache,), "dJ_dsigma": (s, y), "dsigma_dz": (z,), "dz_dw": (x,),
             "dz_db": (x,)}
    found = []
    for name in names:
        args = calls[name]
        expected = REFERENCES[name](*args)
        try:
            got = common.call_student(own.get(name), name, *_fresh(args), case=label, seconds=OWN_SECONDS,
                                      by_hand=name != "forward")
        except AssertionError as failure:
            found.append(f"your {name} {_clause(failure)}")
            continue
        if name == "forward":
            if not (isinstance(got, (tuple, list)) and len(got) == 2 and _agrees(got[0], expected[0])
                    and isinstance(got[1], (tuple, list)) and len(got[1]) == 4 and all(map(_agrees, got[1], expected[1]))):
                found.append("your forward gives a wrong cost or cache")
        elif name == "backward":
            if not _backward_agrees(got, expected):
                found.append("your backward gives wrong gradients")
        elif not _agrees(got, expected):  # the helper's own computation names a formula mistake where one fits
            inputs = _local_inputs(name, x=x, y=y, z=z, s=s)
            result = compare(name, got, expected, computation=LOCAL.get(name), inputs=inputs)
            first = (result.diagnosis or "").split(". ")[0].rstrip(".")
            why = f" ({first})" if not result.ok and first else ""
            found.append(f"your {name} gives wrong values{why}")
    return found


# --------------------------------------------------------------------------- training (a composite)
def reference_training(x, y, w, b, lr, passes, x_for_w=None):
    """Gradient descent one observation at a time, in the order 0, 1, ..., N−1 (float64, CPU), each gradient from
    autograd.

    ``x_for_w`` replays a known mistake: ∂J/∂w computed with that x in every step instead of the current x_i.
    Returns (w, b) as Python floats. (Plain updates rather than torch.optim.SGD, which computes the same
    step but imports torch._dynamo on its first call: seconds of a grading run.)
    """
    w = torch.tensor(float(w), dtype=torch.float64)
    b = torch.tensor(float(b), dtype=torch.float64)
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    for _ in range(passes):
        for i in range(len(x)):
            # z has the value w·x_i + b; the x through which autograd sees w is x_i, or the stale x of the mistake
            link = x[i] if x_for_w is None else torch.as_tensor(float(x_for_w), dtype=torch.float64)

            def J_i(w_, b_):
                return (torch.sigmoid(w_ * link + w_.detach() * (x[i] - link) + b_) - y[i]) ** 2
            dw, db = autograd_grads(J_i, w, b)
            w, b = w - lr * dw, b - lr * db
    return w.item(), b.item()


def _as_float(value, name, what, case):
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            common.fail(f"`{name}` should return {what} as one number, not a tensor of shape {tuple(value.shape)} "
                        f"({case}).", kind="not a number")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        common.fail(f"`{name}` should return {what} as a number, but returned {type(value).__name__} ({case}).",
                    kind="not a number")
    try:
        value = float(value)
    except (TypeError, ValueError):
        common.fail(f"`{name}` should return {what} as a number, but returned {type(value).__name__} ({case}).",
                    kind="not a number")
    if not math.isfinite(value):
        common.fail(f"`{name}` returned {what} = {value} ({case}): the training diverged or divided by zero.",
                    kind="diverged")
    return value


_FORWARD_BACKWARD_REPLACED = ("The check ran your loop with the grader's own forward and backward in place of yours, "
                              "so this mistake is in train_by_hand itself.")


@common.graded
def check_train_by_hand(train_by_hand):
    """train_by_hand(x, y, w, b, lr, passes) -> (w, b): per-observation gradient descent with hand gradients.

    Graded with the reference forward, backward and local derivatives in place of the student's; then run once
    more with the student's own, and a note names any of them that still gives wrong values.
    """
    done = []
    with common.reference_helpers(train_by_hand, REFERENCES):
        for label, gen, n, dtype, device in common.cases(307, sizes=(1, 6, 15)):
            x, y, w0, b0 = common.neuron_batch(gen, n, dtype, device)
            x = x + 0.1 * torch.sign(x)  # both signs, none near 0 (a small x would hide a wrong ∂J/∂w)
            w0, b0, lr, passes = w0.item(), b0.item(), 0.5, 3
            case = f"{label}, {passes} passes, lr={lr}, start w={w0:.4f}, b={b0:.4f}"
            expected = reference_training(x, y, w0, b0, lr, passes)
            tol = 1e-4 if dtype == torch.float32 else 1e-8
            got = _training_result(common.call_student(train_by_hand, "train_by_hand", x, y, w0, b0, lr, passes,
                                                       case=case), case)
            if not _close(got, expected, tol):
                _training_failure(got, expected, x, y, w0, b0, lr, passes, tol, case)
            z = w0 * x + b0
            done.append(_Done(case, (x, y, w0, b0, lr, passes),
                              lambda got, expected=expected, tol=tol: _training_agrees(got, expected, tol),
                              dict(x=x, y=y, z=z, s=torch.sigmoid(z), w=w0, b=b0)))
    _note_own_functions(train_by_hand, "train_by_hand", done, ("forward", "backward") + HELPERS)


def _training_result(result, case):
    result = _pair(result, "train_by_hand", "w, b", case)
    return tuple(_as_float(v, "train_by_hand", what, case) for v, what in zip(result, ("w", "b")))


def _training_agrees(result, expected, tol):
    try:
        got = _training_result(result, "")
    except AssertionError:
        return False
    return _close(got, expected, tol)


def _training_failure(got, expected, x, y, w0, b0, lr, passes, tol, case):
    found = next(
        ((kind, advice) for kind, (advice, params) in _known_mistakes(x, y, w0, b0, lr, passes).items()
         if _close(got, params, tol)),
        ("training", "Run your loop and the lesson's PyTorch loop side by side on two observations and one pass, "
                     "and print w and b after every step: the first step where they differ holds the bug."),
    )
    common.fail(
        f"train_by_hand ended at w={got[0]:.6f}, b={got[1]:.6f}, but should end at "
        f"w={expected[0]:.6f}, b={expected[1]:.6f} ({case}).\n  {found[1]}\n  {_FORWARD_BACKWARD_REPLACED}",
        kind=found[0],
    )


def _close(got, expected, tol):
    return all(abs(g - e) <= tol * (1 + abs(e)) for g, e in zip(got, expected))


def _known_mistakes(x, y, w0, b0, lr, passes):
    """Final parameters of typical wrong loops: {kind: (the advice that fixes it, final parameters)}."""
    return {
        "stale x": ("It matches a loop that uses the first observation's x in every step's ∂J/∂w: "
                    "use the current observation x[i] inside the loop.",
                    reference_training(x, y, w0, b0, lr, passes, x_for_w=x[0])),
        "uphill": ("It matches a loop that steps uphill (θ + lr·gradient): subtract the gradient.",
                   reference_training(x, y, w0, b0, -lr, passes)),
        "one pass": ("It matches a loop that makes only one pass: repeat the pass over the observations `passes` "
                     "times.", reference_training(x, y, w0, b0, lr, 1)),
        "full batch": ("It matches full-batch gradient descent (one step per pass on the mean cost): "
                       "this loop updates w and b after every single observation.",
                       _full_batch(x, y, w0, b0, lr, passes)),
    }


def _full_batch(x, y, w0, b0, lr, passes):
    w, b = torch.tensor(w0, dtype=torch.float64), torch.tensor(b0, dtype=torch.float64)
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    for _ in range(passes):
        dw, db = autograd_grads(lambda w_, b_: cost(x, y, w_, b_), w, b)
        w, b = w - lr * dw, b - lr * db
    return w.item(), b.item()
