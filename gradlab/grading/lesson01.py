"""Hidden checks of lesson 1 (one neuron: the linear layer, the sigmoid, SSE and MSE, dSSE/dw by hand).

Inputs follow the lesson's shapes: X of shape (N, 1), labels y of shape (N,), predictions h of shape (N, 1),
scalar parameters w and b. Every expected value comes from torch's own functions (``F.linear``,
``torch.sigmoid``, ``F.mse_loss``) and from autograd, computed before the student's function is called;
none of the formulas the exercises ask for is written out here.

``check_scalar`` (a 0-dim answer) is shared with lesson 2; ``judge`` (a gradient graded on every case, then
diagnosed by gradlab.variants from the computation the check declares) with lessons 2 to 4.
"""
import torch
import torch.nn.functional as F

from gradlab import variants as V
from gradlab.check import autograd_grads, compare
from gradlab.grading import common, trial

#: The computation dsse_dw differentiates, declared once for the diagnosis (gradlab.variants): z = x·w, h = σ(z),
#: SSE = Σ (h − y)², in the lesson's notation.
DSSE_DW = V.Exercise(
    V.Graph(V.Scale("z", "w", "X"), V.Sigmoid("h", "z"), V.MSE("SSE", "h", "y", reduction="sum"), data=("X",),
            grad_notation={"h": "∂SSE/∂h", "z": "∂SSE/∂z", "w": "dSSE/dw"}),
    "w", name="dSSE/dw")


def _column(gen, n, dtype, device):
    """X of shape (n, 1), positive like mean_area."""
    return common.randn(gen, n, 1, dtype=dtype, device=device).abs() + 0.1


# --------------------------------------------------------------------------- the grader's own helpers
# A composite exercise (mse calls sse; dsse_dw may call sigmoid and linear) is run with these in place of the
# student's helpers, so a slip in a helper costs the helper's cell only (common.reference_helpers).
def reference_linear(X, w, b=0.0):
    """What ``linear`` returns for X of shape (N, 1) and numbers or 0-dim tensors w, b: F.linear of a 1×1 matrix."""
    W = torch.as_tensor(w, dtype=X.dtype, device=X.device).reshape(1, 1)
    return F.linear(X, W, torch.as_tensor(b, dtype=X.dtype, device=X.device).reshape(1))


def reference_sigmoid(z):
    return torch.sigmoid(z)


def reference_sse(h, y):
    """Σ (h_i − y_i)² over the N observations, whichever of (N,) and (N, 1) each comes in."""
    return F.mse_loss(h.reshape(-1), y.reshape(-1).to(h.dtype), reduction="sum")


def _reference_sse_trapped(h, y):
    """What (N, 1) minus (N,) gives when summed: every prediction against every label."""
    n = h.shape[0]
    return F.mse_loss(h.reshape(n, 1).expand(n, n), y.reshape(1, n).expand(n, n), reduction="sum")


# --------------------------------------------------------------------------- shared with lesson 2
def check_scalar(name, got, expected, case, **wording):
    """common.check_tensor for an answer that should be 0-dim (``wording``: compare's derivative= and batch=).

    A one-element tensor of another shape ((1,), (1, 1)) is told exactly that, not the generic shape message
    (which speaks of an (N, N) broadcasting trap that a single number cannot have fallen into).
    """
    if isinstance(got, torch.Tensor) and expected.dim() == 0 and got.dim() > 0 and got.numel() == 1:
        shape = tuple(got.shape)
        how = (f"`.sum()` or `.mean()` with no dim returns a 0-dim tensor; with dim=... or keepdim=True, or after "
               f"a matrix product, a size-1 dimension stays. End with .reshape(()) (or .squeeze()).")
        if compare(name, got.detach().reshape(()), expected).ok:
            common.fail(f"{name} has the right value but shape {shape}; it should be a 0-dim tensor, shape () "
                        f"({case}). {how}", kind="shape", gradient=name)
        common.check_tensor(name, got.detach().reshape(()), expected,
                            f"{case}; besides, its shape is {shape}, not (): {how}", **wording)
        return
    common.check_tensor(name, got, expected, case, **wording)


def scalar_values(name):
    """values_of for ``judge`` when the answer is a 0-dim tensor: a one-element tensor of another shape is compared
    by its value, and the message says its shape as check_scalar does."""
    def values_of(label, got):
        if isinstance(got, torch.Tensor) and got.dim() > 0 and got.numel() == 1:
            return (f"{label}; besides, its shape is {tuple(got.shape)}, not (): end with .reshape(())",
                    got.detach().reshape(()))
        return label, got
    return values_of


def formula_trace(exercise, result, diagnosis):
    """The backward pass of one case traced from the graded gradients alone, for a failure whose formula mistake was
    named over all the cases (``diagnosis``): the node where the mistake is (not given when it is inside the
    student's formula) and what follows from it. None without a named mistake: a drawing would only repeat the
    message."""
    if diagnosis is None:
        return None
    grads = {}
    for name, wrt in zip(exercise.names, exercise.wrt):
        got = result.got.get(name)
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(result.expected[name].shape):
            return None
        grads[wrt] = got
    trace = V.locate(exercise.graph, result.inputs, grads=grads, diagnosis=diagnosis)
    if trace.first is None or trace.diagnosis is None or not trace.diagnosis.named:
        return None
    trace.title = f"the backward pass of {', '.join(exercise.names)} ({result.label.split(';')[0]})"
    return trace


def _trap_hint(name, got, trapped, expected, case):
    """Name the broadcasting trap when ``got`` is what (N, 1) − (N,) → (N, N) gives instead of ``expected``
    (``trapped``: that value, or a tuple of the values the trap can give)."""
    if not isinstance(got, torch.Tensor) or got.numel() != 1 or not got.is_floating_point():
        return
    for value in trapped if isinstance(trapped, tuple) else (trapped,):
        if torch.allclose(value, expected, rtol=1e-3):  # N = 1: the trap changes nothing
            continue
        if torch.allclose(got.detach().reshape(()).to(value), value, rtol=1e-4):
            common.fail(
                f"{name} is wrong ({case}): it equals what the broadcasting trap gives. h has shape (N, 1) and y has "
                f"shape (N,), so h − y broadcasts to an (N, N) matrix of every prediction minus every label. "
                f"Subtract y.reshape(-1, 1) (shape (N, 1)) instead.",
                kind="broadcasting trap", gradient=name,
            )


# --------------------------------------------------------------------------- shared with lessons 2 to 4
PLAIN_KINDS = ("factor", "sign", "zeros")  # what compare alone names from the values, whatever the formula
STRUCTURAL_KINDS = ("none", "type", "shape", "transposed", "nan")


def judge(exercise, runs, strict, *, hint=None, values_of=None, trace=None, where=False, suffix=""):
    """Grade one or more gradients on every case first, then speak: the check's own rules where they apply, else the
    diagnosis of gradlab.variants from the computation the check declares (``exercise``).

    runs: [(label, inputs, got, expected)] in the order tried, each expected value computed before the call; with
      several gradients, got is what the student's function returned (a tuple) and expected a dict by name.
    strict(label, got, expected): the check's per-case verdict (common.check_tensor, check_scalar: values, type,
      shape, dtype, device), which raises. It judges every case when all values are right, and the first failing
      case when what it sees there needs no formula (None, a shape, NaN), or is the same plain kind (a constant
      factor, a sign, all zeros) on every failing case: then the message is the one the check always gave.
    hint(label, got, expected, inputs): the lesson's own recognised slips (the broadcasting trap), tried on every
      failing case in order before the diagnosis; it raises when it recognises one.
    values_of(label, got) -> (label, value): what the values are compared as (a one-element tensor as 0-dim).
    trace(result, diagnosis) -> a variants.Trace of the case the message comes from (diagnosis: the formula mistake
      named over all cases, or None), or None: drawn and attached to the failure (nbgrader's feedback shows it
      above the message); with ``where``, its first wrong gradient is also named in the message.
    suffix: lines added to the diagnosis's message (strict's messages say what they say).
    Otherwise the message comes from the most informative failing case (``variants.informative_case``), and names a
    formula mistake only when one fits every case tried.
    """
    results = []
    for label, inputs, got, expected in runs:
        shown, value = values_of(label, got) if values_of is not None else (label, got)
        expected = expected if isinstance(expected, dict) else {exercise.names[0]: expected}
        results.append(exercise.compare_case(shown, inputs, value, expected))
    failing = [(run, result) for run, result in zip(runs, results) if not result.ok]
    if not failing:
        for label, _, got, expected in runs:
            strict(label, got, expected)
        return results
    _numerical_estimate(exercise, failing)
    (label, _, got, expected), first = failing[0]
    name = next(n for n in exercise.names if not first.comparisons[n].ok)
    seen = first.comparisons[name]
    kinds = {result.comparisons[name].kind for _, result in failing if not result.comparisons[name].ok}
    if seen.status == "error" or seen.kind in STRUCTURAL_KINDS or (kinds == {seen.kind} and seen.kind in PLAIN_KINDS):
        strict(label, got, expected)
    if hint is not None:
        for (label, inputs, got, expected), _ in failing:
            hint(label, got, expected, inputs)
    message, kind, gradient = exercise.explain(results)
    case = V.informative_case(results)
    traced = None
    if trace is not None:
        found = exercise.diagnose(results) if kind in V.KINDS else None
        traced = trace(case, found if found is not None and found.named else None)
    line = where_line(traced) if where and traced is not None else ""
    if line:  # it says what follows from the first wrong gradient: the diagnosis's own line about it goes
        lines = [text for text in message.split("\n") if not text.endswith("wrong because of it.")]
        at = next((i for i, text in enumerate(lines) if text.startswith("  expected:")), len(lines))
        message = "\n".join(lines[:at] + [line] + lines[at:])
    fail_with_trace(message + suffix, kind, gradient, traced, case.label)


ESTIMATE_CLOSE = 1e-2  # a central difference near the minimum is off by 1e-6 to 4e-3 of the gradient


def _numerical_estimate(exercise, failing):
    """Fail as a numerical estimate when the only failing cases are those near the minimum, and only just.

    There the gradient is a millionth of the sum of its terms (common.near_minimum): a formula keeps its digits, as
    autograd does, while an estimate from nudging a parameter and differencing the loss loses them, because its error
    follows the size of the loss. Anything else a student gets wrong shows on the ordinary cases too."""
    if not all(run[0].endswith(common.NEAR_MINIMUM) for run, _ in failing):
        return
    (label, _, _, _), result = failing[0]
    for name in exercise.names:
        seen = result.comparisons[name]
        if seen.ok:
            continue
        got, expected = result.got.get(name), result.expected[name]
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape or not got.is_floating_point():
            return
        off = float(((got.detach().to(expected) - expected).abs().max() / expected.abs().max()))
        if not off <= ESTIMATE_CLOSE:
            return
        common.fail(
            f"{name} is right on every case but the one near the loss's minimum ({label}), where it is off by "
            f"{off:.1g} of its size: expected {float(expected.reshape(-1)[0]):.12g}, got "
            f"{float(got.detach().reshape(-1)[0]):.12g}. There the gradient is a millionth of the terms it sums: a "
            "formula keeps its digits (hand formulas and autograd agree to about 1e-10 of it), but a finite-difference "
            "estimate (nudge the parameter, difference the loss) loses them. This exercise asks for the gradient derived by "
            "hand: write the formula you derived.",
            kind="numerical", gradient=name)


def where_line(trace):
    """A line naming the first wrong gradient of a trace, what is wrong only because of it, and what is wrong for
    another reason as well ("" when the first wrong one is the only wrong one)."""
    first = next((n for n in trace.nodes if n.status == "wrong"), None)
    follows = [n.label for n in trace.nodes if n.status == "consequence"]
    others = [n.label for n in trace.nodes if n.status == "also wrong"]
    # "unclear": wrong, but whether because of the first one cannot be told from what came back
    unclear = [n.label for n in trace.nodes if n.status == "unclear"]
    if first is None or not (follows or others or unclear):
        return ""
    inside = " (a step inside your function)" if not first.known else ""
    parts = [f"  The first wrong gradient is {first.label.replace(' (not given)', '')}{inside}"]
    for names, what in ((follows, "wrong only because of it"), (others, "wrong for another reason as well"),
                        (unclear, "wrong too, maybe only because of it")):
        if names:
            parts.append(f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} {what}")
    return "; ".join(parts) + "."


def fail_with_trace(message, kind, gradient, trace=None, case=""):
    """common.fail, with the drawing of ``trace`` (a variants.Trace: the backward pass, the first wrong gradient
    marked) as the failure's figure. The drawing is made where someone sees it (the grader's replay, a local run),
    not in the student's kernel while it records: the verdict comes from the replay."""
    t = trial.current()
    figure = None
    if trace is not None and not trace.ok and not (t is not None and t.mode == "record"):
        figure = trace.draw().svg
    if t is not None:
        t.outcomes.append({"gradient": gradient, "status": "wrong", "kind": kind, "case": case})
    common.fail(message, kind=kind, gradient=gradient, figure=figure)


def helpers_note(fn, name, args, expected, helpers, case):
    """After a composite passed with the grader's helpers: call it once with the student's own helpers and,
    if the answer then differs, say so (a note, never a failure: that mistake is graded in the helper's cell)."""
    try:
        got = common.call_student(fn, name, *args, case=case)
        right = compare(name, got, expected).ok and isinstance(got, torch.Tensor) and got.shape == expected.shape
    except AssertionError:
        right = False
    if not right:
        common.note(
            f"`{name}` passed with the course's {' and '.join(f'`{h}`' for h in helpers)} in its place. With "
            f"your own it does not give the right answer ({case}): fix {'them' if len(helpers) > 1 else 'it'} "
            f"in {'their' if len(helpers) > 1 else 'its'} own exercise (its check says what is wrong)."
        )


# --------------------------------------------------------------------------- the checks
#: How a wrong value of linear or sigmoid is worded: no derivative, no batch (diagnose.wrong_values).
VALUES = {"derivative": False, "batch": False}
#: Exercise 2 says "use torch.exp, not torch.sigmoid": torch's own functions (aten ops) that compute σ for the student.
#: (SSE and MSE say no such thing: F.mse_loss with the shapes made to agree is a right answer there.)
SIGMOID_OPS = {
    "aten::sigmoid": "torch's own sigmoid (torch.sigmoid, F.sigmoid, torch.special.expit or nn.Sigmoid)",
    "aten::log_sigmoid_forward": "torch's own log-sigmoid (F.logsigmoid)",
    "aten::silu": "torch's own SiLU (F.silu, x·σ(x))",
    "aten::_softmax": "torch's own softmax (σ is a softmax over two values)",
    "aten::_log_softmax": "torch's own log-softmax (σ is a softmax over two values)",
}


@common.graded
def check_linear(linear):
    """linear(X, w, b=0.0) -> X·w + b, shape (N, 1); w and b numbers or 0-dim tensors, b left out meaning 0."""
    for label, gen, n, dtype, device in common.cases(101):
        X = _column(gen, n, dtype, device)
        w, b = common.scalar(gen, dtype, device, scale=2.0), common.scalar(gen, dtype, device)
        expected = reference_linear(X, w, b)
        common.check_tensor("z = X·w + b", common.call_student(linear, "linear", X, w, b, case=label), expected, label,
                            **VALUES)
        case = label + ", b left out"
        expected = reference_linear(X, w)
        common.check_tensor("z = X·w (b left out, so 0)", common.call_student(linear, "linear", X, w, case=case),
                            expected, case, **VALUES)
        case = label + ", w and b as Python numbers"
        w_, b_ = round(float(w), 3), round(float(b), 3)
        expected = reference_linear(X, w_, b_)
        common.check_tensor("z = X·w + b", common.call_student(linear, "linear", X, w_, b_, case=case), expected, case,
                            **VALUES)


@common.graded
def check_sigmoid(sigmoid):
    """sigmoid(z) -> 1 / (1 + e^(−z)) elementwise, any shape, against torch.sigmoid."""
    for label, gen, n, dtype, device in common.cases(102):
        for shape in ((n,), (n, 1), (), (2, n, 3)):
            z = common.randn(gen, *(shape or (1,)), dtype=dtype, device=device, scale=4.0).reshape(shape)
            case = f"{label}, shape {shape}"
            expected = torch.sigmoid(z)
            got = common.call_student(sigmoid, "sigmoid", z, case=case, refused=SIGMOID_OPS)
            common.check_tensor("σ(z)", got, expected, case, **VALUES)
        z = torch.tensor([-30.0, -5.0, -1.0, 0.0, 1.0, 5.0, 30.0], dtype=dtype, device=device)
        case = f"{label}, z = −30, −5, −1, 0, 1, 5, 30"
        expected = torch.sigmoid(z)
        got = common.call_student(sigmoid, "sigmoid", z, case=case, refused=SIGMOID_OPS)
        common.check_tensor("σ(z)", got, expected, case, **VALUES)


def _predictions_and_labels(gen, n, dtype, device):
    h = torch.sigmoid(common.randn(gen, n, 1, dtype=dtype, device=device, scale=2.0))
    return h, common.labels(gen, n, dtype, device)


@common.graded
def check_sse(sse):
    """sse(h, y) -> Σ_i (h_i − y_i)², a 0-dim tensor, with h of shape (N, 1) and y of shape (N,)."""
    for label, gen, n, dtype, device in common.cases(103):
        h, y = _predictions_and_labels(gen, n, dtype, device)
        expected, trapped = reference_sse(h, y), _reference_sse_trapped(h, y)
        got = common.call_student(sse, "sse", h, y, case=label)
        _trap_hint("SSE", got, trapped, expected, label)
        check_scalar("SSE", got, expected, label, derivative=False, batch=n)


@common.graded
def check_mse(mse):
    """mse(h, y) -> (1/N) Σ_i (h_i − y_i)², a 0-dim tensor, with h of shape (N, 1) and y of shape (N,).

    Run with the grader's ``sse`` in place of the student's (a slip in sse costs sse's cell only)."""
    helpers = {"sse": reference_sse}
    first = None
    for label, gen, n, dtype, device in common.cases(104):
        h, y = _predictions_and_labels(gen, n, dtype, device)
        expected, trap_sum = reference_sse(h, y) / n, _reference_sse_trapped(h, y)
        trapped = (trap_sum / (n * n), trap_sum / n)  # the mean over N·N pairs, or the trapped sum over N
        with common.reference_helpers(mse, helpers):
            got = common.call_student(mse, "mse", h, y, case=label)
        _trap_hint("MSE", got, trapped, expected, label)
        check_scalar("MSE", got, expected, label, derivative=False, batch=n)
        if first is None and n > 1:
            first = ((h, y), expected, label)
    helpers_note(mse, "mse", *first[:2], helpers, first[2])


@common.graded
def check_dsse_dw(dsse_dw):
    """dsse_dw(X, y, w) -> dSSE/dw for SSE(w) = Σ_i (σ(x_i·w) − y_i)², a 0-dim tensor, against autograd.

    Run with the grader's ``sigmoid`` and ``linear`` in place of the student's, in case dsse_dw calls them."""
    helpers = {"sigmoid": reference_sigmoid, "linear": reference_linear}
    runs, trapped = [], {}
    for label, gen, n, dtype, device in common.cases(105):
        X = _column(gen, n, dtype, device)
        y = common.labels(gen, n, dtype, device)
        w = common.scalar(gen, dtype, device)
        (expected,) = autograd_grads(lambda w_: reference_sse(torch.sigmoid(reference_linear(X, w_)), y), w)
        (trapped[label],) = autograd_grads(
            lambda w_: _reference_sse_trapped(torch.sigmoid(reference_linear(X, w_)), y), w)
        with common.reference_helpers(dsse_dw, helpers):
            got = common.call_student(dsse_dw, "dsse_dw", X, y, w, case=label)
        runs.append((label, {"X": X, "y": y, "w": w}, got, expected))
    for label, gen, n in common.near_minimum_cases(105):
        X, y = _column(gen, n, torch.float64, "cpu"), common.labels(gen, n, torch.float64, "cpu")
        (w,) = common.near_minimum(lambda w_: (torch.sigmoid(reference_linear(X, w_)).reshape(-1) - y) ** 2,
                                   [torch.zeros((), dtype=torch.float64)])
        (expected,) = autograd_grads(lambda w_: reference_sse(torch.sigmoid(reference_linear(X, w_)), y), w)
        trapped[label] = expected
        with common.reference_helpers(dsse_dw, helpers):
            got = common.call_student(dsse_dw, "dsse_dw", X, y, w, case=label)
        runs.append((label, {"X": X, "y": y, "w": w}, got, expected))

    def strict(label, got, expected):
        _trap_hint("dSSE/dw", got, trapped[label], expected, label)
        check_scalar("dSSE/dw", got, expected, label)

    judge(DSSE_DW, runs, strict, values_of=scalar_values("dSSE/dw"),
          hint=lambda label, got, expected, inputs: _trap_hint("dSSE/dw", got, trapped[label], expected, label),
          trace=lambda result, found: formula_trace(DSSE_DW, result, found))
    first = next(run for run in runs if run[1]["X"].shape[0] > 1)
    helpers_note(dsse_dw, "dsse_dw", tuple(first[1].values()), first[3], helpers, first[0])
